"""Routing rules: parse and validate the TOML file with precise errors, and match a request's facts."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from catalog.schema import Catalog, Model
from proto.routing import Action, Match, Rule, RuleSet, WeightedRoute
from services.router.errors import RulesError

AUTO = "auto"
STRATEGIES = ("cheapest", "fastest", "balanced")
TAGS_HEADER = "Routeur-Tags"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
_MAX_TAGS = 32
_MAX_TAG_CHARS = 128


class RequestFacts(msgspec.Struct, frozen=True):
    """What rules can match on, gathered by the proxy for one request."""

    model: str
    api_key_id: str = ""
    organization_id: str = ""
    tags: dict[str, str] = {}
    prompt_tokens: int = 0
    has_tools: bool = False
    has_images: bool = False


def parse_tags(header: str | None) -> dict[str, str]:
    """`team=search, env=prod` → {"team": "search", "env": "prod"}; items without `=` are ignored."""
    tags: dict[str, str] = {}
    if not header:
        return tags
    for item in header.split(",")[:_MAX_TAGS]:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if sep and key and len(key) <= _MAX_TAG_CHARS and len(value) <= _MAX_TAG_CHARS:
            tags[key] = value
    return tags


def request_facts(body: Mapping[str, Any], *, prompt_tokens: int, api_key_id: str = "", organization_id: str = "",
                  tags_header: str | None = None) -> RequestFacts:
    """Facts of an OpenAI chat (or embeddings) body; `prompt_tokens` is the proxy's estimate."""
    has_images = False
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list) and any(isinstance(part, dict) and part.get("type") in _IMAGE_PARTS
                                                 for part in content):
                has_images = True
                break
    return RequestFacts(model=str(body.get("model", "")), api_key_id=api_key_id, organization_id=organization_id,
                        tags=parse_tags(tags_header), prompt_tokens=prompt_tokens,
                        has_tools=bool(body.get("tools") or body.get("functions")), has_images=has_images)


# ------------------------------------------------------------------------------------------ loading


def digest(text: str) -> str:
    """A short content hash identifying a rules file version."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load(path: Path, *, catalog: Catalog) -> tuple[RuleSet, str]:
    """Read and validate the rules file; returns the rules and the file's digest."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise RulesError(f"{path}: cannot read the rules file ({exc})") from None
    return parse(text, catalog=catalog, source=str(path)), digest(text)


