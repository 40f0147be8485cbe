"""Billing through the proxy: wallets, maxSpend, rate limits, fail-closed, and exact spend."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import openai
import pytest

from launcher.stack import Stack
from tests.conftest import http_json, sql, wait_for

MESSAGES = [{"role": "user", "content": "Count to three."}]


def _admin(stack: Stack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return http_json(method, f"{stack.children['billing'].url}/v1/admin{path}",
                     token=stack.secrets["ROUTEUR_ADMIN_TOKEN"], body=body)


def _org_with_key(stack: Stack, *, topup: str, **limits: Any) -> tuple[str, str]:
    org = f"org_{uuid.uuid4().hex[:10]}"
    assert _admin(stack, "POST", "/organizations", {"id": org})[0] == 201
    if Decimal(topup) > 0:
        assert _admin(stack, "POST", f"/organizations/{org}/topups", {"amount_usd": topup})[0] in (200, 201)
    status, key = _admin(stack, "POST", f"/organizations/{org}/keys", {"name": "t", **limits})
    assert status == 201, key
    return org, key["secret"]


def _client(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=key, max_retries=0)


def test_empty_wallet_is_402_insufficient_quota(stack: Stack) -> None:
    _, key = _org_with_key(stack, topup="0")
    with pytest.raises(openai.APIStatusError) as caught:
        _client(stack, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert caught.value.status_code == 402 and caught.value.response.json()["error"]["code"] == "insufficient_quota"


def test_max_spend_stops_a_runaway_loop(stack: Stack) -> None:
    org, key = _org_with_key(stack, topup="10", max_spend_usd="0.0005")
    client = _client(stack, key)
    served = 0
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(100):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
            served += 1
    assert caught.value.response.json()["error"]["code"] == "budget_exceeded" and served >= 1
    status, view = wait_for(lambda: (lambda r: r if Decimal(str(r[1]["spent_usd"])) > 0 else None)(
        _admin(stack, "GET", f"/organizations/{org}")))
    assert Decimal(str(view["spent_usd"])) <= Decimal("0.0005")


def test_rpm_limit_gives_429_retry_after_and_headers(stack: Stack) -> None:
    _, key = _org_with_key(stack, topup="10", rate_limit_rpm=2)
    client = _client(stack, key)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.headers["x-ratelimit-reset-requests"]
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    response = caught.value.response
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["x-ratelimit-remaining-requests"] == "0"


def test_wallet_balance_equals_topups_minus_trace_costs(stack: Stack) -> None:
    org, key = _org_with_key(stack, topup="5")
    client = _client(stack, key)
    for model in ("gpt-4o-mini", "claude-haiku-4.5", "gemini-2.5-flash"):
        client.chat.completions.create(model=model, messages=MESSAGES)
        list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))

    def settled() -> tuple[Decimal, Decimal] | None:
        rows = sql(stack, "SELECT count() AS n, sum(cost_usd) AS cost FROM traces FINAL "
                          "WHERE organization_id = {org:String}", {"org": org})
        _, view = _admin(stack, "GET", f"/organizations/{org}")
        cost = Decimal(str(rows[0]["cost"]))
        balance = Decimal(str(view["balance_usd"]))
        return (balance, cost) if rows[0]["n"] == 6 and balance == Decimal(5) - cost else None

    balance, cost = wait_for(settled, timeout=30)
    assert cost > 0 and balance == Decimal(5) - cost


def test_billing_down_fails_closed_fast(stack: Stack) -> None:
    client = _client(stack, stack.secrets["ROUTEUR_API_KEY"])
    stack.stop_service("billing")
    try:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert caught.value.status_code == 503 and time.monotonic() - started < 5
        assert caught.value.response.json()["error"]["code"] == "billing_unavailable"
    finally:
        stack.start_service("billing")
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices


def test_tpm_limit_counts_reserved_tokens(stack: Stack) -> None:
    _, key = _org_with_key(stack, topup="10", token_limit_tpm=300)
    client = _client(stack, key)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=100)
    assert raw.headers["x-ratelimit-limit-tokens"] == "300"
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 300
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(5):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=100)
    response = caught.value.response
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(response.headers["retry-after"]) >= 1 and response.headers["x-ratelimit-reset-tokens"]
