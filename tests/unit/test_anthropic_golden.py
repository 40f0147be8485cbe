"""Anthropic golden samples (real traffic recorded by anthropic-sdk-python's tests; tests/fixtures/providers/
anthropic/SOURCES.md) replayed through the adapter: our OpenAI-form reading of their bytes is their documented
meaning, and the emulator's ground truth takes every one of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.emulator import anthropic_validate as av
from services.proxy.adapters import anthropic as ad
from tests.openapi import validate

GOLDEN = Path(__file__).parents[1] / "fixtures" / "providers" / "anthropic"
MODEL = "claude-sonnet-4.5"


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


def completion(response: dict[str, Any]) -> dict[str, Any]:
    """The non-streamed answer as the proxy sends it, checked against OpenAI's schema."""
    out = json.loads(ad.AnthropicDialect().response(json.dumps(response).encode(), model=MODEL))
    validate("CreateChatCompletionResponse", out)
    return out


def replay(name: str, *, piece: int) -> tuple[list[dict[str, Any]], bool]:
    """The recorded stream fed to the dialect `piece` bytes at a time: (OpenAI chunks, whether [DONE] came)."""
    stream = ad.AnthropicDialect().stream(model=MODEL)
    raw, buffer, out = (GOLDEN / name).read_bytes(), bytearray(), []
    for start in range(0, len(raw), piece):
        buffer.extend(raw[start : start + piece])
        out.extend(stream.events(buffer))
    buffer.extend(b"\n\n")  # the recordings end without the blank line after the last event
    out.extend(stream.events(buffer))
    out.extend(stream.close())
    done = out[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(event.removeprefix(b"data: ")) for event in out if event != b"data: [DONE]\n\n"]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    return chunks, done


def summary(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """What a client accumulates from the chunks: text, tool calls by index, finish reason, the usage chunk."""
    text, finish, usage = "", None, None
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                entry = calls.setdefault(call["index"], {"id": None, "name": None, "arguments": ""})
                entry["id"] = call.get("id") or entry["id"]
                entry["name"] = (call.get("function") or {}).get("name") or entry["name"]
                entry["arguments"] += (call.get("function") or {}).get("arguments") or ""
            finish = choice["finish_reason"] or finish
    return {"text": text, "calls": [calls[i] for i in sorted(calls)], "finish": finish, "usage": usage}


def assert_usage(usage: dict[str, Any], anthropic_usage: dict[str, Any]) -> None:
    """OpenAI's prompt_tokens is Anthropic's whole input: input_tokens plus cache writes plus cache reads, the
    reads being OpenAI's cached_tokens (Anthropic's prompt-caching guide)."""
    read = anthropic_usage.get("cache_read_input_tokens") or 0
    write = anthropic_usage.get("cache_creation_input_tokens") or 0
    assert usage["prompt_tokens"] == anthropic_usage["input_tokens"] + read + write
    assert usage["prompt_tokens_details"]["cached_tokens"] == read
    assert usage["completion_tokens"] == anthropic_usage["output_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_structured_output_message_is_its_text_with_the_recorded_usage() -> None:
    sample = golden("message_structured_output.json")
    out = completion(sample["response"])
    message = out["choices"][0]["message"]
    assert json.loads(message["content"]) == {"items": [{"product_name": "Green Tea", "price": 5.5, "quantity": 2},
                                                        {"product_name": "Coffee", "price": 3.0, "quantity": 1}],
                                              "total": 14.0}
    assert "tool_calls" not in message and out["choices"][0]["finish_reason"] == "stop"
    assert out["id"] == "msg_01T4jd6NyD9xGGtTPDC4ogy5" and out["model"] == MODEL
    assert_usage(out["usage"], sample["response"]["usage"])
    assert out["usage"]["prompt_tokens"] == 406 and out["usage"]["completion_tokens"] == 50


def test_tool_use_message_is_a_tool_call_and_the_next_turn_its_answer() -> None:
    call = completion(golden("message_tool_use.json"))
    message = call["choices"][0]["message"]
    assert message["content"] is None and call["choices"][0]["finish_reason"] == "tool_calls"
    [tool] = message["tool_calls"]
    assert tool["id"] == "toolu_01DGiQScbZKPwUBYN79rFUb8" and tool["function"]["name"] == "get_weather"
    assert json.loads(tool["function"]["arguments"]) == {"location": "San Francisco, CA", "units": "f"}
    assert_usage(call["usage"], golden("message_tool_use.json")["usage"])
    answer = completion(golden("message_text.json"))
    assert answer["choices"][0]["message"]["content"].startswith("The weather in San Francisco, CA is currently")
    assert answer["choices"][0]["finish_reason"] == "stop" and answer["usage"]["prompt_tokens"] == 770


@pytest.mark.parametrize("piece", [1, 7, 1 << 16])
def test_recorded_text_stream(piece: int) -> None:
    chunks, done = replay("stream_basic.sse", piece=piece)
    got = summary(chunks)
    assert done and got["text"] == "Hello there!" and got["calls"] == [] and got["finish"] == "stop"
    assert chunks[0]["id"] == "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK"
    assert_usage(got["usage"], {"input_tokens": 11, "output_tokens": 6})  # message_delta's count overrides 1


@pytest.mark.parametrize("piece", [1, 13, 1 << 16])
def test_recorded_text_then_tool_use_stream(piece: int) -> None:
    got = summary(replay("stream_tool_use.sse", piece=piece)[0])
    assert got["text"] == "I'll check the current weather in Paris for you."
    assert got["calls"] == [{"id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "name": "get_weather",
                             "arguments": '{"location": "Paris"}'}]
    assert got["finish"] == "tool_calls"
    assert_usage(got["usage"], {"input_tokens": 377, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                                "output_tokens": 65})


def test_recorded_refusal_stream_is_a_content_filter_finish() -> None:
    got = summary(replay("stream_refusal.sse", piece=1 << 16)[0])
    assert got["text"] == "" and got["finish"] == "content_filter"
    assert_usage(got["usage"], {"input_tokens": 20, "output_tokens": 0})


def test_recorded_structured_stream_with_padded_events() -> None:
    """The recording pads each data line with spaces after the JSON; the text and final usage still read."""
    got = summary(replay("stream_structured_output.sse", piece=5)[0])
    assert json.loads(got["text"]) == [12345, 67890] and got["finish"] == "stop"
    assert_usage(got["usage"], {"input_tokens": 135, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                                "output_tokens": 10})


def test_the_ground_truth_takes_every_golden_sample() -> None:
    """The emulator's strict checks accept real traffic: a check stricter than the API would fail here."""
    sample = golden("message_structured_output.json")
    assert av.check_body(sample["request"]) is None
    for name in ("message_structured_output.json", "message_tool_use.json", "message_text.json"):
        body = golden(name)
        av.check_message(body.get("response", body))
    for path in sorted(GOLDEN.glob("*.sse")):
        for raw in path.read_bytes().split(b"\n\n"):
            if (parsed := ad.parse_event(raw)) is not None:
                av.check_event(parsed[1])
