"""Anthropic adapter: request/response/stream/error translation both ways, against fixtures from Anthropic's docs."""

from __future__ import annotations

import json
import re
from typing import Any

import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent

from services.emulator import anthropic_format as af
from services.emulator import openai_format as oa
from services.proxy.adapters import anthropic as ad
from services.proxy.adapters import anthropic_inbound as inbound
from services.proxy.adapters.shared import JSON_OBJECT_INSTRUCTION
from tests.openapi import validate

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["location"],
        },
    },
}
ANTHROPIC_WEATHER = {"name": "get_weather", "description": "Get the current weather in a given location",
                     "input_schema": WEATHER["function"]["parameters"]}

# Anthropic's documented non-streaming response (Messages API reference) and tool-use response (tool use guide).
DOC_MESSAGE: dict[str, Any] = {
    "content": [{"text": "Hi! My name is Claude.", "type": "text"}],
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "model": "claude-sonnet-4-20250514",
    "role": "assistant",
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "type": "message",
    "usage": {"input_tokens": 2095, "output_tokens": 503},
}
DOC_TOOL_USE: dict[str, Any] = {
    "id": "msg_01Aq9w938a90dw8q",
    "model": "claude-sonnet-4-5",
    "stop_reason": "tool_use",
    "role": "assistant",
    "type": "message",
    "stop_sequence": None,
    "content": [
        {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
         "input": {"location": "San Francisco, CA", "unit": "celsius"}},
    ],
    "usage": {"input_tokens": 472, "output_tokens": 89},
}
# The streaming guide's "streaming request with tool use" event sequence (text block, then a tool_use block).
DOC_TOOL_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-1-20250805","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let's check the weather for San Francisco, CA:"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\": \\"San Fra"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ncisco, CA\\", \\"unit\\": \\"fahrenheit\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""  # noqa: E501 (recorded events are single lines)
Events = list[tuple[str, dict[str, Any]]]
# A current recording: message_delta repeats the cumulative input and cache counts (they override message_start).
CACHED_STREAM: Events = [
    ("message_start", {"type": "message_start", "message": {
        "model": "claude-haiku-4-5-20251001", "id": "msg_01K2JbSUMYhez5RHoK9ZCj9U", "type": "message",
        "role": "assistant", "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 849, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 10, "service_tier": "standard"}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "Hello!"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                       "usage": {"input_tokens": 12, "cache_creation_input_tokens": 100,
                                 "cache_read_input_tokens": 737, "output_tokens": 47}}),
    ("message_stop", {"type": "message_stop"}),
]
STREAM_EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)
MESSAGES_OK = [{"role": "user", "content": "Hello, world"}]


def events_of(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    parsed = [ad.parse_event(chunk) for chunk in raw.split(b"\n\n")]
    return [event for event in parsed if event is not None]


def translate(events: Events, **kwargs: Any) -> tuple[list[dict[str, Any]], ad.StreamTranslator]:
    translator = ad.StreamTranslator(model="claude-opus-4.1", created=1, **kwargs)
    chunks = [chunk for name, data in events for chunk in translator.feed(name, data)]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    return chunks, translator


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "Hello, Claude"}], **extra}


# --------------------------------------------------------------------------- OpenAI request -> Anthropic


