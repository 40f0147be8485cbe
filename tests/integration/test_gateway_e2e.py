"""End to end with the official openai SDK: proxy → emulator → trace in ClickHouse, inline trace equal."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import openai
import pytest

from catalog import loader, pricing
from launcher.stack import Stack
from tests.conftest import http_json, trace_row, wait_for
from tests.openapi import validate

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three rivers."}]
TRACE = {"Routeur-Trace": "true"}


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"], max_retries=0)


def _expected_cost(model: str, usage: Any) -> Decimal:
    route = loader.load().model(model).routes[0]  # type: ignore[union-attr]
    return pricing.cost_usd(route, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)


def _stored(stack: Stack, request_id: str) -> dict[str, Any]:
    status, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(
        http_json("GET", f"{stack.proxy_url}/v1/traces/{request_id}", token=stack.secrets["ROUTEUR_API_KEY"])))
    assert status == 200
    return body  # type: ignore[no-any-return]


def test_non_streaming_trace_reaches_clickhouse_and_equals_inline(stack: Stack, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers=TRACE)
    completion = raw.parse()
    body = completion.model_dump(exclude_unset=True)
    inline = body.pop("routeur_trace")
    validate("CreateChatCompletionResponse", body)

    assert inline["request_id"] == raw.headers["x-request-id"]
    assert (inline["model"], inline["provider"], inline["status_code"]) == ("gpt-4o-mini", "openai", 200)
    assert inline["prompt_tokens"] == completion.usage.prompt_tokens > 0
    assert inline["completion_tokens"] == completion.usage.completion_tokens > 0
    assert inline["total_tokens"] == completion.usage.total_tokens
    assert Decimal(str(inline["cost_usd"])) == _expected_cost("gpt-4o-mini", completion.usage)
    assert inline["stream"] is False and inline["latency_ms"] > 0

    assert _stored(stack, inline["request_id"]) == inline
    row = wait_for(lambda: trace_row(stack, inline["request_id"]))
    assert (row["model"], row["provider"], row["status_code"], row["stream"]) == ("gpt-4o-mini", "openai", 200, False)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (inline["prompt_tokens"], inline["completion_tokens"])
    assert Decimal(str(row["cost_usd"])) == Decimal(str(inline["cost_usd"]))
    assert row["latency_ms"] == pytest.approx(inline["latency_ms"])
    assert row["organization_id"] == "org_demo" and row["api_key_id"].startswith("key_")


def test_streaming_trace_and_usage_match_non_streaming(stack: Stack, client: openai.OpenAI) -> None:
    reference = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}, extra_headers=TRACE))
    for chunk in chunks:
        payload = chunk.model_dump(exclude_unset=True)
        payload.pop("routeur_trace", None)
        validate("CreateChatCompletionStreamResponse", payload)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reference.choices[0].message.content
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].usage == reference.usage
    inline = chunks[-1].model_extra["routeur_trace"]
    assert inline["stream"] is True and inline["ttft_ms"] is not None
    assert (inline["prompt_tokens"], inline["completion_tokens"]) == (reference.usage.prompt_tokens,
                                                                      reference.usage.completion_tokens)
    assert Decimal(str(inline["cost_usd"])) == _expected_cost("gpt-4o", reference.usage)
    assert _stored(stack, inline["request_id"]) == inline
    row = wait_for(lambda: trace_row(stack, inline["request_id"]))
    assert row["stream"] is True and row["total_tokens"] == reference.usage.total_tokens


def test_stream_usage_is_traced_even_when_caller_did_not_ask(stack: Stack, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                                 extra_headers=TRACE))
    assert all(c.usage is None for c in chunks), "no usage chunk unless the caller asked for it"
    inline = chunks[-1].model_extra["routeur_trace"]
    assert inline["prompt_tokens"] > 0 and inline["completion_tokens"] > 0 and inline["usage_estimated"] is False


def test_models_list_is_openai_shaped(stack: Stack, client: openai.OpenAI) -> None:
    status, body = http_json("GET", f"{stack.proxy_url}/v1/models", token=stack.secrets["ROUTEUR_API_KEY"])
    assert status == 200
    validate("ListModelsResponse", body)
    ids = {model.id for model in client.models.list()}
    assert {"gpt-4o-mini", "gpt-4o", "deepseek-chat"} <= ids


@pytest.mark.parametrize(("headers", "body", "status", "code"), [
    ({"Authorization": "Bearer rk-wrong"}, {"model": "gpt-4o-mini", "messages": MESSAGES}, 401, "invalid_api_key"),
    ({}, {"model": "gpt-4o-mini", "messages": MESSAGES}, 401, "invalid_api_key"),
    (None, {"model": "no-such-model", "messages": MESSAGES}, 404, "model_not_found"),
    (None, {"model": "gpt-4o-mini"}, 400, "invalid_request"),
    (None, {"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]}, 400, "invalid_request"),
    (None, {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": -3}, 400, "invalid_request"),
    (None, [1, 2, 3], 400, "invalid_request"),
])
def test_bad_requests_get_openai_errors(stack: Stack, headers: dict[str, str] | None, body: Any, status: int,
                                        code: str) -> None:
    token = None if headers is not None else stack.secrets["ROUTEUR_API_KEY"]
    got, error = http_json("POST", f"{stack.proxy_url}/v1/chat/completions", token=token, body=body,
                           headers=headers)
    assert got == status and error["error"]["code"] == code
    validate("ErrorResponse", error)


def test_malformed_json_unknown_path_and_method(stack: Stack) -> None:
    import urllib.request

    key = stack.secrets["ROUTEUR_API_KEY"]
    request = urllib.request.Request(f"{stack.proxy_url}/v1/chat/completions", data=b"{not json", method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
        raise AssertionError("expected HTTP 400")
    except urllib.error.HTTPError as error:
        assert error.code == 400
        validate("ErrorResponse", __import__("json").loads(error.read()))
    status, body = http_json("GET", f"{stack.proxy_url}/v1/nope", token=key)
    assert status == 404 and body["error"]["code"] == "unknown_url"
    status, body = http_json("GET", f"{stack.proxy_url}/v1/chat/completions", token=key)
    assert status == 405 and body["error"]["type"] == "invalid_request_error"
    status, body = http_json("GET", f"{stack.proxy_url}/v1/traces/..%2F..%2Fetc%2Fpasswd", token=key)
    assert status == 404


def test_upstream_failure_is_passed_through_and_traced(stack: Stack, client: openai.OpenAI) -> None:
    """A model with a single route: its upstream's error reaches the caller, OpenAI-shaped, and is traced."""
    emulator = stack.children["emulator"].url
    status, _ = http_json("PUT", f"{emulator}/_emulator/faults/gpt-4.1-nano", body={"status": 503})
    assert status == 200
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="gpt-4.1-nano", messages=MESSAGES)
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    request_id = caught.value.response.headers["x-request-id"]
    validate("ErrorResponse", caught.value.response.json())
    row = wait_for(lambda: trace_row(stack, request_id))
    assert row["status_code"] == 503 and row["provider"] == "openai" and row["cost_usd"] == 0


