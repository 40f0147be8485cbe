"""Route selection: defaults, rules, strategies, availability, breakers, same-family only, least-bad."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping

import pytest

from catalog import loader
from catalog.schema import Catalog
from proto.routing import CLOSED, HALF_OPEN, OPEN, RouteHealth
from services.router import rules
from services.router.errors import NoAvailableRoute, UnknownModel
from services.router.policy import CatalogIndex, Decision, decide
from services.router.rules import EMPTY, CompiledRules, RequestFacts

CATALOG = """
as_of = "2025-10-01"
[providers.p1]
format = "openai"
base_url = "http://p1"
api_key_env = "P1"
[providers.p2]
format = "openai"
base_url = "http://p2"
api_key_env = "P2"
[providers.p3]
format = "openai"
base_url = "http://p3"
api_key_env = "P3"

[[models]]
id = "alpha"
family = "a"
context_window = 1000
  [[models.routes]]
  provider = "p1"
  upstream_model = "alpha"
  input_per_m = "1.00"
  output_per_m = "4.00"
  [[models.routes]]
  provider = "p2"
  upstream_model = "alpha"
  input_per_m = "0.50"
  output_per_m = "2.00"
  [[models.routes]]
  provider = "p3"
  upstream_model = "alpha-v1"
  input_per_m = "2.00"
  output_per_m = "8.00"

[[models]]
id = "alpha-mini"
family = "a"
context_window = 1000
  [[models.routes]]
  provider = "p1"
  upstream_model = "alpha-mini"
  input_per_m = "0.10"
  output_per_m = "0.40"

[[models]]
id = "beta"
family = "b"
context_window = 1000
  [[models.routes]]
  provider = "p2"
  upstream_model = "beta"
  input_per_m = "0.01"
  output_per_m = "0.01"
