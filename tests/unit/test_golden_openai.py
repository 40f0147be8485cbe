"""OpenAI's own published samples (tests/fixtures/providers/openai/, sources and licences in SOURCES.md)
replayed through Routeur's OpenAI parsing: our reading of their bytes must equal what the sources state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.common.settings import Secret
from services.emulator.openai_validate import OpenAIValidator
from services.proxy import openai_wire as wire
from services.proxy.adapters.openai import AzureDialect, OpenAIDialect
from services.proxy.providers import Target
from tests.openapi import SPEC_PATH

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures/providers/openai"

# (prompt, completion, total, cached, reasoning) as each sample states it.
RESPONSE_USAGE = {
    "spec_chat_default": (19, 10, 29, 0, 0),
    "spec_chat_image_input": (1117, 46, 1163, 0, 0),
    "spec_chat_functions": (82, 17, 99, 0, 0),
    "spec_chat_logprobs": (9, 9, 18, 0, 0),
    "sdk_chat_tool_call": (76, 24, 100, 0, 0),  # the SDK's snapshot: prompt_tokens_details=None, reasoning 0
}
# What openai-python's snapshots say each recorded stream means: head, text or tool call, finish, usage.
STREAMS: dict[str, dict[str, Any]] = {
    "sdk_stream_structured_output": {
        "head": ("chatcmpl-ABfw1e5abtU8OwGr15vOreYVb2MiF", 1727346169, "gpt-4o-2024-08-06"),
        "content": '{"city":"San Francisco","temperature":61,"units":"f"}', "arguments": "",
        "finish": "stop", "usage": (79, 14, 93, 0, 0)},
    "sdk_stream_tool_call": {
        "head": ("chatcmpl-ABfw8AOXnoa2kzy11vVTSjuQhHCQr", 1727346176, "gpt-4o-2024-08-06"),
        "content": "", "arguments": '{"city":"Edinburgh","country":"UK","units":"c"}',
        "finish": "tool_calls", "usage": (76, 24, 100, 0, 0)},
    "sdk_stream_max_tokens": {
        "head": ("chatcmpl-ABfw3Oqj8RD0z6aJiiX37oTjV2HFh", 1727346171, "gpt-4o-2024-08-06"),
        "content": '{"', "arguments": "", "finish": "length", "usage": (79, 1, 80, 0, 0)},
}
TARGET = Target("openai", "https://api.openai.com/v1", Secret("sk-golden"), "openai", emulated=False)


def usage_tuple(usage: wire.Usage | None) -> tuple[int, int, int, int, int]:
    assert usage is not None
    return (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cached_tokens,
            usage.reasoning_tokens)


@pytest.mark.parametrize("name", sorted(RESPONSE_USAGE))
def test_response_usage_is_what_the_sample_states(name: str) -> None:
    raw = (SAMPLES / f"{name}.response.json").read_bytes()
    assert OpenAIDialect().response(raw, model="gpt-4o") == raw, "OpenAI answers pass through byte for byte"
    assert usage_tuple(wire.response_usage(raw)) == RESPONSE_USAGE[name]


@pytest.mark.parametrize("name", sorted(p.name.removesuffix(".request.json") for p in SAMPLES.glob("*.request.json")))
def test_documented_requests_pass_our_checks_and_reach_upstream_unchanged(name: str) -> None:
    raw = (SAMPLES / f"{name}.request.json").read_bytes()
    body = wire.parse_body(raw)
    assert OpenAIValidator(SPEC_PATH).chat(body) is None, "the emulator accepts what OpenAI documents"
    call = OpenAIDialect().request(TARGET, body, "gpt-4o")
    assert call.url == "https://api.openai.com/v1/chat/completions"
    assert call.headers["Authorization"] == "Bearer sk-golden" and "api-key" not in call.headers
    assert json.loads(call.body) == {**json.loads(raw), "model": "gpt-4o"}
    azure = AzureDialect().request(
        Target("azure", "https://r.openai.azure.com", Secret("az"), "azure", emulated=False, api_version="2024-10-21"),
        body, "my deployment")
    assert azure.url == ("https://r.openai.azure.com/openai/deployments/my%20deployment/chat/completions"
                         "?api-version=2024-10-21")
    assert azure.headers["api-key"] == "az" and "Authorization" not in azure.headers


def _replay(raw: bytes, piece: int) -> list[bytes]:
    """The stream's events as the proxy's decoder yields them when the bytes arrive `piece` at a time."""
    decoder = OpenAIDialect().stream(model="gpt-4o")
    buffer = bytearray()
    events: list[bytes] = []
    for start in range(0, len(raw), piece):
        buffer += raw[start:start + piece]
        events += decoder.events(buffer)
    events += decoder.close()
    assert not buffer, "every byte belongs to an event"
    return events


@pytest.mark.parametrize("piece", [1, 7, 100, 1 << 20])
@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_parse_is_what_the_sdk_snapshot_states(name: str, piece: int) -> None:
    raw = (SAMPLES / f"{name}.sse").read_bytes()
    expected = STREAMS[name]
    events = _replay(raw, piece)
    assert b"".join(events) == raw, "events are forwarded byte for byte"
    assert wire.is_done(events[-1]) and not any(wire.is_done(event) for event in events[:-1])
    head = wire.event_head(events[0])
    assert head is not None and (head.id, head.created, head.model) == expected["head"]
    usages = [wire.event_usage(event) for event in events[:-1]]
    assert [usage_only for _, usage_only in usages] == [False] * (len(usages) - 1) + [True]
    assert all(usage is None for usage, _ in usages[:-1])
    assert usage_tuple(usages[-1][0]) == expected["usage"]
    content, arguments, finish = "", "", None
    for event in events[:-1]:
        for choice in json.loads(event.removeprefix(b"data: "))["choices"]:
            content += choice["delta"].get("content") or ""
            arguments += "".join(c["function"].get("arguments") or "" for c in choice["delta"].get("tool_calls") or [])
            finish = choice["finish_reason"] or finish
    assert (content, arguments, finish) == (expected["content"], expected["arguments"], expected["finish"])
    estimate = wire.estimate_usage(events, prompt_bytes=400)
    assert estimate.completion_tokens == -(-len(content + arguments) // 4) and estimate.prompt_tokens == 100
