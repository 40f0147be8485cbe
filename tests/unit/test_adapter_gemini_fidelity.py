"""Gemini adapter findings of issue 21, each checked against google-genai (the ground truth) or the catalog."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from google.genai import types

from catalog import loader
from services.common.settings import Secret
from services.proxy.adapters import gemini
from services.proxy.errors import InvalidRequest
from services.proxy.providers import Target
from tests.openapi import validate

TARGET = Target(provider="gemini", base_url="http://127.0.0.1:1/v1beta", api_key=Secret("k"), format="gemini",
                emulated=True)
HELLO: dict[str, Any] = {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "Hi"}]}


# --------------------------------------------------------------------------- finish reasons


def test_every_finish_reason_of_google_genai_is_mapped_deliberately() -> None:
    """A value google-genai adds and this table lacks fails here, instead of quietly becoming `stop`."""
    mapped = set(gemini._FINISH_REASONS)
    failed = set(gemini.FAILED_REASONS)
    assert not mapped & failed
    assert mapped | failed == set(types.FinishReason.__members__)
    assert set(gemini._FINISH_REASONS.values()) <= {"stop", "length", "content_filter"}


@pytest.mark.parametrize("reason", sorted(gemini.FAILED_REASONS))
def test_a_failed_generation_is_an_upstream_error_not_stop(reason: str) -> None:
    response = {"candidates": [{"content": {"role": "model"}, "finishReason": reason, "index": 0}],
                "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}, "responseId": "r1"}
    with pytest.raises(gemini.GenerationFailed, match=reason):
        gemini.from_upstream(response, model="gemini-2.5-flash")


@pytest.mark.parametrize("reason", sorted(gemini.FAILED_REASONS))
def test_a_failed_generation_breaks_the_stream_with_an_error(reason: str) -> None:
    stream = gemini.GeminiDialect().stream(model="gemini-2.5-flash")
    event = {"candidates": [{"content": {"role": "model"}, "finishReason": reason, "index": 0}],
             "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}, "responseId": "r1"}
    buffer = bytearray(b"data: " + msgspec.json.encode(event) + b"\r\n\r\n")
    with pytest.raises(gemini.StreamError) as caught:
        stream.events(buffer)
    assert caught.value.body["error"]["code"] == "upstream_generation_failed"
    assert reason in caught.value.body["error"]["message"]


@pytest.mark.parametrize(("reason", "expected"), [
    ("LANGUAGE", "content_filter"), ("MODEL_ARMOR", "content_filter"), ("CONTINUATION", "length"),
    ("FINISH_REASON_UNSPECIFIED", "stop"),
])
def test_finish_reasons_that_end_a_usable_answer(reason: str, expected: str) -> None:
    assert gemini.finish_reason(reason, has_tool_calls=False) == expected


def test_an_unknown_finish_reason_is_never_stop() -> None:
    with pytest.raises(ValueError, match="SOMETHING_NEW"):
        gemini.finish_reason("SOMETHING_NEW", has_tool_calls=False)


# --------------------------------------------------------------------------- blocked prompts


BLOCKED: dict[str, Any] = {
    "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]},
    "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
    "modelVersion": "gemini-2.5-flash", "responseId": "blocked-1",
}


def test_a_blocked_prompt_stream_ends_as_content_filter_with_usage_and_done() -> None:
    types.GenerateContentResponse.model_validate(BLOCKED)  # the shape Google sends, per google-genai
    stream = gemini.GeminiDialect().stream(model="gemini-2.5-flash")
    events = stream.events(bytearray(b"data: " + msgspec.json.encode(BLOCKED) + b"\r\n\r\n"))
    events += stream.close()
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [msgspec.json.decode(e[len(b"data: "):]) for e in events[:-1]]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "content_filter" and finishes.count("content_filter") == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 9


def test_a_blocked_prompt_answer_is_content_filter_with_usage() -> None:
    completion = gemini.from_upstream(BLOCKED, model="gemini-2.5-flash")
    validate("CreateChatCompletionResponse", completion)
    assert completion["choices"][0]["finish_reason"] == "content_filter"
    assert completion["usage"]["prompt_tokens"] == 9 and completion["usage"]["total_tokens"] == 9


def test_a_cut_stream_is_still_not_finished() -> None:
    """The fix must not close streams that were cut: no finish reason and no block reason owe nothing."""
    stream = gemini.GeminiDialect().stream(model="gemini-2.5-flash")
    event = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}]}
    stream.events(bytearray(b"data: " + msgspec.json.encode(event) + b"\r\n\r\n"))
    assert stream.close() == []


def test_a_last_event_without_its_blank_line_is_still_read_at_the_end() -> None:
    """google-genai's reader yields a trailing `data:` line at end of stream; Google's own recorded blocked-prompt
    stream (tests/fixtures/providers/gemini/streaming-failure-prompt-blocked-safety.txt) ends exactly so."""
    stream = gemini.GeminiDialect().stream(model="gemini-2.5-flash")
    assert stream.events(bytearray(b"data: " + msgspec.json.encode(BLOCKED) + b"\r\n")) == []
    events = stream.close()
    assert events[-1] == b"data: [DONE]\n\n" and b'"content_filter"' in b"".join(events)


def test_a_last_event_cut_inside_its_json_leaves_the_stream_unfinished() -> None:
    stream = gemini.GeminiDialect().stream(model="gemini-2.5-flash")
    assert stream.events(bytearray(b"data: " + msgspec.json.encode(BLOCKED)[:40])) == []
    assert stream.close() == []


# --------------------------------------------------------------------------- thinking that cannot be switched off


def test_reasoning_effort_none_is_refused_for_a_model_that_always_thinks() -> None:
    catalog = loader.load()
    pro = catalog.model_for_upstream("gemini", "gemini-2.5-pro")
    assert pro is not None and not pro.capabilities.thinking_off
    with pytest.raises(InvalidRequest, match="reasoning_effort") as caught:
        gemini.GeminiDialect().request(TARGET, {**HELLO, "reasoning_effort": "none"}, "gemini-2.5-pro",
                                       capabilities=pro.capabilities)
    assert caught.value.param == "reasoning_effort"


def test_reasoning_effort_none_switches_thinking_off_where_the_model_can() -> None:
    flash = loader.load().model_for_upstream("gemini", "gemini-2.5-flash")
    assert flash is not None and flash.capabilities.thinking_off
    _, request = gemini.to_upstream({**HELLO, "model": "gemini-2.5-flash", "reasoning_effort": "none"},
                                    "gemini-2.5-flash", capabilities=flash.capabilities)
    assert request["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}


def test_other_efforts_still_reach_a_model_that_always_thinks() -> None:
    pro = loader.load().model_for_upstream("gemini", "gemini-2.5-pro")
    assert pro is not None
    _, request = gemini.to_upstream({**HELLO, "reasoning_effort": "low"}, "gemini-2.5-pro",
                                    capabilities=pro.capabilities)
    assert request["generationConfig"]["thinkingConfig"]["thinkingBudget"] > 0


def test_a_model_that_cannot_think_refuses_reasoning_effort_but_none_needs_nothing() -> None:
    flash2 = loader.load().model_for_upstream("gemini", "gemini-2.0-flash")
    assert flash2 is not None and not flash2.capabilities.thinking
    body = {**HELLO, "model": "gemini-2.0-flash"}
    with pytest.raises(InvalidRequest, match="does not think") as caught:
        gemini.GeminiDialect().request(TARGET, {**body, "reasoning_effort": "low"}, "gemini-2.0-flash",
                                       capabilities=flash2.capabilities)
    assert caught.value.param == "reasoning_effort"
    _, request = gemini.to_upstream({**body, "reasoning_effort": "none"}, "gemini-2.0-flash",
                                    capabilities=flash2.capabilities)
    assert "generationConfig" not in request