def test_minimal_request_gets_the_upstream_model_and_a_default_max_tokens() -> None:
    out = ad.to_upstream(chat(), "claude-sonnet-4-20250514")
    assert out == {"model": "claude-sonnet-4-20250514", "max_tokens": 4096,
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello, Claude"}]}]}
    assert af.validate_request(out) is None


def test_system_developer_sampling_stop_user_and_stream_are_translated() -> None:
    body = chat(messages=[{"role": "system", "content": "You are terse."},
                          {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                          {"role": "user", "content": "Hi"}],
                temperature=0.2, top_p=0.9, stop="END", max_completion_tokens=256, user="u-42", stream=True,
                stream_options={"include_usage": True}, seed=7, n=1, logprobs=False, presence_penalty=0)
    out = ad.to_upstream(body, "claude-x")
    assert out["system"] == [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in French."}]
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert (out["temperature"], out["top_p"], out["stop_sequences"], out["max_tokens"]) == (0.2, 0.9, ["END"], 256)
    assert out["metadata"] == {"user_id": "u-42"} and out["stream"] is True
    assert "seed" not in out and "stream_options" not in out
    assert ad.to_upstream(chat(stop=["a", "b"], max_tokens=9), "m")["stop_sequences"] == ["a", "b"]
    assert af.validate_request(out) is None


def test_images_become_base64_or_url_sources() -> None:
    content = [{"type": "text", "text": "What is in these images?"},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
               {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/a.jpg"}}]
    out = ad.to_upstream(chat(messages=[{"role": "user", "content": content}]), "m")
    assert out["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/a.jpg"}},
    ]
    assert af.validate_request(out) is None


@pytest.mark.parametrize("url", ["data:image/bmp;base64,AAAA", "data:image/png,raw", "ftp://x/y.png"])
def test_untranslatable_images_name_the_part(url: str) -> None:
    content = [{"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(ad.TranslationError) as caught:
        ad.to_upstream(chat(messages=[{"role": "user", "content": content}]), "m")
    assert caught.value.param == "messages[0].content[0].image_url.url"


def test_tools_tool_calls_and_merged_tool_results() -> None:
    calls = [{"id": f"toolu_{i}", "type": "function",
              "function": {"name": "get_weather", "arguments": json.dumps({"location": city})}}
             for i, city in ((1, "Paris"), (2, "Rome"))]
    body = chat(messages=[{"role": "user", "content": "Weather in Paris and Rome?"},
                          {"role": "assistant", "content": None, "tool_calls": calls},
                          {"role": "tool", "tool_call_id": "toolu_1", "content": "15 degrees"},
                          {"role": "tool", "tool_call_id": "toolu_2",
                           "content": [{"type": "text", "text": "20 degrees"}]},
                          {"role": "user", "content": "Which is warmer?"}],
                tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    out = ad.to_upstream(body, "m")
    assert out["tools"] == [ANTHROPIC_WEATHER]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "Rome"}}]}
    assert out["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15 degrees"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "20 degrees"}]},
        {"type": "text", "text": "Which is warmer?"}]}
    assert len(out["messages"]) == 3 and af.validate_request(out) is None


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}), ("none", {"type": "none"}), ("required", {"type": "any"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
])
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    assert ad.to_upstream(chat(tools=[WEATHER], tool_choice=choice), "m")["tool_choice"] == expected


def test_json_object_becomes_a_system_instruction() -> None:
    out = ad.to_upstream(chat(response_format={"type": "json_object"}), "m")
    assert out["system"] == [{"type": "text", "text": JSON_OBJECT_INSTRUCTION}]


