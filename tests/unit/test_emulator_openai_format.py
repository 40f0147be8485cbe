"""The emulator's pure core: OpenAI replies, usage, truncation, tool calls, validation, spec conformance, faults."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import jsonschema
import msgspec
import pytest

from services.common.settings import SettingsError
from services.emulator import openai_format as oa
from services.emulator.faults import FaultPlan, FaultRegistry, decode_plan, decode_plans
from services.emulator.settings import load
from tests.openapi import validate

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "detailed": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["city"],
        },
    },
}


def chat(content: str = "Tell me about the sea in spring", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


def streamed(reply: oa.Reply, **kwargs: Any) -> list[dict[str, Any]]:
    return list(oa.stream_chunks(reply, completion_id="chatcmpl-1", created=1, **kwargs))


def test_count_tokens_is_a_quarter_of_the_characters_rounded_up() -> None:
    assert [oa.count_tokens(t) for t in ("", "a", "abcd", "abcde", "x" * 400)] == [0, 1, 1, 2, 100]


def test_prompt_tokens_count_messages_overhead_and_tools() -> None:
    body = chat("abcdefgh")  # 2 tokens + 3 per message + 3 priming
    assert oa.prompt_tokens(body) == 8
    two = {"model": "m", "messages": [{"role": "system", "content": "abcd"}, {"role": "user", "content": "abcd"}]}
    assert oa.prompt_tokens(two) == 3 + (3 + 1) * 2
    assert oa.prompt_tokens(chat("abcdefgh", tools=[WEATHER_TOOL])) > 8


def test_reply_is_deterministic_and_depends_on_the_prompt() -> None:
    first, again = oa.plan_reply(chat()), oa.plan_reply(chat())
    other = oa.plan_reply(chat("Something else entirely"))
    assert first == again
    assert first.content and other.content and first.content != other.content
    assert first.finish_reason == "stop"
    assert first.completion_tokens == oa.count_tokens(first.content)


def test_reply_does_not_echo_the_prompt() -> None:
    prompt = "Please repeat exactly: purple elephants juggle seventeen tangerines"
    content = oa.plan_reply(chat(prompt)).content or ""
    assert prompt not in content
    assert not {"purple", "elephants", "tangerines"} & set(content.lower().replace(".", "").split())


def test_stream_flag_and_options_do_not_change_the_answer() -> None:
    plain = oa.plan_reply(chat())
    assert oa.plan_reply(chat(stream=True, stream_options={"include_usage": True}, temperature=0.2)) == plain


def test_streamed_content_and_usage_equal_the_non_streamed_ones() -> None:
    reply = oa.plan_reply(chat())
    body = oa.completion_body(reply, completion_id="chatcmpl-1", created=1)
    chunks = streamed(reply, include_usage=True, chunk_words=2)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == body["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == body["usage"]
    assert all(c["usage"] is None for c in chunks[:-1])


def test_stream_framing_matches_openai() -> None:
    chunks = streamed(oa.plan_reply(chat()), include_usage=False)
    first, last = chunks[0]["choices"][0], chunks[-1]["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert last == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert all("usage" not in c for c in chunks)
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({(c["id"], c["created"], c["system_fingerprint"]) for c in chunks}) == 1
    assert all("obfuscation" not in c for c in streamed(oa.plan_reply(chat()), include_obfuscation=False))


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_budget_truncates_with_finish_reason_length(field: str) -> None:
    full = oa.plan_reply(chat())
    short = oa.plan_reply({**chat(), field: 3})
    assert full.completion_tokens > 3
    assert short.finish_reason == "length"
    assert short.completion_tokens == 3
    assert short.content and full.content and full.content.startswith(short.content)
    roomy = oa.plan_reply({**chat(), field: full.completion_tokens})
    assert roomy.finish_reason == "stop" and roomy.content == full.content


def test_reasoning_models_report_reasoning_tokens_inside_the_budget() -> None:
    reply = oa.plan_reply({"model": "o3", "messages": [{"role": "user", "content": "think"}]})
    assert reply.reasoning_tokens > 0
    assert reply.completion_tokens == reply.reasoning_tokens + oa.count_tokens(reply.content or "")
    starved = oa.plan_reply(
        {"model": "o3", "messages": [{"role": "user", "content": "think"}], "max_completion_tokens": 5}
    )
    assert (starved.content, starved.completion_tokens, starved.finish_reason) == ("", 5, "length")


def test_tool_call_when_tools_are_offered_to_a_user_turn() -> None:
    reply = oa.plan_reply(chat(tools=[WEATHER_TOOL]))
    body = oa.completion_body(reply, completion_id="chatcmpl-1", created=1)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert set(arguments) == {"city", "unit", "days", "detailed", "tags"}
    assert arguments["unit"] == "celsius" and 1 <= arguments["days"] <= 7 and arguments["detailed"] is True
    assert isinstance(arguments["city"], str) and isinstance(arguments["tags"], list)
    assert reply == oa.plan_reply(chat(tools=[WEATHER_TOOL]))
    validate("CreateChatCompletionResponse", body)


def test_streamed_tool_call_reassembles_to_the_same_call() -> None:
    reply = oa.plan_reply(chat(tools=[WEATHER_TOOL]))
    assert reply.tool_call is not None
    chunks = streamed(reply, include_usage=True)
    head = chunks[0]["choices"][0]["delta"]
    assert head["role"] == "assistant" and head["content"] is None
    assert head["tool_calls"] == [
        {"index": 0, "id": reply.tool_call.id, "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    ]
    fragments = [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-2]]
    assert len(fragments) > 1 and "".join(fragments) == reply.tool_call.arguments
    assert all(set(c["choices"][0]["delta"]["tool_calls"][0]) == {"index", "function"} for c in chunks[1:-2])
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"] == oa.usage_body(reply)


def test_named_tool_choice_picks_that_tool() -> None:
    other = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    choice = {"type": "function", "function": {"name": "lookup"}}
    reply = oa.plan_reply(chat(tools=[WEATHER_TOOL, other], tool_choice=choice))
    assert reply.tool_call is not None and reply.tool_call.name == "lookup" and reply.tool_call.arguments == "{}"


def test_no_tool_call_for_tool_choice_none_or_after_a_tool_result() -> None:
    assert oa.plan_reply(chat(tools=[WEATHER_TOOL], tool_choice="none")).tool_call is None
    call = oa.plan_reply(chat(tools=[WEATHER_TOOL])).tool_call
    assert call is not None
    follow_up = {
        "model": "gpt-4o-mini",
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
        ],
    }
    reply = oa.plan_reply(follow_up)
    assert reply.tool_call is None and reply.content and reply.finish_reason == "stop"


@pytest.mark.parametrize(
    ("body", "param", "code", "fragment"),
    [
        ([1, 2], None, None, "could not parse the JSON body"),
        ("text", None, None, "could not parse the JSON body"),
        ({"messages": [{"role": "user", "content": "hi"}]}, None, None, "you must provide a model parameter"),
        ({"model": "gpt-4o-mini"}, "messages", "missing_required_parameter", "Missing required parameter: 'messages'"),
        ({"model": "gpt-4o-mini", "messages": []}, "messages", "empty_array", "empty array"),
        (
            {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
            "invalid_value",
            "'robot'",
        ),
        ({"model": "m", "messages": ["hi"]}, "messages[0]", "invalid_type", "expected an object"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
            "integer_below_min_value",
            ">= 1",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}},
            "stream_options",
            None,
            "only allowed when 'stream' is enabled",
        ),
    ],
)
def test_validation_errors_are_openai_shaped(body: object, param: str | None, code: str | None, fragment: str) -> None:
    error = oa.validate_chat_request(body)
    assert error is not None
    validate("ErrorResponse", error)
    assert error["error"]["type"] == "invalid_request_error"
    assert (error["error"]["param"], error["error"]["code"]) == (param, code)
    assert fragment in error["error"]["message"]


def test_valid_request_passes_validation() -> None:
    assert oa.validate_chat_request(chat(stream=True, stream_options={"include_usage": True}, max_tokens=5)) is None


def test_bodies_and_chunks_conform_to_the_openapi_spec() -> None:
    for body in (chat(), chat(tools=[WEATHER_TOOL]), chat(max_tokens=2)):
        validate("CreateChatCompletionRequest", body)
        reply = oa.plan_reply(body)
        validate("CreateChatCompletionResponse", oa.completion_body(reply, completion_id="chatcmpl-1", created=1))
        for chunk in streamed(reply, include_usage=True):
            validate("CreateChatCompletionStreamResponse", chunk)
    validate("ListModelsResponse", oa.models_body())
    validate("ErrorResponse", oa.status_error_body(429, model="gpt-4o-mini"))


def test_the_spec_validator_rejects_wrong_bodies() -> None:
    good = oa.completion_body(oa.plan_reply(chat()), completion_id="chatcmpl-1", created=1)
    wrong_object = {**good, "object": "chat.completion.chunk"}
    with pytest.raises(jsonschema.ValidationError, match="chat.completion"):
        validate("CreateChatCompletionResponse", wrong_object)
    bad_reason = {**good, "choices": [{**good["choices"][0], "finish_reason": "done"}]}
    with pytest.raises(jsonschema.ValidationError, match="'done' is not one of"):
        validate("CreateChatCompletionResponse", bad_reason)
    with pytest.raises(jsonschema.ValidationError, match="'code' is a required property"):
        validate("ErrorResponse", {"error": {"message": "x", "type": "y", "param": None}})
    with pytest.raises(jsonschema.ValidationError, match="'choices' is a required property"):
        validate(
            "CreateChatCompletionStreamResponse",
            {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"},
        )


def test_status_errors_carry_openai_types_and_codes() -> None:
    limited = oa.status_error_body(429, model="gpt-4o-mini")["error"]
    assert (limited["type"], limited["code"]) == ("requests", "rate_limit_exceeded")
    assert oa.status_error_body(503, model="m")["error"]["type"] == "server_error"
    quota = oa.status_error_body(429, model="m", type="insufficient_quota", code="insufficient_quota")["error"]
    assert (quota["type"], quota["code"]) == ("insufficient_quota", "insufficient_quota")


def test_embeddings_are_deterministic_unit_vectors_in_both_encodings() -> None:
    request = {"model": "text-embedding-3-small", "input": ["hello world", "bye"], "dimensions": 64}
    assert oa.validate_embedding_request(request) is None
    body = oa.embedding_body(request)
    validate("CreateEmbeddingResponse", body)
    first = body["data"][0]["embedding"]
    assert len(first) == 64 and abs(sum(v * v for v in first) - 1.0) < 1e-5
    assert body["data"][1]["embedding"] != first and body == oa.embedding_body(request)
    assert body["usage"] == {"prompt_tokens": 3 + 1, "total_tokens": 4}
    encoded = oa.embedding_body({**request, "encoding_format": "base64"})["data"][0]["embedding"]
    assert list(struct.unpack("<64f", base64.b64decode(encoded))) == first
    missing = oa.validate_embedding_request({"model": "m"})
    assert missing is not None and missing["error"]["code"] == "missing_required_parameter"


def test_fault_plans_decode_strictly() -> None:
    assert decode_plan(b'{"status": 429, "retry_after": 2}') == FaultPlan(status=429, retry_after=2)
    assert decode_plan(b"") == FaultPlan()
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        decode_plan(b'{"statuss": 500}')
    with pytest.raises(msgspec.ValidationError, match="400-599"):
        decode_plan(b'{"status": 200}')
    assert decode_plans('{"*": {"latency_ms": 5}}') == {"*": FaultPlan(latency_ms=5)}


def test_fault_registry_fails_the_first_n_then_succeeds_and_falls_back_to_default() -> None:
    registry = FaultRegistry(fallback=FaultPlan(latency_ms=7))
    assert registry.decide("gpt-4o").plan.latency_ms == 7 and registry.decide("gpt-4o").status == 0
    registry.set("gpt-4o", FaultPlan(status=503, fail_times=2))
    assert [registry.decide("gpt-4o").status for _ in range(4)] == [503, 503, 0, 0]
    registry.set("*", FaultPlan(status=500))
    assert registry.decide("other").status == 500 and registry.decide("other").status == 500
    registry.clear()
    assert registry.decide("other").status == 0 and registry.snapshot() == {}


def test_settings_load_defaults_and_faults() -> None:
    settings = load({})
    assert (settings.host, settings.port, settings.chunk_words, settings.latency_ms) == ("127.0.0.1", 8090, 3, 0)
    configured = load({"EMULATOR_PORT": "0", "EMULATOR_FAULTS": '{"gpt-4o": {"status": 429, "retry_after": 1}}'})
    assert configured.port == 0 and configured.faults == {"gpt-4o": FaultPlan(status=429, retry_after=1)}
    with pytest.raises(SettingsError, match="EMULATOR_FAULTS"):
        load({"EMULATOR_FAULTS": '{"gpt-4o": {"status": "nope"}}'})
    with pytest.raises(SettingsError, match="EMULATOR_CHUNK_WORDS"):
        load({"EMULATOR_CHUNK_WORDS": "0"})
