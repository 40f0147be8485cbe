"""Route selection (pure): rules, strategies and breaker health → the ordered routes to try for one request."""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Container, Mapping

import msgspec

from catalog.schema import Catalog, Model, Route
from proto.routing import CLOSED, HALF_OPEN, OPEN, RouteHealth, Rule
from services.router.errors import NoAvailableRoute, UnknownModel
from services.router.rules import AUTO, CompiledRules, RequestFacts, is_weighted, route_weights

# How decide() orders routes. Before health: a model's routes in catalog order (the first is its
# primary); a rule's `routes` in the listed order, or shuffled by weight (each request draws; heavier
# routes come first more often); a strategy's routes sorted by
#   cheapest  blended price per 1M tokens, (3 × input + output) / 4 (a 3:1 input:output mix);
#   fastest   latency EWMA (TTFT when streamed); routes with no recent sample first, so they get measured;
#   balanced  ½ × price / best price + ½ × latency / best latency (no recent sample counts as the best).
# Ties keep catalog order. Then routes whose provider is not callable are dropped, routes outside the
# first choice's family are dropped unless the rule set `cross_family`, and routes whose breaker is open
# (or half-open with this proxy's probe still in flight) are moved out; when that leaves nothing, the one
# closest to half-open is returned alone (`last_resort`) rather than no route at all.

BREAKER_OPEN = "breaker_open"
_PRICE_EPSILON = 0.01  # USD per 1M tokens, so free routes compare sanely in `balanced`