@pytest.mark.parametrize(("extra", "param"), [
    ({"logprobs": True}, "logprobs"), ({"top_logprobs": 3}, "top_logprobs"), ({"n": 2}, "n"),
    ({"presence_penalty": 0.5}, "presence_penalty"), ({"frequency_penalty": 1}, "frequency_penalty"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"), ({"temperature": 1.5}, "temperature"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
    ({"reasoning_effort": "high"}, "reasoning_effort"), ({"audio": {"voice": "alloy"}}, "audio"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages[0].content[0].type"),
])
def test_unsupported_parameters_name_the_parameter_and_the_model(extra: dict[str, Any], param: str) -> None:
    expected = re.escape(f"'{param}' is not supported by model 'claude-sonnet-4'")
    with pytest.raises(ad.UnsupportedParameter, match=expected) as caught:
        ad.to_upstream(chat(**extra), "claude-sonnet-4-20250514")
    assert (caught.value.param, caught.value.model) == (param, "claude-sonnet-4")


def test_unparseable_tool_arguments_are_refused() -> None:
    calls = [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]
    with pytest.raises(ad.TranslationError, match="JSON object"):
        ad.to_upstream(chat(messages=[{"role": "assistant", "tool_calls": calls}]), "m")


# --------------------------------------------------------------------------- Anthropic response -> OpenAI


def test_documented_message_becomes_a_valid_completion() -> None:
    out = ad.from_upstream(DOC_MESSAGE, model="claude-sonnet-4", created=5)
    validate("CreateChatCompletionResponse", out)
    assert out["id"] == DOC_MESSAGE["id"] and out["model"] == "claude-sonnet-4" and out["created"] == 5
    assert out["choices"][0]["message"]["content"] == "Hi! My name is Claude."
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["prompt_tokens"] == 2095 and out["usage"]["total_tokens"] == 2598


def test_documented_tool_use_becomes_tool_calls() -> None:
    out = ad.from_upstream(DOC_TOOL_USE, model="claude-sonnet-4.5")
    validate("CreateChatCompletionResponse", out)
    message = out["choices"][0]["message"]
    assert message["content"] == "I'll check the current weather in San Francisco for you."
    assert message["tool_calls"] == [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"location":"San Francisco, CA","unit":"celsius"}'}}]
    assert out["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(("stop", "finish"), [("end_turn", "stop"), ("stop_sequence", "stop"),
                                               ("max_tokens", "length"), ("tool_use", "tool_calls"),
                                               ("refusal", "content_filter")])
def test_stop_reasons(stop: str, finish: str) -> None:
    out = ad.from_upstream({**DOC_MESSAGE, "stop_reason": stop}, model="m")
    assert out["choices"][0]["finish_reason"] == finish


def test_cache_reads_and_writes_count_as_prompt_tokens() -> None:
    usage = {"input_tokens": 21, "cache_creation_input_tokens": 188086, "cache_read_input_tokens": 10,
             "output_tokens": 393}
    out = ad.from_upstream({**DOC_MESSAGE, "usage": usage}, model="m")
    validate("CreateChatCompletionResponse", out)
    assert out["usage"]["prompt_tokens"] == 21 + 188086 + 10
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 10
    assert ad.usage_from_anthropic(usage).cache_write_tokens == 188086


# --------------------------------------------------------------------------- streams


def test_documented_tool_stream_becomes_openai_chunks() -> None:
    chunks, translator = translate(events_of(DOC_TOOL_STREAM), include_usage=True)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {c["id"] for c in chunks} == {"msg_014p7gG3wDgGV9EUtLvnow3U"}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Okay, let's check the weather for San Francisco, CA:"
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert calls[0] == {"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 472
    assert chunks[-1]["usage"]["completion_tokens"] == 89
    assert all(c["usage"] is None for c in chunks[:-1])
    assert translator.usage == ad.TokenUsage(prompt_tokens=472, completion_tokens=89) and translator.done


def test_message_delta_usage_is_cumulative_and_overrides_message_start() -> None:
    chunks, translator = translate(CACHED_STREAM, include_usage=False)
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert translator.usage == ad.TokenUsage(prompt_tokens=849, completion_tokens=47, cached_tokens=737,
                                             cache_write_tokens=100)


def test_error_event_raises_with_the_status_it_would_have() -> None:
    translator = ad.StreamTranslator(model="m", include_usage=False)
    translator.feed(*events_of(DOC_TOOL_STREAM)[0])
    error = ad.parse_event(b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
                           b'"message": "Overloaded"}}\n\n')
    assert error is not None
    with pytest.raises(ad.StreamError, match="overloaded_error: Overloaded") as caught:
        translator.feed(*error)
    assert caught.value.status == 503
    assert caught.value.openai_body()["error"]["type"] == "server_error"


def test_emulated_stream_and_body_give_equal_usage() -> None:
    for extra in ({}, {"tools": [ANTHROPIC_WEATHER]}, {"max_tokens": 3}):
        body = {"model": "claude-sonnet-4", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hi"}],
                **extra}
        message = af.plan_message(body, message_id="msg_01test")
        whole = ad.from_upstream(af.message_body(message), model="claude-sonnet-4")
        validate("CreateChatCompletionResponse", whole)
        chunks, translator = translate(list(af.stream_events(message, chunk_words=2)), include_usage=True)
        assert chunks[-1]["usage"] == whole["usage"]
        assert chunks[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("status", "error_type", "openai_type", "code"), [
    (400, "invalid_request_error", "invalid_request_error", None),
    (401, "authentication_error", "authentication_error", "invalid_api_key"),
    (429, "rate_limit_error", "rate_limit_error", "rate_limit_exceeded"),
    (500, "api_error", "server_error", "api_error"),
    (529, "overloaded_error", "server_error", "overloaded"),
])
def test_errors_map_to_openai_shape(status: int, error_type: str, openai_type: str, code: str | None) -> None:
    raw = json.dumps({"type": "error", "error": {"type": error_type, "message": "boom"},
                      "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}).encode()
    assert ad.error_to_openai(status, raw) == {"error": {"message": "boom", "type": openai_type, "param": None,
                                                         "code": code}}


def test_non_json_errors_and_the_529_status() -> None:
    assert ad.error_to_openai(529, b"<html>")["error"]["code"] == "overloaded"
    assert ad.error_to_openai(418, b"")["error"]["type"] == "invalid_request_error"
    assert (ad.openai_status(529), ad.openai_status(429)) == (503, 429)
    assert ad.request_headers("k") == {"x-api-key": "k", "anthropic-version": "2023-06-01",
                                       "content-type": "application/json"}


# --------------------------------------------------------------------------- inbound: Anthropic caller -> OpenAI


INBOUND = {
    "model": "gpt-4o-mini",
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "You are a weather bot."}],
    "messages": [
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "text", "text": "What's the weather like where this photo was taken?"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather",
             "input": {"location": "San Francisco, CA"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
            {"type": "text", "text": "And tomorrow?"}]},
    ],
    "tools": [ANTHROPIC_WEATHER],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "stop_sequences": ["\n\nHuman:"], "temperature": 0.5, "metadata": {"user_id": "u-1"}, "stream": True,
}


def test_inbound_request_becomes_a_valid_openai_request() -> None:
    out = inbound.request_to_openai(INBOUND)
    validate("CreateChatCompletionRequest", out)
    assert oa.validate_chat_request(out) is None
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "tool", "user"]
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert out["messages"][1]["content"][0] == image
    assert out["messages"][2]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                               "arguments": '{"location":"San Francisco, CA"}'}
    assert out["messages"][3] == {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9",
                                  "content": "15 degrees"}
    assert out["tools"] == [WEATHER] and out["tool_choice"] == "auto" and out["parallel_tool_calls"] is False
    assert (out["stop"], out["user"], out["stream_options"]) == (["\n\nHuman:"], "u-1", {"include_usage": True})