def test_failing_primary_is_served_by_same_family_fallback(stack: Stack, client: openai.OpenAI) -> None:
    emulator = stack.children["emulator"].url
    http_json("PUT", f"{emulator}/_emulator/faults/deepseek-chat", body={"status": 503})
    try:
        completion = client.chat.completions.create(model="deepseek-chat", messages=MESSAGES, extra_headers=TRACE)
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    inline = completion.model_extra["routeur_trace"]
    assert (inline["status_code"], inline["provider"], inline["model"]) == (200, "together", "deepseek-chat")
    assert inline["route"] == "deepseek/deepseek-chat" and inline["route_reason"] == "default"
    assert inline["fallback"] == "together/deepseek-ai/DeepSeek-V3; error:503"
    assert [(a["provider"], a["status_code"]) for a in inline["attempts"]] == [("deepseek", 503), ("together", 200)]
    route = loader.load().model("deepseek-chat").routes[1]  # type: ignore[union-attr]
    assert Decimal(str(inline["cost_usd"])) == pricing.cost_usd(
        route, prompt_tokens=completion.usage.prompt_tokens, completion_tokens=completion.usage.completion_tokens)
    assert _stored(stack, inline["request_id"]) == inline


def test_mid_stream_drop_ends_stream_with_error_and_is_traced(stack: Stack, client: openai.OpenAI) -> None:
    emulator = stack.children["emulator"].url
    http_json("PUT", f"{emulator}/_emulator/faults/mistral-small-latest", body={"drop_after_chunks": 2})
    try:
        with pytest.raises(openai.APIError):
            for _ in client.chat.completions.create(model="mistral-small", messages=MESSAGES, stream=True):
                pass
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    rows = wait_for(lambda: [r for r in _recent(stack) if r["model"] == "mistral-small" and r["status_code"] == 502])
    assert rows[0]["error_code"] == "upstream_stream_interrupted"


