"""Prompt-cache pricing (issue 17): reads, 5-minute writes and 1-hour writes each priced by the catalog, exactly."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from catalog import loader, pricing
from catalog.schema import Route
from proto import codec
from proto.trace import TraceEvent
from services.proxy import openai_wire as wire
from services.proxy.adapters import anthropic, bedrock

CATALOG = loader.load()


def claude_route(model_id: str, provider: str) -> Route:
    model = CATALOG.model(model_id)
    assert model is not None
    return next(r for r in model.routes if r.provider == provider)


def test_anthropic_sonnet_4_5_worked_example() -> None:
    """Anthropic's pricing page for Claude Sonnet 4.5: input $3, 5m writes $3.75 (1.25x), 1h writes $6 (2x),
    cache hits $0.30 (0.1x), output $15 per MTok. 1,000 fresh input + 10,000 5m writes + 2,000 1h writes +
    50,000 reads + 500 output = 0.003 + 0.0375 + 0.012 + 0.015 + 0.0075 = $0.075."""
    route = claude_route("claude-sonnet-4.5", "anthropic")
    assert (route.input_per_m, route.cache_write_per_m, route.cache_write_1h_per_m, route.cached_input_per_m) == (
        Decimal("3.00"), Decimal("3.75"), Decimal("6.00"), Decimal("0.30"))
    cost = pricing.cost_usd(route, prompt_tokens=63_000, completion_tokens=500, cached_tokens=50_000,
                            cache_write_tokens=10_000, cache_write_1h_tokens=2_000)
    assert cost == Decimal("0.075")


def test_anthropic_multipliers_hold_for_every_claude_route() -> None:
    for model in CATALOG.models:
        for route in model.routes:
            if route.provider not in ("anthropic", "bedrock") or model.family != "claude":
                continue
            assert route.cache_write_per_m == route.input_per_m * Decimal("1.25"), route.key
            assert route.cached_input_per_m == route.input_per_m * Decimal("0.1"), route.key
            if route.provider == "anthropic":
                assert route.cache_write_1h_per_m == route.input_per_m * 2, route.key


def test_bedrock_haiku_4_5_worked_example() -> None:
    """Bedrock (global profile) Claude Haiku 4.5: input $1, cache write $1.25, cache read $0.10, output $5.
    A second call of a cached 20,000-token prefix with 300 fresh input and 400 output:
    20,000 x 0.10 + 300 x 1 + 400 x 5 = 4,300 micro-dollars; the first call wrote it: 20,000 x 1.25 + 300 + 2,000."""
    route = claude_route("claude-haiku-4.5", "bedrock")
    second = pricing.cost_usd(route, prompt_tokens=20_300, completion_tokens=400, cached_tokens=20_000)
    first = pricing.cost_usd(route, prompt_tokens=20_300, completion_tokens=400, cache_write_tokens=20_000)
    assert second == Decimal("0.0043")
    assert first == Decimal("0.0273")


def test_a_1h_write_without_a_posted_price_is_priced_as_input() -> None:
    route = claude_route("claude-haiku-4.5", "bedrock")
    assert route.cache_write_1h_per_m is None
    assert pricing.cost_usd(route, prompt_tokens=1000, completion_tokens=0, cache_write_1h_tokens=1000) == \
        Decimal("0.001")


def test_translated_anthropic_usage_carries_cache_writes_to_the_price() -> None:
    """The chat path: Anthropic's usage → OpenAI usage (with Routeur's write buckets) → wire.Usage → cost."""
    usage = anthropic.usage_from_anthropic({
        "input_tokens": 1000, "output_tokens": 500, "cache_read_input_tokens": 50_000,
        "cache_creation_input_tokens": 12_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 10_000, "ephemeral_1h_input_tokens": 2_000}})
    parsed = msgspec.json.decode(codec.encode({"usage": usage.to_openai()}), type=wire._UsageEnvelope).usage
    assert parsed is not None
    assert (parsed.prompt_tokens, parsed.cached_tokens, parsed.cache_write_tokens, parsed.cache_write_1h_tokens) \
        == (63_000, 50_000, 10_000, 2_000)
    route = claude_route("claude-sonnet-4.5", "anthropic")
    assert pricing.cost_usd(route, prompt_tokens=parsed.prompt_tokens, completion_tokens=parsed.completion_tokens,
                            cached_tokens=parsed.cached_tokens, cache_write_tokens=parsed.cache_write_tokens,
                            cache_write_1h_tokens=parsed.cache_write_1h_tokens) == Decimal("0.075")


def test_translated_bedrock_usage_carries_cache_writes() -> None:
    usage = bedrock.usage_to_openai({"inputTokens": 300, "outputTokens": 400, "totalTokens": 40_700,
                                     "cacheReadInputTokens": 20_000, "cacheWriteInputTokens": 20_000})
    parsed = msgspec.json.decode(codec.encode({"usage": usage}), type=wire._UsageEnvelope).usage
    assert parsed is not None
    assert (parsed.prompt_tokens, parsed.cached_tokens, parsed.cache_write_tokens) == (40_300, 20_000, 20_000)


def test_yesterdays_trace_decodes_with_zero_cache_writes() -> None:
    old = (b'{"request_id":"r","timestamp_ms":1,"organization_id":"o","api_key_id":"k","endpoint":"/v1/messages",'
           b'"requested_model":"m","model":"m","provider":"anthropic","upstream_model":"u","route_reason":"default",'
           b'"status_code":200,"stream":false,"latency_ms":1.0,"upstream_latency_ms":1.0,"cached_tokens":5}')
    event = msgspec.json.decode(old, type=TraceEvent)
    assert (event.cached_tokens, event.cache_write_tokens, event.cache_write_1h_tokens) == (5, 0, 0)
