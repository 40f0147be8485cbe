"""Catalog loading and exact Decimal pricing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from catalog import loader, pricing
from catalog.schema import Route


def route(**overrides: object) -> Route:
    values: dict[str, object] = {"provider": "openai", "upstream_model": "m", "input_per_m": Decimal("0.15"),
                                 "output_per_m": Decimal("0.60")}
    values.update(overrides)
    return Route(**values)  # type: ignore[arg-type]


def test_seed_example_cost_is_exact() -> None:
    assert pricing.cost_usd(route(), prompt_tokens=13, completion_tokens=7) == Decimal("0.00000615")


def test_cached_and_reasoning_tokens_use_their_own_prices() -> None:
    r = route(cached_input_per_m=Decimal("0.075"), reasoning_per_m=Decimal("2.00"))
    cost = pricing.cost_usd(r, prompt_tokens=1000, completion_tokens=500, cached_tokens=400, reasoning_tokens=100)
    assert cost == (600 * Decimal("0.15") + 400 * Decimal("0.075") + 400 * Decimal("0.60") + 100 * Decimal("2")) / 10**6


def test_cached_tokens_without_a_cached_price_pay_full_input() -> None:
    assert pricing.cost_usd(route(), prompt_tokens=100, completion_tokens=0, cached_tokens=100) == Decimal("0.000015")


def test_sum_of_many_costs_stays_exact() -> None:
    total = sum((pricing.cost_usd(route(), prompt_tokens=13, completion_tokens=7) for _ in range(100_000)), Decimal(0))
    assert total == Decimal("0.615")


def test_bundled_catalog_loads_and_every_route_has_a_known_provider() -> None:
    catalog = loader.load()
    assert catalog.model("gpt-4o-mini") is not None
    for model in catalog.models:
        assert model.routes and all(r.provider in catalog.providers for r in model.routes)


GOOD = """
as_of = "2026-11-01"
[providers.p]
format = "openai"
base_url = "https://x"
api_key_env = "P_KEY"
[[models]]
id = "m1"
family = "f"
context_window = 1000
  [[models.routes]]
  provider = "p"
  upstream_model = "u"
  input_per_m = "1"
  output_per_m = "2"
"""


def test_valid_text_parses() -> None:
    assert loader.parse(GOOD).models[0].routes[0].input_per_m == Decimal(1)


@pytest.mark.parametrize(("mutation", "message"), [
    (('provider = "p"', 'provider = "nope"'), r"models\[0\] \('m1'\): route names unknown provider 'nope'"),
    (('input_per_m = "1"', 'input_per_m = "-1"'), "must not be negative"),
    (('context_window = 1000', 'context_window = "big"'), r"Expected `int`"),
    (('family = "f"', 'family = "f"\ncolour = "red"'), "unknown field `colour`"),
    (('[[models]]', '[[models]'), "Expected"),
    (('context_window = 1000', 'context_window = 1000\ncapabilities = { sampling = "some" }'),
     "capabilities.sampling must be"),
    (('context_window = 1000', 'context_window = 1000\ncapabilities = { thinking_off = false }'), "need their sources"),
    (('context_window = 1000', 'context_window = 1000\ncapabilities = { top_k = false }'), "unknown field `top_k`"),
])
def test_malformed_catalog_is_rejected_with_a_precise_message(mutation: tuple[str, str], message: str) -> None:
    with pytest.raises(loader.CatalogError, match=message):
        loader.parse(GOOD.replace(*mutation, 1), source="models.toml")


def test_capabilities_parse_with_their_sources_and_are_found_by_upstream_id() -> None:
    text = GOOD.replace("context_window = 1000", 'context_window = 1000\ncapabilities = { sampling = '
                        '"temperature_or_top_p", sources = ["https://example.com/models"] }', 1)
    catalog = loader.parse(text)
    model = catalog.model_for_upstream("p", "u")
    assert model is not None and model.capabilities.sampling == "temperature_or_top_p"
    assert catalog.model_for_upstream("p", "m1") is None and catalog.model_for_upstream("q", "u") is None
