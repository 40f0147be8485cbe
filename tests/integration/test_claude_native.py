"""Issue 17: /v1/messages passes Claude Code's requests natively to Claude routes (Anthropic, and Bedrock's
InvokeModel on fallback), through the official anthropic SDK: thinking, cache_control, betas, cache reads priced
exactly, count_tokens, DLP, and the archived upstream request holding the caller's blocks."""

from __future__ import annotations

import functools
import json
import uuid
from decimal import Decimal
from typing import Any

import anthropic
import pytest

from catalog import loader, pricing
from launcher.stack import Stack
from tests.conftest import http_json, trace_row, wait_for
from tests.integration.test_dlp_gateway import ECHO, EMAIL, emulator_saw, org_key
from tests.integration.test_payload_archive import archived_url, fetch

MODEL = "claude-sonnet-4.5"
BETAS = "claude-code-20250219,interleaved-thinking-2025-05-14"


def claude_code_request(nonce: str, *, question: str = "Where is the proxy's pipeline?") -> dict[str, Any]:
    """A request shaped like Claude Code's: system blocks with cache_control, 22 tools (the last one marked),
    thinking with a budget, metadata.user_id, and a user turn with a marked block."""
    tools: list[dict[str, Any]] = [
        # the nonce in the tools too: a tools prefix cached by an earlier test would be a read, not a write
        {"name": f"Tool{i}", "description": f"Tool number {i} of {nonce}: " + "does a careful thing. " * 12,
         "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}
        for i in range(22)]
    tools[-1]["cache_control"] = {"type": "ephemeral"}
    return {
        "model": MODEL, "max_tokens": 8192,
        "system": [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
                   {"type": "text", "text": f"Session {nonce}. " + "Follow the repository's conventions. " * 80,
                    "cache_control": {"type": "ephemeral"}}],
        "tools": tools,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": f"user_{nonce}_account__session_{nonce}"},
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>This is a reminder.</system-reminder>"},
            {"type": "text", "text": question, "cache_control": {"type": "ephemeral"}}]}],
    }


@pytest.fixture
def client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.proxy_url, api_key=stack.secrets["ROUTEUR_API_KEY"], max_retries=0,
                               default_headers={"anthropic-beta": BETAS})


def _route(model_id: str, provider: str) -> Any:
    model = loader.load().model(model_id)
    assert model is not None
    return next(r for r in model.routes if r.provider == provider)


def expected_cost(route: Any, usage: Any) -> Decimal:
    """The catalog's price of an Anthropic usage object, each bucket at its own price."""
    split = usage.cache_creation
    write_1h = split.ephemeral_1h_input_tokens if split is not None else 0
    write = usage.cache_creation_input_tokens or 0
    read = usage.cache_read_input_tokens or 0
    return pricing.cost_usd(route, prompt_tokens=usage.input_tokens + read + write,
                            completion_tokens=usage.output_tokens, cached_tokens=read,
                            cache_write_tokens=write - write_1h, cache_write_1h_tokens=write_1h)


def test_claude_code_stream_thinks_and_the_second_call_reads_the_cache(stack: Stack,
                                                                       client: anthropic.Anthropic) -> None:
    body = claude_code_request(uuid.uuid4().hex)
    finals, request_ids = [], []
    for _ in range(2):
        with client.messages.stream(**body) as stream:
            final = stream.get_final_message()
            request_ids.append(stream.response.headers["request-id"])
        finals.append(final)
    first, second = finals
    for message in finals:
        assert message.content[0].type == "thinking" and message.content[0].signature
    assert first.usage.cache_creation_input_tokens and not first.usage.cache_read_input_tokens
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert not second.usage.cache_creation_input_tokens

    route = _route(MODEL, "anthropic")
    for message, request_id in zip(finals, request_ids, strict=True):
        row = wait_for(functools.partial(trace_row, stack, request_id))
        assert (row["provider"], row["endpoint"], bool(row["stream"])) == ("anthropic", "/v1/messages", True)
        usage = message.usage
        assert row["cached_tokens"] == (usage.cache_read_input_tokens or 0)
        assert row["cache_write_tokens"] + row["cache_write_1h_tokens"] == (usage.cache_creation_input_tokens or 0)
        assert Decimal(str(row["cost_usd"])) == expected_cost(route, usage) > 0
    assert Decimal(str(wait_for(lambda: trace_row(stack, request_ids[1]))["cost_usd"])) < \
        Decimal(str(wait_for(lambda: trace_row(stack, request_ids[0]))["cost_usd"]))

    sent = emulator_saw(stack)[0]  # what Anthropic received: the caller's body, betas in the header
    assert sent["thinking"] == body["thinking"] and sent["system"] == body["system"]
    assert sent["tools"] == body["tools"] and sent["metadata"] == body["metadata"]
    _, seen = http_json("GET", f"{stack.children['emulator'].url}/_emulator/requests?limit=1")
    assert seen["requests"][-1]["headers"].get("anthropic-beta") == BETAS


