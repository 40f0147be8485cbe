"""Rules file: parsing, precise validation errors, the tags header, and first-match-wins matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog import loader
from catalog.schema import Catalog
from proto.routing import RuleSet, WeightedRoute
from services.router import rules
from services.router.errors import RulesError
from services.router.rules import CompiledRules, RequestFacts, parse_tags, request_facts

EXAMPLE = Path(__file__).resolve().parents[2] / "catalog" / "rules.example.toml"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return loader.load()


def compiled(text: str, catalog: Catalog) -> CompiledRules:
    return CompiledRules(rules.parse(text, catalog=catalog))


def test_the_example_file_is_valid(catalog: Catalog) -> None:
    ruleset, digest = rules.load(EXAMPLE, catalog=catalog)
    assert ruleset.default_model == "gpt-4o-mini" and len(digest) == 16
    assert [rule.name for rule in ruleset.rules] == ["search-team-auto", "long-prompts-cheapest", "acme-prefers-azure",
                                                     "split-gpt-4o", "vision-fastest", "batch-any-family"]
    split = ruleset.rules[3].action.routes
    assert split == (WeightedRoute("openai/gpt-4o", 3), WeightedRoute("azure/gpt-4o", 1))
    batch = ruleset.rules[5]
    assert batch.match.tags == {"env": "batch"} and batch.action.cross_family


def test_an_empty_file_means_no_rules(catalog: Catalog) -> None:
    assert rules.parse("# nothing yet\n", catalog=catalog) == RuleSet()


@pytest.mark.parametrize(("header", "expected"), [
    ("team=search,env=prod", {"team": "search", "env": "prod"}),
    (" team = search , env=prod ,", {"team": "search", "env": "prod"}),
    ("team=search,garbage,=x,flag=", {"team": "search", "flag": ""}),
    ("", {}),
    (None, {}),
])
def test_parse_tags(header: str | None, expected: dict[str, str]) -> None:
    assert parse_tags(header) == expected


def test_request_facts_from_an_openai_body() -> None:
    body = {"model": "auto", "tools": [{"type": "function", "function": {"name": "f"}}], "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": "image_url", "image_url": {"url": "data:,"}}]}]}
    facts = request_facts(body, prompt_tokens=120, api_key_id="key_1", organization_id="org_1",
                          tags_header="team=search")
    assert facts == RequestFacts(model="auto", api_key_id="key_1", organization_id="org_1", tags={"team": "search"},
                                 prompt_tokens=120, has_tools=True, has_images=True)
    plain = request_facts({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, prompt_tokens=1)
    assert not plain.has_tools and not plain.has_images and plain.tags == {}


MATCHING = """
[[rules]]
name = "search"
match = { model = "auto", tags = { team = "search" } }
action = { model = "gpt-4.1-mini" }

[[rules]]
name = "gpt-family-keys"
match = { model = "gpt-*", api_key_id = ["key_a", "key_b"] }
action = { model = "gpt-4o" }

[[rules]]
name = "org"
match = { organization_id = "org_acme", has_tools = true }
action = { model = "gpt-4.1" }

[[rules]]
name = "big"
match = { min_prompt_tokens = 1000, max_prompt_tokens = 2000 }
action = { model = "gpt-4.1-nano" }

[[rules]]
name = "images"
match = { has_images = true }
action = { model = "gpt-4o" }

