"""One model of each family through the official anthropic SDK on /v1/messages: answers, streams, tools, exact cost."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import anthropic
import pytest
from anthropic.types import Message, ToolUseBlock

from catalog import loader, pricing
from launcher.stack import Stack
from tests.conftest import http_json, trace_row, wait_for

FAMILY_MODELS = ["claude-sonnet-4.5", "gpt-4o-mini", "gemini-2.5-flash", "deepseek-chat", "mistral-small",
                 "llama-3.3-70b"]
SYSTEM = "Answer briefly."
MESSAGES: list[Any] = [{"role": "user", "content": "What is a river delta?"}]
TOOLS: list[Any] = [{"name": "get_weather", "description": "Weather for a city",
                     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                      "required": ["city"]}}]
TRACE = {"Routeur-Trace": "true"}


@pytest.fixture
def client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.proxy_url, api_key=stack.secrets["ROUTEUR_API_KEY"], max_retries=0)


def _text(message: Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def _prompt_tokens(usage: Any) -> int:
    """OpenAI-style prompt tokens: Anthropic's input_tokens excludes cache reads and writes."""
    return int(usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0))


def _cost(model_id: str, usage: Any) -> Decimal:
    model = loader.load().model(model_id)
    assert model is not None
    return pricing.cost_usd(model.routes[0], prompt_tokens=_prompt_tokens(usage), completion_tokens=usage.output_tokens,
                            cached_tokens=usage.cache_read_input_tokens or 0)


def _check_trace(stack: Stack, request_id: str | None, model_id: str, usage: Any, *, stream: bool) -> dict[str, Any]:
    assert request_id
    route = loader.load().model(model_id).routes[0]  # type: ignore[union-attr]
    row = wait_for(lambda: trace_row(stack, request_id))
    assert (row["endpoint"], row["model"], row["provider"], row["upstream_model"]) == \
        ("/v1/messages", model_id, route.provider, route.upstream_model)
    assert (row["status_code"], bool(row["stream"])) == (200, stream)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (_prompt_tokens(usage), usage.output_tokens)
    assert row["cached_tokens"] == (usage.cache_read_input_tokens or 0)
    assert Decimal(str(row["cost_usd"])) == _cost(model_id, usage) > 0
    return row


@pytest.mark.parametrize("model_id", FAMILY_MODELS)
def test_family_message_stream_and_trace(stack: Stack, client: anthropic.Anthropic, model_id: str) -> None:
    message = client.messages.create(model=model_id, max_tokens=256, system=SYSTEM, messages=MESSAGES)
    assert (message.type, message.role, message.model) == ("message", "assistant", model_id)
    assert message.id.startswith("msg_") and message.stop_reason == "end_turn" and _text(message)
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    _check_trace(stack, message._request_id, model_id, message.usage, stream=False)

    with client.messages.stream(model=model_id, max_tokens=256, system=SYSTEM, messages=MESSAGES) as stream:
        streamed_text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers.get("request-id")
        assert stream.response.headers["content-type"].startswith("text/event-stream")
    assert streamed_text == _text(final) == _text(message)
    assert final.stop_reason == "end_turn" and final.model == model_id
    assert (final.usage.input_tokens, final.usage.output_tokens) == (message.usage.input_tokens,
                                                                     message.usage.output_tokens)
    _check_trace(stack, request_id, model_id, final.usage, stream=True)


def _first_turn(client: anthropic.Anthropic, model_id: str, messages: list[Any], stream: bool) -> Message:
    if not stream:
        return client.messages.create(model=model_id, max_tokens=256, messages=messages, tools=TOOLS)
    with client.messages.stream(model=model_id, max_tokens=256, messages=messages, tools=TOOLS) as events:
        return events.get_final_message()


@pytest.mark.parametrize("model_id", FAMILY_MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_family_tool_use_round_trip(client: anthropic.Anthropic, model_id: str, stream: bool) -> None:
    messages: list[Any] = [{"role": "user", "content": "What's the weather in Lyon?"}]
    first = _first_turn(client, model_id, messages, stream)
    assert first.stop_reason == "tool_use"
    calls = [block for block in first.content if isinstance(block, ToolUseBlock)]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].id
    assert isinstance(calls[0].input, dict) and isinstance(calls[0].input["city"], str)
    messages.append({"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": calls[0].id, "content": '{"temp_c": 12}'}]})
    second = client.messages.create(model=model_id, max_tokens=256, messages=messages, tools=TOOLS)
    assert second.stop_reason == "end_turn" and _text(second)