def test_thinking_blocks_round_trip_in_the_history(client: anthropic.Anthropic) -> None:
    body = claude_code_request(uuid.uuid4().hex)
    body.pop("tools")  # a text answer: a tool call would need its result in the next turn
    first = client.messages.create(**body)
    assert first.content[0].type == "thinking"
    history = [*body["messages"], {"role": "assistant", "content": [b.model_dump() for b in first.content]},
               {"role": "user", "content": "Thanks. And the tests?"}]
    second = client.messages.create(**{**body, "messages": history})  # the emulator checks the signature
    assert second.content[0].type == "thinking"
    tampered = [*history[:1], {"role": "assistant", "content": [
        {**first.content[0].model_dump(), "thinking": "changed"}, *[b.model_dump() for b in first.content[1:]]]},
        history[2]]
    with pytest.raises(anthropic.BadRequestError, match="signature"):
        client.messages.create(**{**body, "messages": tampered})


def test_redacted_thinking_passes_through(client: anthropic.Anthropic) -> None:
    trigger = ("ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_"
               "46C9A13E193C177646C7398A98432ECCCE4C1253D5E2D82641AC0E52CC2876CB")
    body = claude_code_request(uuid.uuid4().hex, question=trigger)
    body.pop("tools")
    message = client.messages.create(**body)
    assert message.content[0].type == "redacted_thinking"
    history = [*body["messages"], {"role": "assistant", "content": [b.model_dump() for b in message.content]},
               {"role": "user", "content": "Go on."}]
    assert client.messages.create(**{**body, "messages": history}).content


def test_count_tokens_on_anthropic_and_bedrock(stack: Stack, client: anthropic.Anthropic) -> None:
    body = claude_code_request(uuid.uuid4().hex)
    body.pop("max_tokens")
    body.pop("metadata")
    counted = client.messages.count_tokens(**body)
    assert counted.input_tokens > 0
    emulator = stack.children["emulator"].url
    http_json("PUT", f"{emulator}/_emulator/faults/{_route(MODEL, 'anthropic').upstream_model}",
              body={"status": 529, "fail_times": 1})
    try:
        raw = client.messages.with_raw_response.count_tokens(**body)
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    assert raw.parse().input_tokens == counted.input_tokens  # the same prompt, counted by Bedrock's CountTokens
    assert "x-routeur-token-count" not in raw.headers
    _, seen = http_json("GET", f"{emulator}/_emulator/requests?limit=1")
    assert seen["requests"][-1]["path"].endswith("/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens") or \
        seen["requests"][-1]["path"].endswith("/anthropic.claude-sonnet-4-5-20250929-v1:0/count-tokens")


@pytest.mark.parametrize("stream", [False, True])
def test_overloaded_anthropic_falls_back_to_bedrock_natively(stack: Stack, client: anthropic.Anthropic,
                                                             stream: bool) -> None:
    emulator = stack.children["emulator"].url
    body = claude_code_request(uuid.uuid4().hex)
    http_json("PUT", f"{emulator}/_emulator/faults/{_route(MODEL, 'anthropic').upstream_model}",
              body={"status": 529, "fail_times": 1})
    try:
        if stream:
            with client.messages.stream(**body) as events:
                message = events.get_final_message()
                request_id = events.response.headers["request-id"]
        else:
            raw = client.messages.with_raw_response.create(**body)
            message, request_id = raw.parse(), raw.headers["request-id"]
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    assert message.content[0].type == "thinking" and message.content[0].signature
    assert message.usage.cache_creation_input_tokens  # Bedrock's own prompt cache wrote the prefix
    row = wait_for(lambda: trace_row(stack, request_id))
    assert row["provider"] == "bedrock" and row["fallback"].endswith("; error:529")
    assert Decimal(str(row["cost_usd"])) == expected_cost(_route(MODEL, "bedrock"), message.usage)
    _, seen = http_json("GET", f"{emulator}/_emulator/requests?limit=1")
    last = seen["requests"][-1]
    assert last["path"].endswith("/invoke-with-response-stream" if stream else "/invoke")
    sent = last["body"]
    assert sent["anthropic_version"] == "bedrock-2023-05-31" and sent["anthropic_beta"] == BETAS.split(",")
    assert "model" not in sent and "stream" not in sent
    assert sent["system"] == body["system"] and sent["thinking"] == body["thinking"]


@pytest.mark.parametrize("stream", [False, True])
def test_dlp_redacts_and_restores_on_the_native_path(stack: Stack, stream: bool) -> None:
    _, key = org_key(stack, dlp_policy="redact_restore")
    caller = anthropic.Anthropic(base_url=stack.proxy_url, api_key=key, max_retries=0)
    prompt = f"Write to {EMAIL} about the release."
    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 200, "system": f"The owner is {EMAIL}.",
                              "messages": [{"role": "user", "content": ECHO + prompt}]}
    if stream:
        with caller.messages.stream(**kwargs) as events:
            text = events.get_final_text()
    else:
        text = "".join(b.text for b in caller.messages.create(**kwargs).content if b.type == "text")
    assert text == prompt
    sent = emulator_saw(stack)[0]
    assert EMAIL not in json.dumps(sent) and "[EMAIL_1]" in sent["system"]


