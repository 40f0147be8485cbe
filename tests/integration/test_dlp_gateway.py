"""DLP through the whole gateway: what the provider receives (the emulator's request log), the trace's
`redactions`, restore in plain and streamed answers, and block."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import openai
import pytest

from launcher.stack import Stack
from tests.conftest import http_json, wait_for

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
PROMPT = f"Mail {EMAIL}, charge card {CARD}, deploy with {AWS_KEY}."
ECHO = "[[echo]] "  # the emulator answers a user message carrying this marker with the message's own text


def admin(stack: Stack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return http_json(method, f"{stack.children['billing'].url}/v1/admin{path}",
                     token=stack.secrets["ROUTEUR_ADMIN_TOKEN"], body=body)


def org_key(stack: Stack, **settings: Any) -> tuple[str, str]:
    """A new organization with $10 and one key with the given settings (dlp_policy, archive_payloads)."""
    org = f"org_{uuid.uuid4().hex[:10]}"
    assert admin(stack, "POST", "/organizations", {"id": org})[0] == 201
    assert admin(stack, "POST", f"/organizations/{org}/topups", {"amount_usd": "10"})[0] in (200, 201)
    status, key = admin(stack, "POST", f"/organizations/{org}/keys", {"name": "dlp", **settings})
    assert status == 201, key
    return org, key["secret"]


def client(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=key, max_retries=0)


def emulator_saw(stack: Stack) -> list[dict[str, Any]]:
    """The bodies the emulator (the provider) received, newest first."""
    status, seen = http_json("GET", f"{stack.children['emulator'].url}/_emulator/requests?limit=20")
    assert status == 200
    return [entry["body"] for entry in reversed(seen["requests"])]


def emulator_seq(stack: Stack) -> int:
    """How many requests the emulator has received so far."""
    _, seen = http_json("GET", f"{stack.children['emulator'].url}/_emulator/requests?limit=1")
    return seen["requests"][-1]["seq"] if seen["requests"] else 0


def trace(stack: Stack, key: str, request_id: str) -> dict[str, Any]:
    def fetch() -> dict[str, Any] | None:
        status, body = http_json("GET", f"{stack.proxy_url}/v1/traces/{request_id}", token=key)
        return body if status == 200 else None

    return wait_for(fetch)


def chat(stack: Stack, key: str, content: str, **extra: Any) -> tuple[str, str]:
    """(answer text, request id) of a non-streamed chat completion."""
    raw = client(stack, key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}], **extra)
    return raw.parse().choices[0].message.content or "", raw.headers["x-request-id"]


def test_redact_sends_placeholders_and_counts_them(stack: Stack) -> None:
    _, key = org_key(stack, dlp_policy="redact")
    answer, request_id = chat(stack, key, ECHO + PROMPT)
    sent = json.dumps(next(body for body in emulator_saw(stack) if "[EMAIL_1]" in json.dumps(body)))
    for value in (EMAIL, CARD, AWS_KEY):
        assert value not in sent
    assert "[CARD_1]" in sent and "[AWS_ACCESS_KEY_1]" in sent
    assert EMAIL not in answer and "[EMAIL_1]" in answer  # no restore: the caller sees the placeholders
    assert trace(stack, key, request_id)["redactions"] == 3


def test_restore_gives_the_caller_the_originals(stack: Stack) -> None:
    _, key = org_key(stack, dlp_policy="redact_restore")
    answer, request_id = chat(stack, key, ECHO + PROMPT + f" Again: {EMAIL}")
    assert answer == PROMPT + f" Again: {EMAIL}"
    sent = json.dumps(emulator_saw(stack)[0])
    assert EMAIL not in sent and sent.count("[EMAIL_1]") == 2  # the same value, the same placeholder
    assert trace(stack, key, request_id)["redactions"] == 4


def test_restore_in_a_stream(stack: Stack) -> None:
    _, key = org_key(stack, dlp_policy="redact_restore")
    chunks = client(stack, key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": ECHO + PROMPT}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == PROMPT
    assert AWS_KEY not in json.dumps(emulator_saw(stack)[0])


def test_anthropic_sdk_callers_are_redacted_too(stack: Stack) -> None:
    anthropic = pytest.importorskip("anthropic")
    _, key = org_key(stack, dlp_policy="redact_restore")
    message = anthropic.Anthropic(base_url=stack.proxy_url, api_key=key, max_retries=0).messages.create(
        model="gpt-4o-mini", max_tokens=200, messages=[{"role": "user", "content": ECHO + PROMPT}])
    assert message.content[0].text == PROMPT
    assert CARD not in json.dumps(emulator_saw(stack)[0])


def test_tool_arguments_and_results_are_redacted(stack: Stack) -> None:
    _, key = org_key(stack, dlp_policy="redact")
    messages = [
        {"role": "user", "content": "Look the customer up."},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": json.dumps({"email": EMAIL})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": f"card on file: {CARD}"},
    ]
    client(stack, key).chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    sent = emulator_saw(stack)[0]
    arguments = json.loads(sent["messages"][1]["tool_calls"][0]["function"]["arguments"])
    assert arguments == {"email": "[EMAIL_1]"}
    assert sent["messages"][2]["content"] == "card on file: [CARD_1]"


def test_block_refuses_with_400_naming_the_detector(stack: Stack) -> None:
    org, key = org_key(stack, dlp_policy="block")
    before = emulator_seq(stack)
    with pytest.raises(openai.BadRequestError) as caught:
        chat(stack, key, f"my card is {CARD}")
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "content_policy_violation"
    assert "card" in error["message"] and CARD not in error["message"] and "4111" not in error["message"]
    assert emulator_seq(stack) == before  # nothing reached the provider
    _, view = admin(stack, "GET", f"/organizations/{org}")
    assert Decimal(str(view["balance_usd"])) == Decimal("10")  # refused requests cost nothing
    clean, _ = chat(stack, key, "no secrets here")
    assert clean


def test_embeddings_input_is_redacted(stack: Stack) -> None:
    _, key = org_key(stack, dlp_policy="redact")
    client(stack, key).embeddings.create(model="text-embedding-3-small", input=[f"contact {EMAIL}", "plain"])
    sent = emulator_saw(stack)[0]
    assert sent["input"] == ["contact [EMAIL_1]", "plain"]


def test_unknown_policy_fails_closed(stack: Stack) -> None:
    _, key = org_key(stack, dlp_policy="no-such-policy")
    before = emulator_seq(stack)
    with pytest.raises(openai.InternalServerError) as caught:
        chat(stack, key, f"mail {EMAIL}")
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "dlp_error"
    assert emulator_seq(stack) == before  # nothing reached the provider