@pytest.mark.parametrize("model_id", ["claude-sonnet-4.5", "gpt-4o-mini"])
def test_inline_trace(client: anthropic.Anthropic, model_id: str) -> None:
    message = client.messages.create(model=model_id, max_tokens=256, messages=MESSAGES, extra_headers=TRACE)
    inline = (message.model_extra or {})["routeur_trace"]
    assert inline["request_id"] == message._request_id and inline["endpoint"] == "/v1/messages"
    assert inline["completion_tokens"] == message.usage.output_tokens
    assert Decimal(str(inline["cost_usd"])) == _cost(model_id, message.usage)

    with client.messages.with_streaming_response.create(model=model_id, max_tokens=256, messages=MESSAGES,
                                                        stream=True, extra_headers=TRACE) as response:
        events = [(sse.event, sse.json()) for sse in anthropic.Stream.raw_events(response.http_response)]
    names = [name for name, _ in events]
    assert names[0] == "message_start" and "ping" in names  # a Claude route's own order passes through natively
    assert names[-3:] == ["message_delta", "message_stop", "routeur_trace"]
    streamed = events[-1][1]["routeur_trace"]
    assert streamed["stream"] is True and streamed["completion_tokens"] == message.usage.output_tokens
    assert events[-3][1]["usage"]["output_tokens"] == message.usage.output_tokens

    with client.messages.stream(model=model_id, max_tokens=256, messages=MESSAGES, extra_headers=TRACE) as stream:
        assert _text(stream.get_final_message()) == _text(message)
    raw = list(client.messages.create(model=model_id, max_tokens=256, messages=MESSAGES, stream=True,
                                      extra_headers=TRACE))
    assert [event.type for event in raw[-3:]] == ["message_delta", "message_stop", "routeur_trace"]


def test_bad_key_is_authentication_error(stack: Stack) -> None:
    bad = anthropic.Anthropic(base_url=stack.proxy_url, api_key="rk-not-a-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        bad.messages.create(model="claude-sonnet-4.5", max_tokens=64, messages=MESSAGES)
    body = caught.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert caught.value.request_id and body["request_id"] == caught.value.request_id


def _key_with(stack: Stack, *, topup: str, **limits: Any) -> str:
    def admin(path: str, body: Any) -> tuple[int, Any]:
        return http_json("POST", f"{stack.children['billing'].url}/v1/admin{path}",
                         token=stack.secrets["ROUTEUR_ADMIN_TOKEN"], body=body)

    org = f"org_{uuid.uuid4().hex[:10]}"
    assert admin("/organizations", {"id": org})[0] == 201
    if Decimal(topup) > 0:
        assert admin(f"/organizations/{org}/topups", {"amount_usd": topup})[0] in (200, 201)
    status, key = admin(f"/organizations/{org}/keys", {"name": "t", **limits})
    assert status == 201, key
    return str(key["secret"])


def test_rate_limit_headers_and_429(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.proxy_url, api_key=_key_with(stack, topup="10", rate_limit_rpm=2),
                                 max_retries=0)
    raw = client.messages.with_raw_response.create(model="deepseek-chat", max_tokens=64, messages=MESSAGES)
    assert raw.headers["x-ratelimit-limit-requests"] == "2" and raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.headers["request-id"] == raw.headers["x-request-id"] and float(raw.headers["x-routeur-overhead-ms"]) >= 0
    assert raw.parse().stop_reason == "end_turn"
    with client.messages.stream(model="deepseek-chat", max_tokens=64, messages=MESSAGES) as stream:
        stream.get_final_message()
        assert stream.response.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="deepseek-chat", max_tokens=64, messages=MESSAGES)
    assert caught.value.response.json()["error"]["type"] == "rate_limit_error"
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_empty_wallet_is_402(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.proxy_url, api_key=_key_with(stack, topup="0"), max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="deepseek-chat", max_tokens=64, messages=MESSAGES)
    assert caught.value.status_code == 402 and caught.value.response.json()["error"]["type"] == "permission_error"


def test_unknown_model_is_not_found(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=64, messages=MESSAGES)
    error = caught.value.response.json()["error"]
    assert error["type"] == "not_found_error" and "no-such-model" in error["message"]


