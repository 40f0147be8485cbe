"""Golden samples: real Gemini bytes from Google's SDK test data and docs (tests/fixtures/providers/gemini/,
sources and licence in SOURCES.md) replayed through the adapter; our reading must equal what they mean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.emulator import gemini_validate as gv
from services.proxy.adapters import gemini
from tests.openapi import validate

SAMPLES = Path(__file__).parents[1] / "fixtures" / "providers" / "gemini"


def unary(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def replay(name: str) -> tuple[list[dict[str, Any]], bool]:
    """The OpenAI chunks the proxy sends for a recorded stream (fed in 50-byte slices), and whether it saw [DONE]."""
    raw = (SAMPLES / name).read_bytes()
    decoder = gemini.GeminiDialect().stream(model="gemini-2.5-flash")
    buffer = bytearray()
    events: list[bytes] = []
    for start in range(0, len(raw), 50):
        buffer += raw[start: start + 50]
        events += decoder.events(buffer)
    events += decoder.close()
    done = bool(events) and events[-1] == b"data: [DONE]\n\n"
    chunks = [msgspec.json.decode(e[len(b"data: "):]) for e in (events[:-1] if done else events)]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    return chunks, done


def content(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def finishes(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]


def stream_events(name: str) -> list[dict[str, Any]]:
    """The recorded events (the last one dispatched at end of stream even without its blank line, as google-genai
    does)."""
    return gemini.split_sse_data(bytearray((SAMPLES / name).read_bytes().rstrip() + b"\r\n\r\n"))


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*-success-*")) + [
    "unary-failure-finish-reason-safety.json", "streaming-failure-prompt-blocked-safety.txt",
    "streaming-failure-recitation-no-content.txt"])
def test_googles_responses_parse_under_the_ground_truth_the_emulator_uses(name: str) -> None:
    """The strict check the emulator's own answers must pass accepts every real answer Google recorded."""
    bodies = stream_events(name) if name.endswith(".txt") else [unary(name)]
    assert bodies and all(gv.check_response(body) is None for body in bodies)


def test_googles_documented_request_passes_the_ground_truth_and_is_what_the_adapter_sends() -> None:
    documented = unary("request-function-calling-meeting.json")
    assert gv.check_request(documented) is None
    declaration = documented["tools"][0]["functionDeclarations"][0]
    body = {"model": "gemini-2.5-flash",
            "messages": [{"role": "user", "content": documented["contents"][0]["parts"][0]["text"]}],
            "tools": [{"type": "function", "function": {"name": declaration["name"],
                                                         "description": declaration["description"],
                                                         "parameters": declaration["parameters"]}}]}
    path, request = gemini.to_upstream(body, "gemini-2.5-flash")
    assert path == "models/gemini-2.5-flash:generateContent" and request == documented


def test_a_plain_answer() -> None:
    completion = gemini.from_upstream(unary("unary-success-basic-reply-short.json"), model="gemini-2.0-flash")
    validate("CreateChatCompletionResponse", completion)
    (choice,) = completion["choices"]
    assert choice["message"]["content"] == ("Google's headquarters, also known as the Googleplex, is located in "
                                            "**Mountain View, California**.\n")
    assert choice["finish_reason"] == "stop"
    assert completion["usage"]["prompt_tokens"] == 7 and completion["usage"]["completion_tokens"] == 22
    assert completion["usage"]["total_tokens"] == 29


def test_a_plain_stream() -> None:
    chunks, done = replay("streaming-success-basic-reply-short.txt")
    assert done and content(chunks) == "The capital of Wyoming is **Cheyenne**.\n" and finishes(chunks) == ["stop"]
    assert chunks[-1]["usage"]["prompt_tokens"] == 7 and chunks[-1]["usage"]["completion_tokens"] == 10
    assert chunks[-1]["usage"]["total_tokens"] == 17


def test_thought_summaries_stay_out_and_the_call_keeps_its_signature() -> None:
    raw = unary("unary-success-thinking-function-call-thought-summary-signature.json")
    signature = raw["candidates"][0]["content"]["parts"][1]["thoughtSignature"]
    completion = gemini.from_upstream(raw, model="gemini-2.5-flash")
    validate("CreateChatCompletionResponse", completion)
    (choice,) = completion["choices"]
    assert choice["message"]["content"] is None and choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "now", "arguments": "{}"}
    assert call["extra_content"] == {"google": {"thought_signature": signature}}
    metadata = raw["usageMetadata"]
    assert completion["usage"]["completion_tokens_details"]["reasoning_tokens"] == metadata["thoughtsTokenCount"]
    assert completion["usage"]["total_tokens"] == metadata["totalTokenCount"]


def test_a_streamed_thinking_function_call() -> None:
    events = stream_events("streaming-success-thinking-function-call-thought-summary-signature.txt")
    chunks, done = replay("streaming-success-thinking-function-call-thought-summary-signature.txt")
    assert done and content(chunks) == "" and finishes(chunks) == ["tool_calls"]
    calls = [t for c in chunks if c["choices"] for t in c["choices"][0]["delta"].get("tool_calls") or []]
    (call,) = calls
    signature = events[-1]["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    assert call["function"] == {"name": "now", "arguments": "{}"}
    assert call["extra_content"] == {"google": {"thought_signature": signature}}
    assert chunks[-1]["usage"]["total_tokens"] == events[-1]["usageMetadata"]["totalTokenCount"]


def test_a_blocked_prompt_stream_ends_as_content_filter() -> None:
    """Google's recording has no usage at all: the stream still finishes ([DONE]); the proxy estimates usage."""
    chunks, done = replay("streaming-failure-prompt-blocked-safety.txt")
    assert done and finishes(chunks) == ["content_filter"] and content(chunks) == ""


def test_a_safety_stop() -> None:
    completion = gemini.from_upstream(unary("unary-failure-finish-reason-safety.json"), model="gemini-2.0-flash")
    assert completion["choices"][0]["finish_reason"] == "content_filter"
    assert completion["usage"]["completion_tokens"] == 20


def test_a_recitation_stop_in_a_stream() -> None:
    chunks, done = replay("streaming-failure-recitation-no-content.txt")
    assert done and finishes(chunks) == ["content_filter"] and content(chunks).startswith("text1text2")
    assert chunks[-1]["usage"]["completion_tokens"] == 261 and chunks[-1]["usage"]["total_tokens"] == 270


@pytest.mark.parametrize(("name", "status", "code"), [
    ("unary-failure-api-key.json", 400, "invalid_api_key"),
    ("unary-failure-unknown-model.json", 404, "not_found"),
])
def test_googles_errors(name: str, status: int, code: str) -> None:
    raw = (SAMPLES / name).read_bytes()
    error = gemini.error_to_openai(status, raw)["error"]
    assert error["code"] == code and error["message"] == json.loads(raw)["error"]["message"]
    assert error["type"] == "invalid_request_error"