@pytest.mark.parametrize(("extra", "param"), [
    ({"top_k": 5}, "top_k"), ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
])
def test_inbound_unsupported_parameters(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(ad.UnsupportedParameter, match="'gpt-4o-mini'") as caught:
        inbound.request_to_openai({**INBOUND, **extra})
    assert caught.value.param == param


def test_inbound_response_is_an_anthropic_message() -> None:
    openai_body = inbound.request_to_openai({**INBOUND, "stream": False})
    for tools in (False, True):
        request = openai_body if tools else {**openai_body, "tools": None}
        reply = oa.plan_reply(request)
        completion = oa.completion_body(reply, completion_id="chatcmpl-abc", created=1)
        message = inbound.response_from_openai(completion, model="gpt-4o-mini")
        Message.model_validate(message)
        assert message["id"] == "msg_abc" and message["usage"]["input_tokens"] == reply.prompt_tokens
        assert message["usage"]["output_tokens"] == reply.completion_tokens
        assert message["stop_reason"] == ("tool_use" if tools else "end_turn")


def test_inbound_stream_events_are_in_order_and_accumulate_to_the_usage() -> None:
    request = {**inbound.request_to_openai(INBOUND), "messages": [{"role": "user", "content": "Hi"}]}
    for tools in (False, True):
        reply = oa.plan_reply(request if tools else {**request, "tools": None})
        chunks = oa.stream_chunks(reply, completion_id="chatcmpl-abc", created=1, chunk_words=2, include_usage=True)
        stream = inbound.StreamToAnthropic(model="gpt-4o-mini")
        events = [e for chunk in chunks for e in stream.feed(chunk)] + stream.finish()
        names = [name for name, _ in events]
        assert names[:3] == ["message_start", "ping", "content_block_start"]
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        snapshot = None
        buffers: dict[int, bytes] = {}
        for name, data in events:
            assert data["type"] == name
            if name == "ping":  # the SDK drops pings before parsing events
                continue
            snapshot = accumulate_event(event=STREAM_EVENT.validate_python(data), current_snapshot=snapshot,
                                        json_bufs=buffers)
        assert snapshot is not None and snapshot.usage.input_tokens == reply.prompt_tokens
        assert snapshot.usage.output_tokens == reply.completion_tokens
        assert snapshot.stop_reason == ("tool_use" if tools else "end_turn")
        if tools:
            assert reply.tool_call is not None
            assert snapshot.content[0].type == "tool_use"
        else:
            assert snapshot.content[0].type == "text" and snapshot.content[0].text == reply.content
        assert inbound.encode_event(*events[-1]) == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def test_inbound_errors_take_anthropic_shape() -> None:
    body = {"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                      "code": "rate_limit_exceeded"}}
    assert inbound.error_from_openai(429, body) == {"type": "error", "error": {"type": "rate_limit_error",
                                                                               "message": "Rate limit reached"}}
    assert inbound.error_from_openai(503, {})["error"]["type"] == "overloaded_error"
    assert inbound.error_from_openai(404, {"error": {"message": "no"}})["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(("body", "param"), [
    ([], None), ({"max_tokens": 1, "messages": MESSAGES_OK}, "model"),
    ({"model": "m", "messages": MESSAGES_OK}, "max_tokens"),
    ({"model": "m", "max_tokens": 0, "messages": MESSAGES_OK}, "max_tokens"),
    ({"model": "m", "max_tokens": 1, "messages": []}, "messages"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user"}]}, "messages.0.content"),
    ({"model": "m", "max_tokens": 1, "messages": MESSAGES_OK, "stream": "yes"}, "stream"),
])
def test_inbound_requests_are_checked(body: Any, param: str | None) -> None:
    with pytest.raises(ad.TranslationError) as caught:
        inbound.check_request(body)
    assert caught.value.param == param


def test_inbound_check_passes_the_documented_request_and_parse_event_refuses_garbage() -> None:
    assert inbound.check_request(INBOUND) is INBOUND
    with pytest.raises(ad.StreamError, match="malformed message_start event"):
        ad.parse_event(b"event: message_start\ndata: {oops\n\n")
    assert ad.parse_event(b": comment\n\n") is None
