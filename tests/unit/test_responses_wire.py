"""Responses API ⇄ chat translation (services/proxy/responses_wire.py), without sockets: requests become the chat
bodies the dialects take, refusals name the parameter, replies and every stream event validate against the
spec's `Response` / `ResponseStreamEvent` and parse strictly under the openai SDK's types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from catalog import loader, pricing
from services.proxy import responses
from services.proxy import responses_wire as rw
from services.proxy.billing_client import reservation
from services.proxy.errors import InvalidRequest
from tests.openapi import validate
from tests.unit.test_emulator_openai_sdk_types import undeclared

TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": True,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                       "additionalProperties": False}}
_events = TypeAdapter(ResponseStreamEvent)


def _chat(body: dict[str, Any]) -> dict[str, Any]:
    return rw.parse(json.dumps(body).encode())[1]


def test_string_input_and_instructions_become_system_and_user_messages() -> None:
    chat = _chat({"model": "m", "input": "Hi", "instructions": "Be brief.", "max_output_tokens": 50,
                  "temperature": 0.2, "reasoning": {"effort": "low"}, "metadata": {"k": "v"}, "store": False})
    assert chat == {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "Hi"}],
                    "temperature": 0.2, "max_completion_tokens": 50, "reasoning_effort": "low"}


def test_function_call_round_trip_items_become_tool_call_and_tool_messages() -> None:
    chat = _chat({"model": "m", "tools": [TOOL], "tool_choice": {"type": "function", "name": "get_weather"},
                  "stream": True, "input": [
                      {"role": "user", "content": [{"type": "input_text", "text": "Weather in Lyon?"}]},
                      {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
                       "arguments": '{"city":"Lyon"}', "status": "completed"},
                      {"type": "function_call_output", "call_id": "call_1", "output": "18C"}]})
    assert chat["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Lyon?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"}]
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city", "parameters": TOOL["parameters"], "strict": True}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["stream_options"] == {"include_usage": True}


def test_json_schema_text_format_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    chat = _chat({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "A",
                                                                  "schema": schema, "strict": True}}})
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "A", "schema": schema,
                                                                              "strict": True}}


@pytest.mark.parametrize(("extra", "param"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"store": True}, "store"),
    ({"background": True}, "background"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"reasoning": {"effort": "low", "summary": "auto"}}, "reasoning.summary"),
    ({"include": ["reasoning.encrypted_content"]}, "include"),
    ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0].type"),
])
def test_what_a_translated_route_cannot_honour_is_a_400_naming_it(extra: dict[str, Any], param: str) -> None:
    body = rw.check_request({"model": "m", "input": "x", **extra})  # every route may be tried with it
    refused = rw.refusal(body)
    assert refused is not None and refused.param == param and refused.status == 400
    assert refused.code == "unsupported_parameter"


def test_unknown_fields_are_refused_on_every_route() -> None:
    with pytest.raises(InvalidRequest, match="Unrecognized request argument supplied: frobnicate"):
        rw.parse(b'{"model": "m", "input": "x", "frobnicate": 1}')


def test_translatable_part_leaves_out_state_and_says_when_caller_text_was_left_out() -> None:
    body: dict[str, Any] = {"model": "m", "previous_response_id": "resp_1", "store": True,
                            "tools": [TOOL, {"type": "web_search"}],
                            "input": [{"type": "reasoning", "id": "rs_1", "summary": []},
                                      {"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}
    part, dropped = rw.translatable(body)
    assert part["tools"] == [TOOL] and "store" not in part and "previous_response_id" not in part
    assert len(part["input"]) == 1 and dropped is False  # an opaque reasoning item carries no caller text
    body["input"].append({"role": "user", "content": [{"type": "input_file", "file_data": "secret"}]})
    assert rw.translatable(body)[1] is True
    assert rw.refusal(rw.translatable(body)[0]) is None


COMPLETION: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "m",
              "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                  "role": "assistant", "content": "Checking.", "tool_calls": [
                      {"id": "call_9", "type": "function",
                       "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'}}]}}],
              "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                        "prompt_tokens_details": {"cached_tokens": 3},
                        "completion_tokens_details": {"reasoning_tokens": 2}}}


def test_completion_becomes_a_valid_response() -> None:
    settings = rw.echo({"model": "m", "input": "x", "tools": [TOOL], "metadata": {"k": "v"}})
    reply = rw.from_completion(COMPLETION, response_id="resp_01ABC", model="m", settings=settings)
    validate("Response", reply)
    parsed = Response.model_validate(reply)
    assert undeclared(parsed) == []
    assert parsed.output_text == "Checking."
    call = parsed.output[1]
    assert call.type == "function_call" and call.call_id == "call_9" and call.arguments == '{"city":"Lyon"}'
    assert parsed.usage is not None and parsed.usage.input_tokens == 11 and parsed.usage.output_tokens == 7
    assert parsed.usage.input_tokens_details.cached_tokens == 3
    assert parsed.usage.output_tokens_details.reasoning_tokens == 2
    assert parsed.metadata == {"k": "v"} and parsed.status == "completed"


def test_truncated_completion_is_incomplete() -> None:
    completion = {**COMPLETION, "choices": [{"index": 0, "finish_reason": "length",
                                             "message": {"role": "assistant", "content": "Par"}}]}
    reply = rw.from_completion(completion, response_id="resp_1", model="m", settings=rw.echo({}))
    validate("Response", reply)
    assert reply["status"] == "incomplete" and reply["incomplete_details"] == {"reason": "max_output_tokens"}


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else [],
            "usage": usage}


def _check_events(events: list[dict[str, Any]]) -> None:
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        validate("ResponseStreamEvent", event)
        # the spec requires `name` on function_call_arguments.done; openai 3.63's type does not declare it yet
        allowed = ["$.name"] if event["type"] == "response.function_call_arguments.done" else []
        assert undeclared(_events.validate_python(event)) == allowed
        decoded = rw.encode_event(event).decode()
        assert decoded.startswith(f"event: {event['type']}\ndata: ") and decoded.endswith("\n\n")


def test_stream_of_text_and_tool_call_is_the_typed_event_sequence() -> None:
    translator = rw.StreamToResponses(response_id="resp_1", model="m", settings=rw.echo({"tools": [TOOL]}),
                                      created=1)
    events = translator.feed(_chunk({"role": "assistant", "content": "Hel"}))
    events += translator.feed(_chunk({"content": "lo"}))
    events += translator.feed(_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                      "function": {"name": "get_weather", "arguments": ""}}]}))
    events += translator.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}))
    events += translator.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Lyon"}'}}]}))
    events += translator.feed(_chunk({}, "tool_calls"))
    events += translator.feed(_chunk({}, usage=COMPLETION["usage"]))
    events += translator.finish()
    _check_events(events)
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    final = events[-1]["response"]
    assert final["usage"]["input_tokens"] == 11 and final["usage"]["output_tokens"] == 7
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    assert final["output"][1]["arguments"] == '{"city":"Lyon"}'
    assert Response.model_validate(final).output_text == "Hello"


def test_broken_stream_ends_with_error_and_response_failed() -> None:
    translator = rw.StreamToResponses(response_id="resp_1", model="m", settings=rw.echo({}), created=1)
    events = translator.feed(_chunk({"content": "Hi"}))
    events += translator.fail({"message": "the upstream stream ended before completion",
                               "code": "upstream_stream_interrupted"})
    events.append(translator.own_event("routeur_trace", routeur_trace={"request_id": "x"}))
    _check_events(events[:-1])
    assert [e["type"] for e in events[-3:]] == ["error", "response.failed", "routeur_trace"]
    assert events[-1]["sequence_number"] == events[-2]["sequence_number"] + 1


def test_reservation_is_chats_fed_with_the_body_size_and_max_output_tokens() -> None:
    model = loader.load().model("claude-sonnet-4.5")
    assert model is not None
    route = model.routes[0]
    raw = json.dumps({"model": "claude-sonnet-4.5", "input": "x" * 400, "max_output_tokens": 100}).encode()
    usd, tokens = reservation(rw.parse(raw)[1], len(raw), model, route)
    prompt = -(-len(raw) // 4)
    assert (usd, tokens) == (pricing.cost_usd(route, prompt_tokens=prompt, completion_tokens=100), prompt + 100)
    uncapped = json.dumps({"model": "claude-sonnet-4.5", "input": "x"}).encode()
    assert reservation(rw.parse(uncapped)[1], len(uncapped), model, route)[1] == \
        -(-len(uncapped) // 4) + model.max_output_tokens


def test_an_output_budget_over_the_models_cap_is_named_as_the_caller_sent_it() -> None:
    error = InvalidRequest("'max_completion_tokens' is too large: 99999999.", param="max_completion_tokens")
    body = json.loads(responses.render_error(error, "req_1").body)  # type: ignore[arg-type]
    assert body["error"]["param"] == "max_output_tokens" and "'max_output_tokens'" in body["error"]["message"]


def test_usage_of_a_stream_without_its_final_response_is_estimated_from_the_deltas() -> None:
    events = [rw.encode_event({"type": "response.output_text.delta", "sequence_number": 3, "item_id": "m",
                               "output_index": 0, "content_index": 0, "delta": "x" * 10, "logprobs": []}),
              rw.encode_event({"type": "response.function_call_arguments.delta", "sequence_number": 4,
                               "item_id": "fc", "output_index": 1, "delta": "y" * 6})]
    usage = rw.estimate_usage(events, prompt_bytes=40)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (10, 4, 14)


def test_passed_through_usage_becomes_the_traces_usage() -> None:
    raw = json.dumps({"id": "resp_1", "usage": {
        "input_tokens": 11, "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
        "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 18}}).encode()
    usage = rw.reply_usage(raw)
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cached_tokens,
            usage.reasoning_tokens) == (11, 7, 18, 3, 2)
    info = rw.event_info(b"event: response.completed\ndata: " + json.dumps(
        {"type": "response.completed", "sequence_number": 9, "response": json.loads(raw)}).encode() + b"\n\n")
    assert info is not None and info.type == "response.completed" and info.sequence_number == 9
    assert rw.chat_usage(info.response.usage if info.response else None) == usage