def parse(text: str, *, catalog: Catalog, source: str = "<rules>") -> RuleSet:
    """Parse and validate rules TOML against `catalog`; RulesError names the file, line, rule and field."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML: {exc}") from None
    lines = _Lines(text)
    for key in raw:
        if key not in ("default_model", "rules"):
            raise RulesError(f"{source}:{lines.top(key)}: unknown top-level key {key!r} "
                             "(expected `default_model = \"…\"` and [[rules]] tables)")
    raw_rules = raw.get("rules", [])
    if not isinstance(raw_rules, list) or not all(isinstance(item, dict) for item in raw_rules):
        raise RulesError(f"{source}:{lines.top('rules')}: `rules` must be an array of tables: write [[rules]]")
    models = {model.id: model for model in catalog.models}
    routes = {route.key: model for model in catalog.models for route in model.routes}
    rules: list[Rule] = []
    for index, item in enumerate(raw_rules):
        name = item.get("name")
        where = f"rules[{index}]" + (f" ({name!r})" if isinstance(name, str) else "")
        try:
            rule = msgspec.convert(item, Rule)
            field, problem = _check(rule, models, routes, {r.name for r in rules})
        except msgspec.ValidationError as exc:
            field, problem = _split(str(exc))
        if problem:
            raise RulesError(f"{source}:{lines.field(index, field)}: {where}: {field}: {problem}")
        rules.append(rule)
    default_model = raw.get("default_model")
    if default_model is not None:
        where = f"{source}:{lines.top('default_model')}: default_model"
        if not isinstance(default_model, str):
            raise RulesError(f"{where}: must be a model id string")
        model = models.get(default_model)
        if model is None:
            raise RulesError(f"{where}: unknown model {default_model!r} (not in the catalog)")
        if model.kind != "chat":
            raise RulesError(f"{where}: {default_model!r} is a {model.kind} model; `auto` needs a chat model")
    return RuleSet(default_model=default_model, rules=tuple(rules))


def _check(rule: Rule, models: Mapping[str, Model], routes: Mapping[str, Model],
           taken: set[str]) -> tuple[str, str]:
    """("field", "problem") for the first semantic problem of a rule, or ("", "")."""
    if not _NAME.fullmatch(rule.name):
        return "name", "use 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
    if rule.name in taken:
        return "name", f"duplicate rule name {rule.name!r}"
    match, action = rule.match, rule.action
    if match.model is not None and not match.model:
        return "match.model", "must not be empty"
    for field in ("min_prompt_tokens", "max_prompt_tokens"):
        value = getattr(match, field)
        if value is not None and value < 0:
            return f"match.{field}", "must not be negative"
    if match.min_prompt_tokens is not None and match.max_prompt_tokens is not None \
            and match.min_prompt_tokens > match.max_prompt_tokens:
        return "match.max_prompt_tokens", "must be ≥ min_prompt_tokens"
    if match.tags is not None and any(not key or not value for key, value in match.tags.items()):
        return "match.tags", "tag names and values must not be empty"
    return _check_action(action, models, routes)


def _check_action(action: Action, models: Mapping[str, Model], routes: Mapping[str, Model]) -> tuple[str, str]:
    chosen = [field for field in ("model", "routes", "strategy") if getattr(action, field) is not None]
    if len(chosen) != 1:
        return "action", "set exactly one of `model`, `routes` or `strategy`" + (
            f" (found {', '.join(chosen)})" if chosen else "")
    if action.among is not None and action.strategy is None:
        return "action.among", "only goes with `strategy`"
    referenced: list[Model] = []
    if action.model is not None:
        if action.model not in models:
            return "action.model", f"unknown model {action.model!r} (not in the catalog)"
        referenced.append(models[action.model])
    if action.routes is not None:
        if not action.routes:
            return "action.routes", "needs at least one route"
        seen: set[str] = set()
        for position, entry in enumerate(action.routes):
            key, weight = (entry, 1.0) if isinstance(entry, str) else (entry.route, entry.weight)
            if key not in routes:
                return f"action.routes[{position}]", f"unknown route {key!r} (write provider/upstream_model " \
                                                     "as listed in the catalog)"
            if weight <= 0:
                return f"action.routes[{position}].weight", "must be positive"
            if key in seen:
                return f"action.routes[{position}]", f"route {key!r} is listed twice"
            seen.add(key)
            referenced.append(routes[key])
    if action.strategy is not None:
        if action.strategy not in STRATEGIES:
            return "action.strategy", f"must be one of {', '.join(STRATEGIES)}, not {action.strategy!r}"
        if action.among is not None and not action.among:
            return "action.among", "needs at least one model (or leave it out: the requested model)"
        for position, model_id in enumerate(action.among or ()):
            if model_id not in models:
                return f"action.among[{position}]", f"unknown model {model_id!r} (not in the catalog)"
            referenced.append(models[model_id])
    families = sorted({model.family for model in referenced})
    if len(families) > 1 and not action.cross_family:
        return "action", f"spans model families {', '.join(families)}: set cross_family = true to allow " \
                         "routing (and fallback) across them"
    return "", ""


def _split(message: str) -> tuple[str, str]:
    """msgspec's "Expected `int`, got `str` - at `$.match.x`" → ("match.x", "Expected `int`, got `str`")."""
    problem, _, path = message.partition(" - at `$")
    field = path.rstrip("`").lstrip(".")
    named = re.search(r"(unknown|missing required) field `([^`]+)`", problem)
    if named is None:
        return field or "rule", problem
    container = _FIELDS.get(re.sub(r"\[\d+\]", "[]", field), ())
    field = f"{field}.{named.group(2)}" if field else named.group(2)
    if named.group(1) == "missing required":
        return field, "is required"
    return field, "unknown field" + (f" (expected one of: {', '.join(container)})" if container else "")