"""
ALL = frozenset({"p1", "p2", "p3"})


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return loader.parse(CATALOG)


@pytest.fixture(scope="module")
def index(catalog: Catalog) -> CatalogIndex:
    return CatalogIndex(catalog)


def rules_of(text: str, catalog: Catalog) -> CompiledRules:
    return CompiledRules(rules.parse(text, catalog=catalog))


def keys(decision: Decision) -> list[str]:
    return [candidate.key for candidate in decision.candidates]


def opened(route: str, retry_in_s: float = 10.0, open_until: float = 5000.0) -> RouteHealth:
    return RouteHealth(route=route, state=OPEN, retry_in_s=retry_in_s, open_until=open_until, opens=1)


def route(
    index: CatalogIndex, model: str = "alpha", *, compiled: CompiledRules = EMPTY,
    health: Mapping[str, RouteHealth] | None = None, available: frozenset[str] = ALL, **facts: object,
) -> Decision:
    return decide(RequestFacts(model=model, **facts), index, compiled, health or {}, available)  # type: ignore[arg-type]


def test_default_is_the_catalog_order_primary_first(index: CatalogIndex) -> None:
    decision = route(index)
    assert decision.route_reason == "default" and decision.requested_model == "alpha" and decision.model.id == "alpha"
    assert keys(decision) == ["p1/alpha", "p2/alpha", "p3/alpha-v1"]
    assert decision.first_choice.key == "p1/alpha" and decision.fallback_reason is None and not decision.skipped
    assert all(candidate.state == CLOSED and candidate.model.id == "alpha" for candidate in decision.candidates)


def test_uncallable_providers_are_left_out(index: CatalogIndex) -> None:
    decision = route(index, available=frozenset({"p2", "p3"}))
    assert keys(decision) == ["p2/alpha", "p3/alpha-v1"] and decision.first_choice.key == "p2/alpha"
    with pytest.raises(NoAvailableRoute, match="The model 'alpha' has no provider with credentials configured"):
        route(index, available=frozenset({"elsewhere"}))


def test_unknown_models_and_auto_without_a_default(index: CatalogIndex, catalog: Catalog) -> None:
    with pytest.raises(UnknownModel, match="The model 'gamma' does not exist"):
        route(index, "gamma")
    with pytest.raises(UnknownModel, match="'auto' needs a routing rule .* or a default_model"):
        route(index, "auto")
    decision = route(index, "auto", compiled=rules_of('default_model = "alpha-mini"\n', catalog))
    assert decision.route_reason == "default" and decision.model.id == "alpha-mini"
    assert decision.requested_model == "auto" and keys(decision) == ["p1/alpha-mini"]


def test_a_rule_names_the_model_and_the_reason(index: CatalogIndex, catalog: Catalog) -> None:
    compiled = rules_of('default_model = "alpha"\n[[rules]]\nname = "search"\n'
                        'match = { model = "auto", tags = { team = "search" } }\naction = { model = "alpha-mini" }\n',
                        catalog)
    decision = route(index, "auto", compiled=compiled, tags={"team": "search", "env": "prod"})
    assert (decision.route_reason, decision.model.id) == ("rule:search", "alpha-mini")
    assert keys(decision) == ["p1/alpha-mini"]
    assert route(index, "auto", compiled=compiled, tags={"team": "ads"}).route_reason == "default"


def test_an_open_breaker_is_skipped_and_the_trace_keeps_the_first_choice(index: CatalogIndex) -> None:
    decision = route(index, health={"p1/alpha": opened("p1/alpha")})
    assert keys(decision) == ["p2/alpha", "p3/alpha-v1"]
    assert decision.first_choice.key == "p1/alpha" and decision.first_choice.state == OPEN
    assert decision.fallback_reason == "breaker_open" and [c.key for c in decision.skipped] == ["p1/alpha"]
    assert not decision.last_resort


def test_a_cooled_down_breaker_is_probed_in_place_unless_our_probe_is_in_flight(index: CatalogIndex) -> None:
    health = {"p1/alpha": opened("p1/alpha", retry_in_s=2.0)}
    early = decide(RequestFacts(model="alpha"), index, EMPTY, health, ALL, elapsed_s=1.0)
    assert keys(early)[0] == "p2/alpha"
    later = decide(RequestFacts(model="alpha"), index, EMPTY, health, ALL, elapsed_s=2.0)
    assert keys(later)[0] == "p1/alpha" and later.candidates[0].state == HALF_OPEN and later.fallback_reason is None
    busy = decide(RequestFacts(model="alpha"), index, EMPTY, health, ALL, elapsed_s=2.0, probing={"p1/alpha"})
    assert keys(busy) == ["p2/alpha", "p3/alpha-v1"] and busy.fallback_reason == "breaker_open"
    half = {"p1/alpha": RouteHealth(route="p1/alpha", state=HALF_OPEN, open_until=5000.0)}
    assert route(index, health=half).candidates[0].state == HALF_OPEN


def test_every_route_open_gives_the_least_bad_one_never_another_family(index: CatalogIndex) -> None:
    health = {"p1/alpha": opened("p1/alpha", 30.0), "p2/alpha": opened("p2/alpha", 5.0),
              "p3/alpha-v1": opened("p3/alpha-v1", 12.0), "p1/alpha-mini": opened("p1/alpha-mini", 1.0)}
    decision = route(index, health=health)
    assert decision.last_resort and keys(decision) == ["p2/alpha"] and decision.candidates[0].state == OPEN
    assert decision.first_choice.key == "p1/alpha" and decision.fallback_reason == "breaker_open"
    assert {c.key for c in decision.skipped} == {"p1/alpha", "p3/alpha-v1"}  # never alpha-mini, never beta


def test_weighted_routes_follow_the_draw_and_cross_family_only_when_allowed(
        index: CatalogIndex, catalog: Catalog) -> None:
    compiled = rules_of('[[rules]]\nname = "split"\nmatch = { model = "alpha" }\naction = { routes = [\n'
                        '  { route = "p1/alpha", weight = 1 }, { route = "p2/alpha", weight = 9 }] }\n', catalog)
    draws = iter([0.9, 0.5])  # keys 0.9 ** 1 = 0.9 and 0.5 ** (1/9) ≈ 0.926: p2 first
    decision = decide(RequestFacts(model="alpha"), index, compiled, {}, ALL, rand=lambda: next(draws))
    assert decision.route_reason == "rule:split" and keys(decision) == ["p2/alpha", "p1/alpha"]
    counts = {"p1/alpha": 0, "p2/alpha": 0}
    for _ in range(2000):
        counts[keys(decide(RequestFacts(model="alpha"), index, compiled, {}, ALL))[0]] += 1
    assert 0.85 < counts["p2/alpha"] / 2000 < 0.95

    crossing = rules_of('[[rules]]\nname = "b-first"\naction = { routes = ["p2/beta", "p1/alpha"], '
                        'cross_family = true }\n', catalog)
    decision = route(index, "alpha", compiled=crossing)
    assert keys(decision) == ["p2/beta", "p1/alpha"] and decision.model.id == "beta"
    assert [c.model.family for c in decision.candidates] == ["b", "a"]


def test_listed_routes_unknown_to_this_catalog_are_skipped(index: CatalogIndex) -> None:
    from proto.routing import Action, Rule, RuleSet

    compiled = CompiledRules(RuleSet(rules=(Rule("r", Action(routes=("p9/new", "p3/alpha-v1"))),)))
    assert keys(route(index, compiled=compiled)) == ["p3/alpha-v1"]
    empty = CompiledRules(RuleSet(rules=(Rule("r", Action(routes=("p9/new",))),)))
    with pytest.raises(NoAvailableRoute):
        route(index, compiled=empty)


def test_cheapest_sorts_by_blended_price(index: CatalogIndex, catalog: Catalog) -> None:
    compiled = rules_of('[[rules]]\nname = "cheap"\nmatch = { model = "alpha" }\naction = { strategy = "cheapest" }\n'
                        '[[rules]]\nname = "cheap-any"\nmatch = { model = "auto" }\n'
                        'action = { strategy = "cheapest", among = ["alpha", "alpha-mini"] }\n', catalog)
    assert keys(route(index, compiled=compiled)) == ["p2/alpha", "p1/alpha", "p3/alpha-v1"]
    decision = route(index, "auto", compiled=compiled)
    assert keys(decision)[0] == "p1/alpha-mini" and decision.model.id == "alpha-mini"
    assert decision.route_reason == "rule:cheap-any"


def test_fastest_sorts_by_latency_unmeasured_routes_first(index: CatalogIndex, catalog: Catalog) -> None:
    compiled = rules_of('[[rules]]\nname = "fast"\naction = { strategy = "fastest" }\n', catalog)
    health = {"p1/alpha": RouteHealth("p1/alpha", latency_ms=900.0),
              "p2/alpha": RouteHealth("p2/alpha", latency_ms=300.0),
              "p3/alpha-v1": RouteHealth("p3/alpha-v1", latency_ms=450.0)}
    assert keys(route(index, compiled=compiled, health=health)) == ["p2/alpha", "p3/alpha-v1", "p1/alpha"]
    health["p3/alpha-v1"] = RouteHealth("p3/alpha-v1")
    assert keys(route(index, compiled=compiled, health=health)) == ["p3/alpha-v1", "p2/alpha", "p1/alpha"]


def test_balanced_weighs_price_and_latency(index: CatalogIndex, catalog: Catalog) -> None:
    compiled = rules_of('[[rules]]\nname = "mix"\naction = { strategy = "balanced" }\n', catalog)
    # blended prices: p1 1.75, p2 0.875, p3 3.5; p2 cheapest but 3x slower than p1. Scores (½ price ratio +
    # ½ latency ratio): p1 ≈ 0.99 + 0.5, p2 = 0.5 + 1.5, p3 ≈ 1.98 + 0.5
    health = {"p1/alpha": RouteHealth("p1/alpha", latency_ms=100.0),
              "p2/alpha": RouteHealth("p2/alpha", latency_ms=300.0),
              "p3/alpha-v1": RouteHealth("p3/alpha-v1", latency_ms=100.0)}
    assert keys(route(index, compiled=compiled, health=health)) == ["p1/alpha", "p2/alpha", "p3/alpha-v1"]
    health["p2/alpha"] = RouteHealth("p2/alpha", latency_ms=150.0)
    assert keys(route(index, compiled=compiled, health=health))[0] == "p2/alpha"


def test_deciding_is_far_below_the_routing_budget(index: CatalogIndex, catalog: Catalog) -> None:
    text = "".join(f'[[rules]]\nname = "r{i}"\nmatch = {{ model = "alpha*", api_key_id = "key_{i}", '
                   f'tags = {{ team = "t{i}" }} }}\naction = {{ model = "alpha-mini" }}\n' for i in range(20))
    compiled = rules_of(text, catalog)
    health = {"p1/alpha": opened("p1/alpha"), "p2/alpha": RouteHealth("p2/alpha", latency_ms=100.0)}
    facts = RequestFacts(model="alpha", api_key_id="key_x", tags={"team": "t3"}, prompt_tokens=500)
    timings = []
    for _ in range(3000):
        started = time.perf_counter()
        decide(facts, index, compiled, health, ALL)
        timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.0001  # 100 µs, against a 300 µs budget
