"""The emulator's Bedrock ground truth without a socket: botocore's ParamValidator refusals, the catalog's model rules,
and the emulator's own answers read strictly against botocore's output shapes."""

from __future__ import annotations

from typing import Any

import pytest

from catalog import loader
from services.emulator import bedrock_format as bf
from services.emulator import bedrock_validate as bv

CATALOG = loader.load()
HAIKU_35 = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
OPUS_41 = "us.anthropic.claude-opus-4-1-20250805-v1:0"
ASK: dict[str, Any] = {"messages": [{"role": "user", "content": [{"text": "Hi"}]}]}


@pytest.mark.parametrize("stream", [False, True])
def test_botocore_accepts_a_plain_body_and_refuses_what_its_model_refuses(stream: bool) -> None:
    assert bv.check_body(HAIKU_35, ASK, stream=stream) is None
    assert "stopSequences[0]" in str(bv.check_body(HAIKU_35, {**ASK, "inferenceConfig": {"stopSequences": [""]}},
                                                   stream=stream))
    assert "Unknown parameter" in str(bv.check_body(HAIKU_35, {**ASK, "top_p": 1}, stream=stream))
    union = {"messages": [{"role": "user", "content": [{"text": "Hi", "cachePoint": {"type": "default"}}]}]}
    assert bv.check_body(HAIKU_35, union, stream=stream) is not None  # a ContentBlock is a union: one member


def test_the_catalog_rules_for_a_model() -> None:
    assert bv.check_model(CATALOG, HAIKU_35, ASK) is None
    assert bv.check_model(CATALOG, HAIKU_35.removeprefix("us."), ASK) == bv.ON_DEMAND_REFUSED.format(
        model_id=HAIKU_35.removeprefix("us."))
    both = {**ASK, "inferenceConfig": {"temperature": 0.2, "topP": 0.5}}
    assert bv.check_model(CATALOG, OPUS_41, both) == bv.BOTH_SAMPLING
    assert bv.check_model(CATALOG, f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{OPUS_41}",
                          both) == bv.BOTH_SAMPLING
    assert bv.check_model(CATALOG, HAIKU_35, both) is None
    forced = {**ASK, "toolConfig": {"tools": [], "toolChoice": {"any": {}}}}
    assert bv.check_model(CATALOG, HAIKU_35, forced) is None
    assert "toolChoice.any" in str(bv.check_model(CATALOG, "meta.llama3-3-70b-instruct-v1:0", forced))


def test_the_emulators_answers_declare_nothing_botocore_does_not() -> None:
    for body in (ASK, {**ASK, "toolConfig": {"tools": [{"toolSpec": {"name": "top_song", "inputSchema": {
            "json": {"type": "object"}}}}], "toolChoice": {"any": {}}}}):
        answer = bf.plan(HAIKU_35, body)
        assert bv.response_problems(bf.response_body(answer, latency_ms=3)) == []
        for kind, payload in bf.stream_events(answer, latency_ms=3):
            assert bv.event_problems(kind, {**payload, "p": "abc"}) == [], kind


def test_strict_reading_names_what_is_undeclared() -> None:
    body = {"output": {"message": {"role": "assistant", "content": [{"text": "x", "extra": 1}]}},
            "stopReason": "finished", "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
            "metrics": {"latencyMs": 1}, "id": "x"}
    problems = bv.response_problems(body)
    assert ".id" in problems and ".output.message.content[0].extra" in problems
    assert any("stopReason" in p for p in problems)
    assert bv.event_problems("thinking", {}) == ["unknown event type 'thinking'"]


def test_the_emulators_in_stream_exceptions_are_declared_members_of_the_stream() -> None:
    for status in (400, 429, 500, 503, 424):
        assert bv.event_problems(bf.stream_exception_type(status), {"message": "m"}) == [], status