def test_missing_max_tokens_is_bad_request(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:  # an explicit timeout: the SDK's default uses max_tokens
        client.messages.create(model="gpt-4o-mini", max_tokens=anthropic.omit, messages=MESSAGES,  # type: ignore[call-overload]
                               timeout=30)
    error = caught.value.response.json()["error"]
    assert error["type"] == "invalid_request_error" and "max_tokens" in error["message"]


def test_unsupported_parameter_names_it(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="gpt-4o-mini", max_tokens=2048, messages=MESSAGES,
                               thinking={"type": "enabled", "budget_tokens": 1024})
    error = caught.value.response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "'thinking'" in error["message"] and "gpt-4o-mini" in error["message"]


def test_overloaded_anthropic_route_is_served_by_bedrock(stack: Stack, client: anthropic.Anthropic) -> None:
    emulator = stack.children["emulator"].url
    upstream = loader.load().model("claude-sonnet-4.5").routes[0].upstream_model  # type: ignore[union-attr]
    http_json("PUT", f"{emulator}/_emulator/faults/{upstream}", body={"status": 529, "fail_times": 1})
    try:
        raw = client.messages.with_raw_response.create(model="claude-sonnet-4.5", max_tokens=64, messages=MESSAGES)
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    assert raw.parse().stop_reason in ("end_turn", "max_tokens")
    status, trace = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(http_json(
        "GET", f"{stack.proxy_url}/v1/traces/{raw.headers['x-request-id']}", token=stack.secrets["ROUTEUR_API_KEY"])))
    assert trace["provider"] == "bedrock" and trace["fallback"].endswith("; error:529")


def test_stream_cut_short_is_an_error_event(stack: Stack, client: anthropic.Anthropic) -> None:
    emulator = stack.children["emulator"].url
    upstream = loader.load().model("mistral-small").routes[0].upstream_model  # type: ignore[union-attr]
    http_json("PUT", f"{emulator}/_emulator/faults/{upstream}", body={"drop_after_chunks": 2, "fail_times": 1})
    try:
        with pytest.raises(anthropic.APIStatusError) as caught:  # noqa: PT012
            with client.messages.stream(model="mistral-small", max_tokens=256, messages=MESSAGES) as stream:
                stream.get_final_message()
        assert isinstance(caught.value.body, dict) and caught.value.body["error"]["type"] == "api_error"
        request_id = caught.value.response.headers["request-id"]
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    row = wait_for(lambda: trace_row(stack, request_id))
    assert row["status_code"] == 502 and row["endpoint"] == "/v1/messages"
    # the upstream sent some text before the cut and no usage: that part is estimated, flagged, and billed
    assert row["usage_estimated"] is True and Decimal(str(row["cost_usd"])) > 0


@pytest.mark.parametrize(("extra", "param"), [
    ({"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}, "output_config.format"),
    ({"output_config": {"effort": "low"}}, "output_config.effort"),
    ({"speed": "fast"}, "speed"),
    ({"inference_geo": "us"}, "inference_geo"),
])
def test_fields_routeur_cannot_honour_are_refused_not_dropped(client: anthropic.Anthropic, extra: dict[str, Any],
                                                              param: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="gpt-4o-mini", max_tokens=64, messages=MESSAGES, extra_body=extra)
    error = caught.value.response.json()["error"]
    assert error["type"] == "invalid_request_error" and f"'{param}' is not supported" in error["message"]


@pytest.mark.parametrize("model_id", ["claude-sonnet-4.5", "claude-haiku-4.5", "claude-opus-4.1"])
def test_temperature_with_top_p_is_refused_naming_top_p(stack: Stack, client: anthropic.Anthropic,
                                                        model_id: str) -> None:
    both = {"temperature": 0.5, "top_p": 0.9}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=model_id, max_tokens=64, messages=MESSAGES, extra_body=both)
    assert "'top_p' is not supported" in caught.value.response.json()["error"]["message"]
    status, body = http_json("POST", f"{stack.proxy_url}/v1/chat/completions", token=stack.secrets["ROUTEUR_API_KEY"],
                             body={"model": model_id, "messages": MESSAGES, "max_tokens": 16, **both})
    assert status == 400 and (body["error"]["param"], body["error"]["code"]) == ("top_p", "unsupported_parameter")
    alone = client.messages.create(model=model_id, max_tokens=64, messages=MESSAGES, extra_body={"top_p": 0.9})
    assert alone.stop_reason in ("end_turn", "max_tokens")


def test_models_that_take_both_sampling_parameters_get_both(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="claude-sonnet-4", max_tokens=64, messages=MESSAGES,
                                     extra_body={"temperature": 0.5, "top_p": 0.9})
    assert message.stop_reason in ("end_turn", "max_tokens")