class CatalogIndex:
    """The catalog keyed for routing: models by id, and the models offering each route key."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.models: dict[str, Model] = {model.id: model for model in catalog.models}
        self.routes: dict[str, list[tuple[Model, Route]]] = {}
        for model in catalog.models:
            for route in model.routes:
                self.routes.setdefault(route.key, []).append((model, route))


class Candidate(msgspec.Struct, frozen=True):
    """One route to try, with the model it serves (for pricing and the trace) and its breaker state."""

    model: Model
    route: Route
    state: str = CLOSED  # closed | half_open (this request is the probe) | open (only when last_resort)

    @property
    def key(self) -> str:
        return self.route.key


class Decision(msgspec.Struct, frozen=True):
    """Where one request goes: try `candidates` in order (bounded by the proxy's retry budget)."""

    requested_model: str
    route_reason: str  # "default" | "rule:<name>"
    model: Model  # the first choice's model (each candidate carries its own)
    first_choice: Candidate  # the preferred callable route before health: the trace's `route`
    candidates: tuple[Candidate, ...]  # never empty
    skipped: tuple[Candidate, ...] = ()  # routes left out because their breaker is open
    last_resort: bool = False  # every route was open: `candidates` is the one closest to half-open

    @property
    def fallback_reason(self) -> str | None:
        """`breaker_open` when the first route tried is not the first choice, else None."""
        return BREAKER_OPEN if self.candidates[0].key != self.first_choice.key else None


def effective_state(health: RouteHealth | None, elapsed_s: float, probing: bool) -> str:
    """A route's state `elapsed_s` after its snapshot; a half-open route with our probe in flight counts as open."""
    if health is None or health.state == CLOSED:
        return CLOSED
    if health.state == OPEN and health.retry_in_s > elapsed_s:
        return OPEN
    return OPEN if probing else HALF_OPEN


def decide(facts: RequestFacts, index: CatalogIndex, rules: CompiledRules, health: Mapping[str, RouteHealth],
           available: Container[str], *, elapsed_s: float = 0.0, probing: Collection[str] = (),
           rand: Callable[[], float] = random.random) -> Decision:
    """Choose the routes for one request. `health` is the snapshot's routes by key, `elapsed_s` the time since
    it was published, `probing` the half-open routes whose probe this process already sent, `available` the
    callable providers. Raises UnknownModel or NoAvailableRoute."""
    rule = rules.first_match(facts)
    preferred = _preferences(facts, index, rules, rule, health, rand)
    callable_ = [pair for pair in preferred if pair[1].provider in available]
    if not callable_:
        name = preferred[0][0].id if preferred else facts.model
        raise NoAvailableRoute(f"The model '{name}' has no provider with credentials configured.")
    first_model, first_route = callable_[0]
    if rule is None or not rule.action.cross_family:
        callable_ = [pair for pair in callable_ if pair[0].family == first_model.family]
    usable: list[Candidate] = []
    skipped: list[Candidate] = []
    for model, route in callable_:
        key = route.key
        state = effective_state(health.get(key), elapsed_s, key in probing)
        (skipped if state == OPEN else usable).append(Candidate(model, route, state))
    last_resort = not usable
    if last_resort:
        best = min(skipped, key=lambda c: _retry_in(health.get(c.key), elapsed_s))
        usable, skipped = [best], [c for c in skipped if c is not best]
    first = usable[0] if usable[0].key == first_route.key else next(
        (c for c in skipped if c.key == first_route.key), Candidate(first_model, first_route, OPEN))
    return Decision(requested_model=facts.model, route_reason="default" if rule is None else f"rule:{rule.name}",
                    model=first_model, first_choice=first, candidates=tuple(usable), skipped=tuple(skipped),
                    last_resort=last_resort)


def _retry_in(health: RouteHealth | None, elapsed_s: float) -> float:
    if health is None or health.state != OPEN:
        return 0.0
    return max(health.retry_in_s - elapsed_s, 0.0)


def _resolve(model_id: str, rules: CompiledRules, index: CatalogIndex) -> Model:
    if model_id == AUTO:
        if rules.default_model is None:
            raise UnknownModel("The model 'auto' needs a routing rule that matches this request or a "
                               "default_model in the rules file; neither applies.")
        model_id = rules.default_model
    model = index.models.get(model_id)
    if model is None:
        raise UnknownModel(f"The model '{model_id}' does not exist or you do not have access to it.")
    return model


def _preferences(facts: RequestFacts, index: CatalogIndex, rules: CompiledRules, rule: Rule | None,
                 health: Mapping[str, RouteHealth], rand: Callable[[], float]) -> list[tuple[Model, Route]]:
    """(model, route) pairs in order of preference, before availability and health."""
    if rule is None:
        model = _resolve(facts.model, rules, index)
        return [(model, route) for route in model.routes]
    action = rule.action
    if action.model is not None:
        model = _resolve(action.model, rules, index)
        return [(model, route) for route in model.routes]
    if action.routes is not None:
        requested = index.models.get(facts.model)
        pairs: list[tuple[tuple[Model, Route], float]] = []
        for key, weight in route_weights(action):
            offers = index.routes.get(key)
            if offers:  # a route this proxy's catalog lacks is skipped
                pick = next((offer for offer in offers if offer[0] is requested), offers[0])
                pairs.append((pick, weight))
        if is_weighted(action):  # weighted random order (Efraimidis-Spirakis): key = u ** (1 / weight)
            pairs.sort(key=lambda item: rand() ** (1.0 / item[1]), reverse=True)
        return [pair for pair, _ in pairs]
    models = [index.models[m] for m in action.among if m in index.models] if action.among else \
        [_resolve(facts.model, rules, index)]
    options = [(model, route) for model in models for route in model.routes]
    return _by_strategy(action.strategy or "cheapest", options, health)


def blended_price(route: Route) -> float:
    """USD per 1M tokens at a 3:1 input:output mix."""
    return float(3 * route.input_per_m + route.output_per_m) / 4


def _by_strategy(strategy: str, options: list[tuple[Model, Route]],
                 health: Mapping[str, RouteHealth]) -> list[tuple[Model, Route]]:
    def latency(route: Route) -> float | None:
        known = health.get(route.key)
        return known.latency_ms if known is not None else None

    if not options:
        return options
    if strategy == "cheapest":
        return sorted(options, key=lambda pair: blended_price(pair[1]))
    if strategy == "fastest":
        return sorted(options, key=lambda pair: -1.0 if (ms := latency(pair[1])) is None else ms)
    best_price = min(blended_price(route) for _, route in options) + _PRICE_EPSILON
    latencies = [ms for _, route in options if (ms := latency(route)) is not None]
    best_latency = max(min(latencies), 1e-3) if latencies else 1.0

    def score(pair: tuple[Model, Route]) -> float:
        ms = latency(pair[1])
        latency_term = 1.0 if ms is None else max(ms, 1e-3) / best_latency
        return 0.5 * (blended_price(pair[1]) + _PRICE_EPSILON) / best_price + 0.5 * latency_term

    return sorted(options, key=score)