[[rules]]
name = "catch-all-auto"
match = { model = "auto" }
action = { model = "gpt-4o-mini" }
"""


@pytest.mark.parametrize(("facts", "expected"), [
    (RequestFacts(model="auto", tags={"team": "search", "env": "prod"}), "search"),
    (RequestFacts(model="auto", tags={"team": "ads"}), "catch-all-auto"),
    (RequestFacts(model="gpt-4o-mini", api_key_id="key_b"), "gpt-family-keys"),
    (RequestFacts(model="claude-sonnet-4", api_key_id="key_b"), None),
    (RequestFacts(model="claude-sonnet-4", organization_id="org_acme", has_tools=True), "org"),
    (RequestFacts(model="claude-sonnet-4", organization_id="org_acme"), None),
    (RequestFacts(model="x", prompt_tokens=999), None),
    (RequestFacts(model="x", prompt_tokens=1000), "big"),
    (RequestFacts(model="x", prompt_tokens=2000), "big"),
    (RequestFacts(model="x", prompt_tokens=2001), None),
    (RequestFacts(model="x", has_images=True), "images"),
    (RequestFacts(model="auto", has_images=True), "images"),
])
def test_first_matching_rule_wins(catalog: Catalog, facts: RequestFacts, expected: str | None) -> None:
    rule = compiled(MATCHING, catalog).first_match(facts)
    assert (rule.name if rule else None) == expected


def test_an_empty_match_matches_everything_and_exact_models_are_not_globs(catalog: Catalog) -> None:
    text = '[[rules]]\nname = "exact"\nmatch = { model = "gpt-4o" }\naction = { model = "gpt-4o" }\n' \
           '[[rules]]\nname = "all"\naction = { model = "gpt-4o-mini" }\n'
    matcher = compiled(text, catalog)
    assert matcher.first_match(RequestFacts(model="gpt-4o")).name == "exact"  # type: ignore[union-attr]
    assert matcher.first_match(RequestFacts(model="gpt-4o-mini")).name == "all"  # type: ignore[union-attr]


RULE = '[[rules]]\nname = "r"\n'


@pytest.mark.parametrize(("text", "error"), [
    ("a = 1\nb = = 2\n", r"^r\.toml: not valid TOML: Invalid value \(at line 2, column 5\)$"),
    ('colour = "blue"\n', r"^r\.toml:1: unknown top-level key 'colour'"),
    ('default_model = "gpt-9"\n', r"^r\.toml:1: default_model: unknown model 'gpt-9'"),
    ('\n\ndefault_model = "text-embedding-3-small"\n', r"^r\.toml:3: default_model: .* is a embedding model"),
    ('rules = "none"\n', r"^r\.toml:1: `rules` must be an array of tables"),
    (RULE + 'match = { model = "auto" }\n', r"^r\.toml:1: rules\[0\] \('r'\): action: is required$"),
    (RULE + 'match = { modle = "auto" }\naction = { model = "gpt-4o" }\n',
     r"^r\.toml:3: rules\[0\] \('r'\): match\.modle: unknown field \(expected one of: model, api_key_id"),
    (RULE + 'match = { min_prompt_tokens = "10" }\naction = { model = "gpt-4o" }\n',
     r"^r\.toml:3: rules\[0\] \('r'\): match\.min_prompt_tokens: Expected `int \| null`, got `str`$"),
    (RULE + 'match = { min_prompt_tokens = 10, max_prompt_tokens = 5 }\naction = { model = "gpt-4o" }\n',
     r"^r\.toml:3: rules\[0\] \('r'\): match\.max_prompt_tokens: must be ≥ min_prompt_tokens$"),
    (RULE + 'action = { model = "gpt-4o", strategy = "cheapest" }\n',
     r"^r\.toml:3: rules\[0\] \('r'\): action: set exactly one of `model`, `routes` or `strategy` "
     r"\(found model, strategy\)$"),
    (RULE + 'action = { model = "gpt-9" }\n', r"^r\.toml:3: rules\[0\] \('r'\): action\.model: unknown model 'gpt-9'"),
    (RULE + 'action = { routes = ["openai/gpt-4o", "openai/gpt-99"] }\n',
     r"^r\.toml:3: rules\[0\] \('r'\): action\.routes\[1\]: unknown route 'openai/gpt-99'"),
    (RULE + 'action = { routes = [{ route = "openai/gpt-4o", weight = 0 }] }\n',
     r"action\.routes\[0\]\.weight: must be positive$"),
    (RULE + 'action = { routes = [{ route = "openai/gpt-4o", wieght = 2 }] }\n',
     r"action\.routes\[0\]\.wieght: unknown field \(expected one of: route, weight\)$"),
    (RULE + 'action = { routes = ["openai/gpt-4o", "openai/gpt-4o"] }\n', r"listed twice$"),
    (RULE + 'action = { strategy = "random" }\n', r"action\.strategy: must be one of cheapest, fastest, balanced"),
    (RULE + 'action = { model = "gpt-4o", among = ["gpt-4o"] }\n', r"action\.among: only goes with `strategy`$"),
    (RULE + 'action = { strategy = "cheapest", among = ["gpt-4o", "nope"] }\n',
     r"action\.among\[1\]: unknown model 'nope'"),
    (RULE + 'action = { strategy = "cheapest", among = ["gpt-4o", "claude-sonnet-4"] }\n',
     r"^r\.toml:3: rules\[0\] \('r'\): action: spans model families claude, gpt: set cross_family = true"),
    (RULE + 'action = { routes = ["openai/gpt-4o", "anthropic/claude-sonnet-4-20250514"] }\n',
     r"spans model families claude, gpt"),
    ('[[rules]]\nname = "has space"\naction = { model = "gpt-4o" }\n',
     r"^r\.toml:2: rules\[0\] \('has space'\): name:"),
    (RULE + 'action = { model = "gpt-4o" }\n' + RULE + '\n# the second one\naction = { model = "gpt-4o" }\n',
     r"^r\.toml:5: rules\[1\] \('r'\): name: duplicate rule name 'r'$"),
    (RULE + 'action = { model = "gpt-4o" }\n\n[[rules]]\nname = "third"\n  [rules.match]\n  model = "auto"\n'
     '  has_tools = "yes"\n  [rules.action]\n  model = "gpt-4o"\n',
     r"^r\.toml:9: rules\[1\] \('third'\): match\.has_tools: Expected `bool \| null`, got `str`$"),
])
def test_bad_files_are_rejected_naming_line_rule_and_field(catalog: Catalog, text: str, error: str) -> None:
    with pytest.raises(RulesError, match=error):
        rules.parse(text, catalog=catalog, source="r.toml")


def test_cross_family_is_allowed_when_the_rule_says_so(catalog: Catalog) -> None:
    ruleset = rules.parse(RULE + 'action = { routes = ["anthropic/claude-sonnet-4-20250514", "openai/gpt-4o"], '
                                 'cross_family = true }\n', catalog=catalog)
    assert ruleset.rules[0].action.cross_family


def test_a_missing_file_is_a_rules_error(tmp_path: Path, catalog: Catalog) -> None:
    with pytest.raises(RulesError, match=r"missing\.toml: cannot read the rules file"):
        rules.load(tmp_path / "missing.toml", catalog=catalog)
