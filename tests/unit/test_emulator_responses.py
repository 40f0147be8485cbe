"""The emulator's Responses API (services/emulator/responses_format.py): CreateResponse bodies checked against
the spec, deterministic answers whose `response` objects and stream events validate against the spec's
`Response` / `ResponseStreamEvent` and parse strictly under the openai SDK's types; the Responses pass-through
target URLs of OpenAI and Azure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from services.common.settings import Secret
from services.emulator import openai_format as oa
from services.emulator import openapi_spec
from services.emulator import responses_format as rf
from services.emulator.openai_validate import OpenAIValidator
from services.proxy.adapters.openai import AzureDialect, OpenAIDialect, speaks_responses
from services.proxy.providers import Target
from tests.openapi import validate
from tests.unit.test_emulator_openai_sdk_types import undeclared

TOOL = {"type": "function", "name": "get_weather", "strict": True, "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}}
BODIES: dict[str, dict[str, Any]] = {
    "text": {"model": "gpt-4o-mini", "input": "Describe a harbor.", "instructions": "Be brief."},
    "reasoning": {"model": "o4-mini", "input": [{"role": "user", "content": "Think."}], "reasoning": {"effort": "low"}},
    "truncated": {"model": "gpt-4o", "input": "Long.", "max_output_tokens": 16},
    "tool": {"model": "gpt-4o", "input": "Weather in Lyon?", "tools": [TOOL]},
    "tool_output": {"model": "gpt-4o", "tools": [TOOL], "input": [
        {"role": "user", "content": "Weather in Lyon?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Lyon"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "12C"}]},
}
_events = TypeAdapter(ResponseStreamEvent)
# the spec requires `name` on function_call_arguments.done; openai 3.63's type does not declare it yet
_SDK_LAGS = {"response.function_call_arguments.done": ["$.name"]}


@pytest.fixture(scope="module")
def validator() -> OpenAIValidator:
    return OpenAIValidator(Path(openapi_spec.default_path()))


def _reply(body: dict[str, Any]) -> oa.Reply:
    return oa.plan_reply(rf.chat_view(body, rf.conversation(body)))


@pytest.mark.parametrize("name", sorted(BODIES))
def test_answers_validate_and_parse_strictly(validator: OpenAIValidator, name: str) -> None:
    body = BODIES[name]
    assert validator.responses(body) is None
    reply = _reply(body)
    response = rf.response_body(reply, body, response_id="resp_1", created=1)
    validate("Response", response)
    assert undeclared(Response.model_validate(response)) == []
    events = list(rf.stream_events(reply, body, response_id="resp_1", created=1))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        validate("ResponseStreamEvent", event)
        assert undeclared(_events.validate_python(event)) == _SDK_LAGS.get(event["type"], [])
    assert events[-1]["response"] == response
    streamed = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert streamed == Response.model_validate(response).output_text


def test_tool_turns_call_then_answer() -> None:
    first = rf.response_body(_reply(BODIES["tool"]), BODIES["tool"], response_id="resp_1", created=1)
    assert [item["type"] for item in first["output"]] == ["function_call"]
    assert json.loads(first["output"][0]["arguments"])["city"]
    second = rf.response_body(_reply(BODIES["tool_output"]), BODIES["tool_output"], response_id="resp_2", created=1)
    assert [item["type"] for item in second["output"]] == ["message"] and second["status"] == "completed"


@pytest.mark.parametrize(("body", "expected"), [
    ({"model": "gpt-4o-mini", "input": "x", "frobnicate": 1}, "Unrecognized request argument supplied: frobnicate"),
    ({"model": "gpt-4o-mini", "input": 3}, "Invalid type for 'input'"),
    ({"model": "gpt-4o-mini", "input": "x", "temperature": "hot"}, "Invalid type for 'temperature'"),
])
def test_bodies_the_spec_refuses_get_openais_400(validator: OpenAIValidator, body: dict[str, Any],
                                                 expected: str) -> None:
    error = validator.responses(body)
    assert error is not None and error["error"]["message"].startswith(expected)


def test_stored_responses_carry_the_conversation() -> None:
    store = rf.ResponseStore(size=1)
    body = BODIES["text"]
    messages = rf.conversation(body)
    store.put("resp_a", rf.stored_messages(messages, _reply(body)))
    follow = {"model": "gpt-4o-mini", "input": "And then?", "previous_response_id": "resp_a"}
    history = store.get("resp_a")
    assert history is not None
    assert [m["role"] for m in rf.conversation(follow, history)] == ["user", "assistant", "user"]
    store.put("resp_b", [])
    assert store.get("resp_a") is None  # the oldest is forgotten
    assert rf.previous_not_found("resp_a")["error"]["param"] == "previous_response_id"


def test_pass_through_targets() -> None:
    openai_target = Target("openai", "https://api.openai.com/v1", Secret("sk"), "openai", emulated=False)
    azure = Target("azure", "https://r.openai.azure.com", Secret("az"), "azure", emulated=False,
                   api_version="2024-10-21")
    deepseek = Target("deepseek", "https://api.deepseek.com", Secret("ds"), "openai", emulated=False)
    assert speaks_responses(openai_target) and speaks_responses(azure) and not speaks_responses(deepseek)
    call = OpenAIDialect().responses_request(openai_target, {"model": "gpt-4o-mini", "input": "x"}, "gpt-4o-mini")
    assert call.url == "https://api.openai.com/v1/responses" and call.headers["Authorization"] == "Bearer sk"
    call = AzureDialect().responses_request(azure, {"model": "gpt-4o-mini", "input": "x"}, "my-deployment")
    assert call.url == "https://r.openai.azure.com/openai/v1/responses" and call.headers["api-key"] == "az"
    assert "Authorization" not in call.headers and json.loads(call.body)["model"] == "my-deployment"