_FIELDS = {"": Rule.__struct_fields__, "match": Match.__struct_fields__, "action": Action.__struct_fields__,
           "action.routes[]": WeightedRoute.__struct_fields__}


class _Lines:
    """Line numbers of top-level keys and of keys inside each [[rules]] table, for error messages."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._starts = [number for number, line in enumerate(self._lines, 1)
                        if re.match(r"\s*\[\[\s*rules\s*\]\]", line)]

    def top(self, key: str) -> int:
        end = self._starts[0] - 1 if self._starts else len(self._lines)
        return self._find(key, 1, end) or 1

    def field(self, index: int, field: str) -> int:
        if index >= len(self._starts):
            return self.top("rules")
        start = self._starts[index]
        end = self._starts[index + 1] - 1 if index + 1 < len(self._starts) else len(self._lines)
        leaf = re.sub(r"\[\d+\]", "", field).rsplit(".", 1)[-1]
        return self._find(leaf, start, end) or start

    def _find(self, key: str, start: int, end: int) -> int | None:
        pattern = re.compile(rf"(^|[{{,\s]){re.escape(key)}\s*=")
        for number in range(start, end + 1):
            if pattern.search(self._lines[number - 1].split("#", 1)[0]):
                return number
        return None


# ------------------------------------------------------------------------------------------ matching


def _one_of(value: str | tuple[str, ...] | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset((value,) if isinstance(value, str) else value)


def _model_test(pattern: str | None) -> Callable[[str], bool] | None:
    if pattern is None:
        return None
    if any(char in pattern for char in "*?["):
        return re.compile(fnmatch.translate(pattern)).match  # type: ignore[return-value]
    return pattern.__eq__


class _Matcher:
    """One rule's conditions, compiled once (globs to regexes, id lists to sets)."""

    __slots__ = ("rule", "_model", "_keys", "_orgs", "_tags", "_min", "_max", "_tools", "_images")

    def __init__(self, rule: Rule) -> None:
        match: Match = rule.match
        self.rule = rule
        self._model = _model_test(match.model)
        self._keys = _one_of(match.api_key_id)
        self._orgs = _one_of(match.organization_id)
        self._tags = tuple((match.tags or {}).items())
        self._min, self._max = match.min_prompt_tokens, match.max_prompt_tokens
        self._tools, self._images = match.has_tools, match.has_images

    def __call__(self, facts: RequestFacts) -> bool:
        return ((self._model is None or bool(self._model(facts.model)))
                and (self._keys is None or facts.api_key_id in self._keys)
                and (self._orgs is None or facts.organization_id in self._orgs)
                and all(facts.tags.get(key) == value for key, value in self._tags)
                and (self._min is None or facts.prompt_tokens >= self._min)
                and (self._max is None or facts.prompt_tokens <= self._max)
                and (self._tools is None or facts.has_tools == self._tools)
                and (self._images is None or facts.has_images == self._images))


class CompiledRules:
    """A RuleSet ready to match: `first_match` returns the first rule whose conditions all hold."""

    def __init__(self, ruleset: RuleSet, *, digest: str = "") -> None:
        self.ruleset = ruleset
        self.digest = digest
        self.default_model = ruleset.default_model
        self._matchers = tuple(_Matcher(rule) for rule in ruleset.rules)

    def first_match(self, facts: RequestFacts) -> Rule | None:
        for matcher in self._matchers:
            if matcher(facts):
                return matcher.rule
        return None


EMPTY = CompiledRules(RuleSet())


def route_weights(action: Action) -> tuple[tuple[str, float], ...]:
    """The action's routes as (key, weight) pairs; plain strings weigh 1."""
    return tuple((entry, 1.0) if isinstance(entry, str) else (entry.route, entry.weight)
                 for entry in action.routes or ())


def is_weighted(action: Action) -> bool:
    return any(isinstance(entry, WeightedRoute) for entry in action.routes or ())
