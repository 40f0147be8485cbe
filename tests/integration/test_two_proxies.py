"""The proxy tier scaled to two processes: one key's maxSpend holds across both, spend is exact, and a
billing kill -9 under load loses and doubles nothing."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from decimal import Decimal
from typing import Any

import openai

from launcher.stack import Stack
from tests.conftest import http_json, sql, wait_for

PROMPT = [{"role": "user", "content": "Summarise the water cycle."}]


def _admin(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    status, data = http_json(method, f"{stack.children['billing'].url}/v1/admin{path}",
                             token=stack.secrets["ROUTEUR_ADMIN_TOKEN"], body=body)
    assert status < 300, data
    return data


def _org(stack: Stack, topup: str, **limits: Any) -> tuple[str, str]:
    org = f"org_{uuid.uuid4().hex[:10]}"
    _admin(stack, "POST", "/organizations", {"id": org})
    _admin(stack, "POST", f"/organizations/{org}/topups", {"amount_usd": topup})
    return org, _admin(stack, "POST", f"/organizations/{org}/keys", {"name": "load", **limits})["secret"]


def _clients(stack: Stack, key: str) -> list[openai.AsyncOpenAI]:
    return [openai.AsyncOpenAI(base_url=f"{stack.children[name].url}/v1", api_key=key, max_retries=0, timeout=60)
            for name in ("proxy", "proxy-2")]


def _org_totals(stack: Stack, org: str) -> dict[str, Any]:
    return sql(stack, "SELECT count() AS n, countIf(status_code = 200) AS ok, sum(cost_usd) AS cost "
                      "FROM traces FINAL WHERE organization_id = {org:String}", {"org": org})[0]


async def _send(client: openai.AsyncOpenAI, max_tokens: int) -> int:
    try:
        await client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=max_tokens)
        return 200
    except openai.APIStatusError as error:
        return error.status_code


async def test_max_spend_holds_across_two_proxies(stack: Stack) -> None:
    probe_org, probe_key = _org(stack, "1")
    probe = await _clients(stack, probe_key)[0].chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=PROMPT, extra_headers={"Routeur-Trace": "true"})
    parsed = probe.parse()
    one_cost = Decimal(str(parsed.model_extra["routeur_trace"]["cost_usd"]))
    max_tokens = parsed.usage.completion_tokens
    max_spend = one_cost * 50

    org, key = _org(stack, "10", max_spend_usd=str(max_spend))
    clients = _clients(stack, key)
    statuses = await asyncio.gather(*(_send(clients[i % 2], max_tokens) for i in range(300)))
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 429}, statuses
    assert 45 <= admitted <= 50

    def settled() -> dict[str, Any] | None:
        totals, view = _org_totals(stack, org), _admin(stack, "GET", f"/organizations/{org}")
        done = totals["n"] == 300 and Decimal(str(view["spent_usd"])) == Decimal(str(totals["cost"]))
        return {"totals": totals, "view": view} if done else None

    result = wait_for(settled, timeout=30)
    assert result["totals"]["ok"] == admitted, "every 2xx has exactly one trace"
    spent = Decimal(str(result["view"]["spent_usd"]))
    assert spent <= max_spend
    assert Decimal(str(result["view"]["balance_usd"])) == Decimal(10) - Decimal(str(result["totals"]["cost"]))


async def test_billing_kill_9_under_load_loses_and_doubles_nothing(stack: Stack) -> None:
    org, key = _org(stack, "10")
    clients = _clients(stack, key)
    statuses: list[int] = []
    stop = time.monotonic() + 6

    async def worker(index: int) -> None:
        while time.monotonic() < stop:
            statuses.append(await _send(clients[index % 2], 30))

    def chaos() -> None:
        time.sleep(1.5)
        stack.kill_service("billing")
        time.sleep(1.0)
        stack.start_service("billing")

    killer = threading.Thread(target=chaos)
    killer.start()
    await asyncio.gather(*(worker(i) for i in range(16)))
    await asyncio.to_thread(killer.join)
    assert statuses.count(200) > 20 and 503 in statuses, "load ran on both sides of the outage"
    assert set(statuses) <= {200, 503}

    def settled() -> tuple[Decimal, Decimal, int] | None:
        totals, view = _org_totals(stack, org), _admin(stack, "GET", f"/organizations/{org}")
        balance, cost = Decimal(str(view["balance_usd"])), Decimal(str(totals["cost"]))
        # every 2xx has its trace; a request refused at auth while billing was down has no org to trace under
        return (balance, cost, totals["ok"]) if totals["ok"] == statuses.count(200) and balance == 10 - cost \
            else None

    balance, cost, ok = wait_for(settled, timeout=40)
    assert ok == statuses.count(200) and cost > 0 and balance == Decimal(10) - cost