def _recent(stack: Stack) -> list[dict[str, Any]]:
    status, body = http_json("GET", f"{stack.proxy_url}/v1/logs?limit=20", token=stack.secrets["ROUTEUR_API_KEY"])
    assert status == 200
    return body["data"]  # type: ignore[no-any-return]


def test_logs_are_scoped_and_paginated(stack: Stack, client: openai.OpenAI) -> None:
    for _ in range(3):
        client.chat.completions.create(model="llama-3.3-70b", messages=MESSAGES)
    key, admin = stack.secrets["ROUTEUR_API_KEY"], stack.secrets["ROUTEUR_ADMIN_TOKEN"]
    url = f"{stack.proxy_url}/v1/logs?model=llama-3.3-70b&limit=2"
    first = wait_for(lambda: (lambda r: r[1] if len(r[1]["data"]) == 2 and r[1]["next_cursor"] else None)(
        http_json("GET", url, token=key)))
    status, second = http_json("GET", f"{url}&cursor={first['next_cursor']}", token=key)
    assert status == 200 and len(second["data"]) >= 1
    ids = [t["request_id"] for t in first["data"] + second["data"]]
    assert len(ids) == len(set(ids)) and ids == sorted(ids, reverse=True)
    status, admin_view = http_json("GET", url, token=admin)
    assert status == 200 and len(admin_view["data"]) == 2
    status, body = http_json("GET", f"{url}&cursor=1%3BDROP%20TABLE%20traces", token=key)
    assert status == 400 and body["error"]["param"] == "cursor"


def test_upstream_requests_are_valid_openai_requests(stack: Stack, client: openai.OpenAI) -> None:
    emulator = stack.children["emulator"].url
    http_json("DELETE", f"{emulator}/_emulator/requests")
    client.chat.completions.create(model="gpt-4.1-mini", messages=MESSAGES, max_tokens=20, temperature=0.2)
    list(client.chat.completions.create(model="gpt-4.1-mini", messages=MESSAGES, stream=True))
    status, seen = http_json("GET", f"{emulator}/_emulator/requests?limit=10")
    assert status == 200
    bodies = [entry["body"] for entry in seen["requests"]]
    assert len(bodies) == 2
    for body in bodies:
        validate("CreateChatCompletionRequest", body)
        assert body["model"] == "gpt-4.1-mini" and body["messages"] == MESSAGES
    assert bodies[0]["max_tokens"] == 20 and "stream" not in bodies[0]
    assert bodies[1]["stream"] is True and bodies[1]["stream_options"] == {"include_usage": True}


def test_body_over_the_limit_is_413(stack: Stack) -> None:
    huge = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * (3 << 19)}]}
    status, body = http_json("POST", f"{stack.proxy_url}/v1/chat/completions", token=stack.secrets["ROUTEUR_API_KEY"],
                             body=huge)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    validate("ErrorResponse", body)


def test_stream_without_upstream_usage_is_estimated_never_zero(stack: Stack, client: openai.OpenAI) -> None:
    emulator = stack.children["emulator"].url
    http_json("PUT", f"{emulator}/_emulator/faults/gpt-4.1-nano", body={"omit_usage": True})
    try:
        chunks = list(client.chat.completions.create(model="gpt-4.1-nano", messages=MESSAGES, stream=True,
                                                     stream_options={"include_usage": True}, extra_headers=TRACE))
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    inline = chunks[-1].model_extra["routeur_trace"]
    assert inline["usage_estimated"] is True and inline["prompt_tokens"] > 0
    assert inline["completion_tokens"] == -(-len(text) // 4) > 0 and Decimal(str(inline["cost_usd"])) > 0
    row = wait_for(lambda: trace_row(stack, inline["request_id"]))
    assert row["usage_estimated"] is True and row["completion_tokens"] == inline["completion_tokens"]
