"""POST /v1/responses through the whole gateway with the official openai SDK: one model of every family (and
Claude via a Bedrock fallback), plain and streamed, a function-tool round trip, the trace (inline and stored)
agreeing with the usage at an exact cost, DLP, the payload archive and the refusals of what a route cannot honour."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import openai
import pytest
from openai.types.responses import Response

from catalog import loader, pricing
from launcher.stack import Stack
from tests.conftest import http_json, wait_for
from tests.integration.test_dlp_gateway import ECHO, EMAIL, PROMPT, emulator_saw, org_key, trace
from tests.integration.test_payload_archive import archived_url, fetch
from tests.openapi import validate

FAMILY_MODELS = ["gpt-4o-mini", "claude-sonnet-4.5", "gemini-2.5-flash", "deepseek-chat", "llama-3.3-70b"]
TOOLS: list[Any] = [{"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": False,
                     "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                    "required": ["city"]}}]
# What the OpenAI Agents SDK sends for every function tool: a strict schema closed by additionalProperties.
STRICT_TOOLS: list[Any] = [{**TOOLS[0], "strict": True,
                            "parameters": {**TOOLS[0]["parameters"], "additionalProperties": False}}]
TRACE = {"Routeur-Trace": "true"}
QUESTION = "What is a river delta?"


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"], max_retries=0)


def _cost(model_id: str, usage: Any, route: int = 0) -> Decimal:
    model = loader.load().model(model_id)
    assert model is not None
    return pricing.cost_usd(model.routes[route], prompt_tokens=usage.input_tokens,
                            completion_tokens=usage.output_tokens,
                            cached_tokens=usage.input_tokens_details.cached_tokens,
                            reasoning_tokens=usage.output_tokens_details.reasoning_tokens)


def _stored_trace(stack: Stack, request_id: str) -> dict[str, Any]:
    token = stack.secrets["ROUTEUR_API_KEY"]

    def fetch_trace() -> dict[str, Any] | None:
        status, body = http_json("GET", f"{stack.proxy_url}/v1/traces/{request_id}", token=token)
        return body if status == 200 else None

    return wait_for(fetch_trace)


def _events(client: openai.OpenAI, **params: Any) -> list[dict[str, Any]]:
    """Every event of a streamed response as the JSON the SDK parsed, each checked against the spec."""
    events = [event.model_dump(exclude_unset=True) for event in client.responses.create(stream=True, **params)]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        if event["type"] != "routeur_trace":
            validate("ResponseStreamEvent", event)
    return events


@pytest.mark.parametrize("model_id", FAMILY_MODELS)
def test_family_answers_and_the_trace_agrees_at_an_exact_cost(stack: Stack, client: openai.OpenAI,
                                                              model_id: str) -> None:
    primary = loader.load().model(model_id).routes[0]  # type: ignore[union-attr]
    raw = client.responses.with_raw_response.create(model=model_id, instructions="Answer briefly.", input=QUESTION,
                                                    extra_headers=TRACE)
    response = raw.parse()
    body = response.model_dump(exclude_unset=True)
    inline = body.pop("routeur_trace")
    validate("Response", body)
    assert response.status == "completed" and response.output_text and response.model == model_id
    assert response.usage is not None
    assert inline["request_id"] == raw.headers["x-request-id"] and inline["endpoint"] == "/v1/responses"
    assert (inline["provider"], inline["upstream_model"]) == (primary.provider, primary.upstream_model)
    assert (inline["prompt_tokens"], inline["completion_tokens"], inline["total_tokens"]) == (
        response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens)
    assert Decimal(str(inline["cost_usd"])) == _cost(model_id, response.usage) > 0
    stored = _stored_trace(stack, inline["request_id"])
    assert stored["total_tokens"] == response.usage.total_tokens and stored["provider"] == primary.provider
    assert Decimal(str(stored["cost_usd"])) == _cost(model_id, response.usage)

    events = _events(client, model=model_id, instructions="Answer briefly.", input=QUESTION, extra_headers=TRACE)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-2:] == ["response.completed", "routeur_trace"]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == response.output_text
    final = Response.model_validate(events[-2]["response"])
    assert final.output_text == text and final.usage is not None
    assert final.usage.total_tokens == response.usage.total_tokens
    streamed = events[-1]["routeur_trace"]
    assert streamed["stream"] is True and streamed["total_tokens"] == final.usage.total_tokens
    assert Decimal(str(streamed["cost_usd"])) == _cost(model_id, final.usage)


def _first_turn(client: openai.OpenAI, model_id: str, stream: bool) -> list[Any]:
    """The function_call items of the first turn, as the SDK parsed them."""
    question = "What's the weather in Lyon?"
    response: Response
    if stream:
        # with the inline trace: the SDK's stream helper passes the extra `routeur_trace` event by
        with client.responses.stream(model=model_id, input=question, tools=TOOLS, extra_headers=TRACE) as events:
            for _ in events:
                pass
            response = events.get_final_response()
    else:
        response = client.responses.create(model=model_id, input=question, tools=TOOLS)
    validate("Response", response.model_dump(exclude_unset=True))
    return [item for item in response.output if item.type == "function_call"]


@pytest.mark.parametrize("model_id", FAMILY_MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_function_tool_round_trip(client: openai.OpenAI, model_id: str, stream: bool) -> None:
    calls = _first_turn(client, model_id, stream)
    assert len(calls) >= 1 and calls[0].name == "get_weather" and calls[0].call_id
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    follow_up: list[Any] = [{"role": "user", "content": "What's the weather in Lyon?"}]
    follow_up += [call.model_dump(exclude_unset=True) for call in calls]
    follow_up += [{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 12}'}
                  for call in calls]
    final: Response
    if stream:
        with client.responses.stream(model=model_id, input=follow_up, tools=TOOLS) as events:
            final = events.get_final_response()
    else:
        final = client.responses.create(model=model_id, input=follow_up, tools=TOOLS)
    assert final.status == "completed" and final.output_text
    assert not [item for item in final.output if item.type == "function_call"]


def test_strict_function_tools_reach_claude(client: openai.OpenAI) -> None:
    response = client.responses.create(model="claude-sonnet-4.5", input="What's the weather in Lyon?",
                                       tools=STRICT_TOOLS)
    assert [item.type for item in response.output] == ["function_call"]


@pytest.mark.parametrize("model_id", ["gpt-4o-mini", "gemini-2.5-flash", "deepseek-chat"])
def test_strict_function_tools_elsewhere(client: openai.OpenAI, model_id: str) -> None:
    response = client.responses.create(model=model_id, input="What's the weather in Lyon?", tools=STRICT_TOOLS)
    assert "function_call" in [item.type for item in response.output]


def test_claude_falls_back_to_bedrock_on_responses(stack: Stack, client: openai.OpenAI) -> None:
    emulator = stack.children["emulator"].url
    http_json("PUT", f"{emulator}/_emulator/faults/claude-haiku-4-5-20251001", body={"status": 529})
    try:
        response = client.responses.create(model="claude-haiku-4.5", input=QUESTION, extra_headers=TRACE)
        events = _events(client, model="claude-haiku-4.5", input=QUESTION, extra_headers=TRACE)
        calls = _first_turn(client, "claude-haiku-4.5", stream=True)
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    inline = response.model_extra["routeur_trace"]  # type: ignore[index]
    assert (inline["status_code"], inline["provider"]) == (200, "bedrock")
    assert inline["fallback"].startswith("bedrock/") and response.output_text
    assert response.usage is not None
    assert Decimal(str(inline["cost_usd"])) == _cost("claude-haiku-4.5", response.usage, route=1)
    streamed = events[-1]["routeur_trace"]
    assert streamed["provider"] == "bedrock" and events[-2]["type"] == "response.completed"
    assert calls and calls[0].name == "get_weather"


@pytest.mark.parametrize("stream", [False, True])
def test_dlp_redacts_upstream_and_restores_for_the_caller(stack: Stack, stream: bool) -> None:
    _, key = org_key(stack, dlp_policy="redact_restore")
    caller = openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=key, max_retries=0)
    if stream:
        with caller.responses.stream(model="gpt-4o-mini", input=ECHO + PROMPT) as events:
            text = events.get_final_response().output_text
    else:
        text = caller.responses.create(model="gpt-4o-mini", input=ECHO + PROMPT).output_text
    assert text == PROMPT
    sent = json.dumps(emulator_saw(stack)[0])
    assert EMAIL not in sent and "[EMAIL_1]" in sent


def test_payload_archive_holds_the_responses_layers(stack: Stack) -> None:
    _, key = org_key(stack, dlp_policy="redact", archive_payloads=True)
    caller = openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=key, max_retries=0)
    raw = caller.responses.with_raw_response.create(model="gpt-4o-mini", input=f"{ECHO}mail {EMAIL}")
    request_id = raw.headers["x-request-id"]
    status, archive = fetch(archived_url(stack, key, request_id))
    assert status == 200, archive
    layers = archive["layers"]
    assert json.loads(layers["caller_request"])["input"] == f"{ECHO}mail {EMAIL}"
    assert "[EMAIL_1]" in layers["upstream_request"] and EMAIL not in layers["upstream_request"]
    assert json.loads(layers["caller_response"]) == json.loads(raw.text)
    assert json.loads(raw.text)["object"] == "response"
    assert trace(stack, key, request_id)["endpoint"] == "/v1/responses"


@pytest.mark.parametrize(("params", "param"), [
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"store": True}, "store"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
])
def test_what_a_route_cannot_honour_is_a_400_naming_it(client: openai.OpenAI, params: dict[str, Any],
                                                       param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="claude-sonnet-4.5", input=QUESTION, **params)
    error = caught.value.response.json()["error"]
    assert error["param"] == param and error["code"] == "unsupported_parameter"


def _emulator_requests(stack: Stack, limit: int = 5) -> list[dict[str, Any]]:
    _, seen = http_json("GET", f"{stack.children['emulator'].url}/_emulator/requests?limit={limit}")
    return seen["requests"]  # type: ignore[no-any-return]


def test_openai_routes_pass_the_body_through_with_store_off_by_default(stack: Stack, client: openai.OpenAI) -> None:
    response = client.responses.create(model="gpt-4o-mini", instructions="Answer briefly.", input=QUESTION,
                                       metadata={"team": "search"}, extra_headers=TRACE)
    entry = _emulator_requests(stack, 1)[-1]
    assert entry["path"] == "/v1/responses" and "authorization" not in entry["headers"]
    assert entry["body"]["store"] is False and entry["body"]["metadata"] == {"team": "search"}
    assert entry["body"]["instructions"] == "Answer briefly." and entry["body"]["input"] == QUESTION
    assert response.metadata == {"team": "search"} and response.output_text
    assert response.model_extra["routeur_trace"]["endpoint"] == "/v1/responses"  # type: ignore[index]


def test_previous_response_id_works_where_the_provider_keeps_state(client: openai.OpenAI) -> None:
    first = client.responses.create(model="gpt-4o-mini", input="Remember the word 'delta'.", store=True)
    second = client.responses.create(model="gpt-4o-mini", input="Which word?", previous_response_id=first.id,
                                     extra_headers=TRACE)
    assert second.previous_response_id == first.id and second.output_text
    assert second.model_extra["routeur_trace"]["provider"] == "openai"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:  # store=false (the default here): nothing was kept
        client.responses.create(model="gpt-4o-mini", input="Again?",
                                previous_response_id=client.responses.create(model="gpt-4o-mini", input="x").id)
    assert caught.value.response.json()["error"]["code"] == "previous_response_not_found"


def test_openai_falls_back_to_azure_v1_responses(stack: Stack, client: openai.OpenAI) -> None:
    emulator = stack.children["emulator"].url
    http_json("PUT", f"{emulator}/_emulator/faults/gpt-4o-mini", body={"status": 503, "fail_times": 1})
    try:
        events = _events(client, model="gpt-4o-mini", input=QUESTION, extra_headers=TRACE)
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    streamed = events[-1]["routeur_trace"]
    assert (streamed["provider"], streamed["status_code"]) == ("azure", 200) and streamed["fallback"]
    assert events[-2]["type"] == "response.completed" and events[-2]["response"]["usage"]["total_tokens"] == \
        streamed["total_tokens"] > 0
    entry = _emulator_requests(stack, 1)[-1]
    assert entry["path"] == "/openai/v1/responses" and "api-key" not in entry["headers"]
    assert entry["body"]["model"] == "gpt-4o-mini"


def test_a_key_with_dlp_that_finds_nothing_still_passes_through(stack: Stack) -> None:
    _, key = org_key(stack, dlp_policy="redact_restore")
    caller = openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=key, max_retries=0)
    first = caller.responses.create(model="gpt-4o-mini", input="Nothing sensitive here.", store=True)
    assert _emulator_requests(stack, 1)[-1]["path"] == "/v1/responses"
    with pytest.raises(openai.BadRequestError) as caught:  # redacted: translated, so no server-side state
        caller.responses.create(model="gpt-4o-mini", input=f"mail {EMAIL}", previous_response_id=first.id)
    error = caught.value.response.json()["error"]
    assert error["param"] == "previous_response_id" and "DLP" in error["message"]


def test_an_output_budget_over_the_models_cap_is_a_400_naming_max_output_tokens(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4o-mini", input=QUESTION, max_output_tokens=10**8)
    error = caught.value.response.json()["error"]
    assert error["param"] == "max_output_tokens" and "'max_output_tokens' is too large" in error["message"]


@pytest.mark.parametrize("model_id", ["gpt-4o-mini", "claude-sonnet-4.5"])
def test_a_cut_stream_ends_with_an_error_event_and_a_502_trace(stack: Stack, client: openai.OpenAI,
                                                               model_id: str) -> None:
    upstream = loader.load().model(model_id).routes[0].upstream_model  # type: ignore[union-attr]
    emulator = stack.children["emulator"].url
    http_json("PUT", f"{emulator}/_emulator/faults/{upstream}", body={"drop_after_chunks": 4})
    try:
        raw = client.responses.with_raw_response.create(model=model_id, input=QUESTION, stream=True)
        received = b"".join(raw.http_response.iter_bytes()).decode()
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    events = [json.loads(line[5:]) for line in received.splitlines() if line.startswith("data:")]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        validate("ResponseStreamEvent", event)
    kinds = [e["type"] for e in events]
    assert "response.completed" not in kinds and "error" in kinds
    stored = _stored_trace(stack, raw.headers["x-request-id"])
    assert stored["status_code"] == 502 and stored["endpoint"] == "/v1/responses"


@pytest.mark.parametrize("stream", [False, True])
def test_payload_archive_of_a_passed_through_response(stack: Stack, stream: bool) -> None:
    _, key = org_key(stack, archive_payloads=True)
    caller = openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=key, max_retries=0)
    raw = caller.responses.with_raw_response.create(model="gpt-4o-mini", input="Archive me.", stream=stream)
    received = b"".join(raw.http_response.iter_bytes()).decode() if stream else raw.text
    status, archive = fetch(archived_url(stack, key, raw.headers["x-request-id"]))
    assert status == 200, archive
    layers = archive["layers"]
    assert json.loads(layers["upstream_request"])["input"] == "Archive me."
    assert json.loads(layers["upstream_request"])["store"] is False
    assert layers["caller_response"] == received
    if stream:
        assert "event: response.completed" in layers["upstream_response"]