def test_the_archived_upstream_request_holds_the_callers_blocks(stack: Stack) -> None:
    _, key = org_key(stack, dlp_policy="redact", archive_payloads=True)
    caller = anthropic.Anthropic(base_url=stack.proxy_url, api_key=key, max_retries=0)
    body = claude_code_request(uuid.uuid4().hex, question=f"Mail {EMAIL} the summary.")
    raw = caller.messages.with_raw_response.create(**body)
    status, archive = fetch(archived_url(stack, key, raw.headers["request-id"]))
    assert status == 200, archive
    upstream = json.loads(archive["layers"]["upstream_request"])
    assert upstream["model"] == _route(MODEL, "anthropic").upstream_model
    expected = json.loads(json.dumps(body).replace(EMAIL, "[EMAIL_1]"))
    assert {k: v for k, v in upstream.items() if k != "model"} == {k: v for k, v in expected.items() if k != "model"}


def test_parameters_the_model_cannot_take_follow_the_catalog(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="claude-3.5-haiku", max_tokens=4096, messages=[{"role": "user", "content": "hi"}],
                               thinking={"type": "enabled", "budget_tokens": 1024})
    assert "'thinking' is not supported" in caught.value.response.json()["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}],
                               extra_body={"temperature": 0.5, "top_p": 0.9})
    assert "'top_p' is not supported" in caught.value.response.json()["error"]["message"]
    answered = client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}],
                                      extra_body={"top_k": 5})
    assert answered.content


@pytest.mark.parametrize("provider", ["anthropic", "bedrock"])
def test_an_error_mid_stream_reaches_the_caller_as_anthropics_error_event(stack: Stack, client: anthropic.Anthropic,
                                                                          provider: str) -> None:
    emulator = stack.children["emulator"].url
    route = _route(MODEL, provider)
    if provider == "bedrock":  # the Anthropic route fails first, so the request falls back to Bedrock
        http_json("PUT", f"{emulator}/_emulator/faults/{_route(MODEL, 'anthropic').upstream_model}",
                  body={"status": 529, "fail_times": 1})
    status = 529 if provider == "anthropic" else 503  # Bedrock's overloaded: serviceUnavailableException
    http_json("PUT", f"{emulator}/_emulator/faults/{route.upstream_model}",
              body={"status": status, "drop_after_chunks": 4, "fail_times": 1})
    try:
        with pytest.raises(anthropic.APIStatusError) as caught:  # noqa: PT012
            with client.messages.stream(**claude_code_request(uuid.uuid4().hex)) as stream:
                stream.get_final_message()
        request_id = caught.value.response.headers["request-id"]
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    assert isinstance(caught.value.body, dict) and caught.value.body["error"]["type"] == "overloaded_error"
    row = wait_for(lambda: trace_row(stack, request_id))
    assert (row["status_code"], row["provider"]) == (502, provider)
    assert row["usage_estimated"] is True and Decimal(str(row["cost_usd"])) > 0


def test_a_stream_cut_short_ends_with_an_error_event(stack: Stack, client: anthropic.Anthropic) -> None:
    emulator = stack.children["emulator"].url
    http_json("PUT", f"{emulator}/_emulator/faults/{_route(MODEL, 'anthropic').upstream_model}",
              body={"drop_after_chunks": 4, "fail_times": 1})
    try:
        with pytest.raises(anthropic.APIStatusError) as caught:  # noqa: PT012
            with client.messages.stream(**claude_code_request(uuid.uuid4().hex)) as stream:
                stream.get_final_message()
        request_id = caught.value.response.headers["request-id"]
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    assert isinstance(caught.value.body, dict) and caught.value.body["error"]["type"] == "api_error"
    row = wait_for(lambda: trace_row(stack, request_id))
    assert row["status_code"] == 502 and row["error_code"] == "upstream_stream_interrupted"


def test_count_tokens_for_a_model_no_provider_counts_is_a_flagged_estimate(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.count_tokens(model="gpt-4o-mini",
                                                         messages=[{"role": "user", "content": "Hello there"}])
    assert raw.parse().input_tokens > 0 and raw.headers["x-routeur-token-count"] == "estimated"


def test_a_1h_cache_write_is_traced_and_priced_at_twice_the_input(stack: Stack, client: anthropic.Anthropic) -> None:
    body = claude_code_request(uuid.uuid4().hex)
    body["tools"][-1]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}  # 1h breakpoints come first
    raw = client.messages.with_raw_response.create(**body)
    message = raw.parse()
    split = message.usage.cache_creation
    assert split is not None and split.ephemeral_1h_input_tokens > 0 and split.ephemeral_5m_input_tokens > 0
    row = wait_for(functools.partial(trace_row, stack, raw.headers["request-id"]))
    assert (row["cache_write_1h_tokens"], row["cache_write_tokens"]) == (split.ephemeral_1h_input_tokens,
                                                                         split.ephemeral_5m_input_tokens)
    route = _route(MODEL, "anthropic")
    assert route.cache_write_1h_per_m == 2 * route.input_per_m
    assert Decimal(str(row["cost_usd"])) == expected_cost(route, message.usage)
