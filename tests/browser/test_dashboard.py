"""The dashboard in headless Chromium against the real stack: Logs, trace detail, Usage charts, Keys, scoping."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import openai
import pytest
from playwright.sync_api import Page

from launcher.stack import Stack
from tests.browser.conftest import login
from tests.conftest import http_json, sql, wait_for

TRAFFIC = {  # key name -> models, one request each
    "a1": ["gpt-4o-mini", "gpt-4o-mini", "claude-haiku-4.5"],
    "a2": ["gpt-4o-mini", "claude-haiku-4.5", "claude-haiku-4.5"],
    "b1": ["gpt-4o-mini", "gpt-4o-mini"],
}


@dataclass
class World:
    """Two fresh organizations: A with keys a1 and a2, B with key b1; every request's id by key."""

    org_a: str
    org_b: str
    secrets: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, str] = field(default_factory=dict)
    request_ids: dict[str, list[str]] = field(default_factory=dict)

    def send(self, stack: Stack, key: str, model: str) -> str:
        client = openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=self.secrets[key], max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": f"dashboard {key}"}])
        request_id = raw.headers["x-request-id"]
        self.request_ids.setdefault(key, []).append(request_id)
        return request_id


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    billing, admin = stack.children["billing"].url, stack.secrets["ROUTEUR_ADMIN_TOKEN"]
    suffix = uuid.uuid4().hex[:8]
    made = World(org_a=f"org_dash_a_{suffix}", org_b=f"org_dash_b_{suffix}")
    for org, amount in ((made.org_a, "20"), (made.org_b, "7")):
        assert http_json("POST", f"{billing}/v1/admin/organizations", token=admin, body={"id": org})[0] == 201
        http_json("POST", f"{billing}/v1/admin/organizations/{org}/topups", token=admin, body={"amount_usd": amount})
    limits: dict[str, dict[str, Any]] = {
        "a1": {"max_spend_usd": "5", "period": "month", "rate_limit_rpm": 600, "token_limit_tpm": 100000},
        "a2": {}, "b1": {"max_spend_usd": "1"}}
    for key, org in (("a1", made.org_a), ("a2", made.org_a), ("b1", made.org_b)):
        status, created = http_json("POST", f"{billing}/v1/admin/organizations/{org}/keys", token=admin,
                                    body={"name": f"dash-{key}", **limits[key]})
        assert status == 201, created
        made.secrets[key], made.key_ids[key] = created["secret"], created["id"]
    for key, models in TRAFFIC.items():
        for model in models:
            made.send(stack, key, model)
    wait_for(lambda: len(_rows(stack, made.org_a)) == 6 and len(_rows(stack, made.org_b)) == 2)
    yield made


def _rows(stack: Stack, org: str) -> list[dict[str, Any]]:
    return sql(stack, "SELECT request_id, api_key_id, model, cost_usd, total_tokens FROM traces FINAL "
                      "WHERE organization_id = {org:String}", {"org": org})


def _table_ids(page: Page) -> list[str]:
    return page.eval_on_selector_all("#logs tbody tr", "rows => rows.map(r => r.dataset.requestId)")


def test_logs_list_filter_trace_detail_and_auto_refresh(stack: Stack, world: World, page: Page) -> None:
    login(page, stack.proxy_url, world.secrets["a1"])
    expected = set(world.request_ids["a1"] + world.request_ids["a2"])
    page.wait_for_function("n => document.querySelectorAll('#logs tbody tr').length === n", arg=len(expected))
    assert set(_table_ids(page)) == expected
    assert set(page.eval_on_selector_all("#logs tbody td.model", "cells => cells.map(c => c.textContent)")) == {
        "gpt-4o-mini", "claude-haiku-4.5"}
    assert set(page.eval_on_selector_all("#logs tbody td.code", "cells => cells.map(c => c.textContent)")) == {"200"}

    page.fill("#filter-key", world.key_ids["a2"])
    page.click("#filters button[type=submit]")
    page.wait_for_function("n => document.querySelectorAll('#logs tbody tr').length === n",
                           arg=len(world.request_ids["a2"]))
    assert set(_table_ids(page)) == set(world.request_ids["a2"])
    assert set(page.eval_on_selector_all("#logs tbody td.key", "cells => cells.map(c => c.textContent)")) == {
        world.key_ids["a2"]}
    assert f"api_key_id={world.key_ids['a2']}" in page.url

    page.fill("#filter-model", "claude-haiku-4.5")
    page.click("#filters button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('#logs tbody tr').length === 2")

    target = world.request_ids["a2"][-1]
    page.click(f"#logs tbody tr[data-request-id='{target}']")
    page.wait_for_selector(f"#trace[data-loaded='{target}']")
    shown = dict(page.eval_on_selector_all(
        "#trace-fields tr", "rows => rows.map(r => [r.dataset.field, r.querySelector('td').textContent])"))
    stored = next(row for row in _rows(stack, world.org_a) if row["request_id"] == target)
    assert shown["request_id"] == target and shown["model"] == stored["model"] == "claude-haiku-4.5"
    assert shown["api_key_id"] == world.key_ids["a2"] and shown["status_code"] == "200"
    assert Decimal(shown["cost_usd"]) == Decimal(str(stored["cost_usd"]))
    assert {"provider", "route", "fallback", "latency_ms", "prompt_tokens", "completion_tokens",
            "payload_url"} <= shown.keys()
    assert page.locator("#trace-attempts tbody tr").count() >= 1
    assert page.is_hidden("#trace-payload")  # the key does not archive payloads: no link
    assert page.url.endswith(f"#trace={target}")

    page.click("#clear")
    page.wait_for_function("n => document.querySelectorAll('#logs tbody tr').length === n", arg=len(expected))
    fresh = world.send(stack, "a1", "gpt-4o-mini")  # auto-refresh (5 s) shows it without a reload
    page.wait_for_selector(f"#logs tbody tr[data-request-id='{fresh}']", timeout=20_000)


def test_usage_charts_total_the_sql_sums(stack: Stack, world: World, page: Page) -> None:
    login(page, stack.proxy_url, world.secrets["a2"], landing="/dashboard/usage")
    rows = _rows(stack, world.org_a)
    want = {"chart-requests": len(rows), "chart-tokens": sum(r["total_tokens"] for r in rows),
            "chart-spend": sum(Decimal(str(r["cost_usd"])) for r in rows)}

    def drawn() -> dict[str, float]:
        return dict(page.evaluate("""() => [...document.querySelectorAll('canvas')].map(c => {
            const chart = Chart.getChart(c);
            return [c.id, chart.data.datasets.flatMap(d => d.data).reduce((a, b) => a + b, 0)];
        })"""))

    def labels() -> set[str]:
        return set(page.evaluate("() => Chart.getChart(document.getElementById('chart-requests'))"
                                 ".data.datasets.map(d => d.label)"))

    sums = wait_for(lambda: (lambda d: d if d["chart-requests"] == want["chart-requests"] else None)(drawn()))
    assert sums["chart-tokens"] == want["chart-tokens"]
    assert abs(Decimal(str(sums["chart-spend"])) - want["chart-spend"]) < Decimal("1e-9")
    assert labels() == {"gpt-4o-mini", "claude-haiku-4.5"}
    assert page.text_content("#total-requests") == str(want["chart-requests"])

    page.select_option("#group-by", "key")
    page.wait_for_function("() => Chart.getChart(document.getElementById('chart-requests'))"
                           ".data.datasets.some(d => d.label.startsWith('key_'))")
    assert labels() == {world.key_ids["a1"], world.key_ids["a2"]}
    assert drawn()["chart-requests"] == want["chart-requests"]
    per_key = dict(page.eval_on_selector_all(
        "#groups tbody tr", "rows => rows.map(r => [r.dataset.group, r.children[1].textContent])"))
    assert per_key == {world.key_ids[k]: str(sum(1 for r in rows if r["api_key_id"] == world.key_ids[k]))
                       for k in ("a1", "a2")}

    page.select_option("#period", "7d")
    page.wait_for_function("() => new URL(location.href).searchParams.get('period') === '7d'")
    page.wait_for_function("n => Chart.getChart(document.getElementById('chart-requests')).data.labels.length > n",
                           arg=100)  # hourly bars over a week
    assert drawn()["chart-requests"] == want["chart-requests"]


def test_keys_page_shows_limits_spend_and_wallet(stack: Stack, world: World, page: Page) -> None:
    billing, admin = stack.children["billing"].url, stack.secrets["ROUTEUR_ADMIN_TOKEN"]
    login(page, stack.proxy_url, world.secrets["a1"], landing="/dashboard/keys")
    _, wallet = http_json("GET", f"{billing}/v1/admin/organizations/{world.org_a}", token=admin)
    _, key = http_json("GET", f"{billing}/v1/admin/keys/{world.key_ids['a1']}", token=admin)
    shown = page.locator(f"#keys tbody tr[data-key-id='{world.key_ids['a1']}']")
    assert shown.locator("td.max-spend").text_content() == "5.0000 per month (UTC)"
    assert shown.locator("td.rpm").text_content() == "600"
    assert shown.locator("td.tpm").text_content() == "100,000"
    assert shown.locator("td.state").text_content() == "active"
    assert shown.locator("meter").count() == 1
    assert Decimal(shown.locator("td.period-spend").get_attribute("title") or "0") == Decimal(
        str(key["period_spent_usd"]))
    assert page.eval_on_selector_all("#keys tbody tr", "rows => rows.map(r => r.dataset.keyId)") == sorted(
        [world.key_ids["a1"], world.key_ids["a2"]], key=lambda k: "dash-a1" if k == world.key_ids["a1"] else "dash-a2")
    balance = page.locator(f"#wallets tbody tr[data-organization='{world.org_a}'] td.balance")
    assert Decimal(balance.get_attribute("title") or "0") == Decimal(str(wallet["balance_usd"]))
    assert page.locator("#wallets tbody tr").count() == 1


def test_an_org_key_sees_only_its_org_in_the_pages_and_the_api(stack: Stack, world: World, page: Page) -> None:
    login(page, stack.proxy_url, world.secrets["b1"])
    page.wait_for_function("() => document.querySelectorAll('#logs tbody tr').length === 2")
    assert set(_table_ids(page)) == set(world.request_ids["b1"])
    other = world.request_ids["a1"][0]
    page.goto(f"{stack.proxy_url}/dashboard/logs?api_key_id={world.key_ids['a1']}#trace={other}")
    page.wait_for_selector("body[data-loaded]")
    assert _table_ids(page) == []
    page.wait_for_function("() => document.querySelector('#trace-fields').textContent.includes('Could not load')")
    cookie = {c["name"]: c["value"] for c in page.context.cookies()}
    headers = {"Cookie": f"routeur_session={cookie['routeur_session']}"}
    status, logs = http_json("GET", f"{stack.proxy_url}/v1/logs?organization_id={world.org_a}&limit=500",
                             headers=headers)
    assert status == 200 and {t["organization_id"] for t in logs["data"]} == {world.org_b}
    status, _ = http_json("GET", f"{stack.proxy_url}/v1/traces/{other}", headers=headers)
    assert status == 404
    status, usage = http_json("GET", f"{stack.proxy_url}/v1/usage?organization_id={world.org_a}", headers=headers)
    assert status == 200 and usage["totals"]["requests"] == 2
    page.goto(f"{stack.proxy_url}/dashboard/keys")
    page.wait_for_selector("body[data-loaded]")
    assert page.eval_on_selector_all("#keys tbody tr", "rows => rows.map(r => r.dataset.keyId)") == [
        world.key_ids["b1"]]
    assert page.eval_on_selector_all("#wallets tbody tr", "rows => rows.map(r => r.dataset.organization)") == [
        world.org_b]
    page.goto(f"{stack.proxy_url}/dashboard/usage")
    page.wait_for_selector("body[data-loaded]")
    assert page.text_content("#total-requests") == "2"


def test_admin_sees_every_org_and_sessions_end(stack: Stack, world: World, page: Page) -> None:
    page.goto(f"{stack.proxy_url}/dashboard/usage")
    assert "/dashboard/login" in page.url
    page.fill("#token", "rk-not-a-key")
    page.click("#login-form button[type=submit]")
    assert page.text_content("#login-error") == "That key or token was not accepted."
    login(page, stack.proxy_url, stack.secrets["ROUTEUR_ADMIN_TOKEN"], landing="/dashboard/keys")
    assert page.text_content("#who") == "admin"
    organizations = set(page.eval_on_selector_all("#wallets tbody tr", "rows => rows.map(r => r.dataset.organization)"))
    assert {world.org_a, world.org_b} <= organizations
    page.goto(f"{stack.proxy_url}/dashboard/logs?organization_id={world.org_b}")
    page.wait_for_function("() => document.querySelectorAll('#logs tbody tr').length === 2")
    assert set(_table_ids(page)) == set(world.request_ids["b1"])
    page.click("header.top .logout button")
    page.wait_for_url("**/dashboard/login")
    page.goto(f"{stack.proxy_url}/dashboard/logs")
    assert "/dashboard/login" in page.url


def test_trace_detail_links_the_archived_payload(stack: Stack, page: Page) -> None:
    """A key that archives payloads: the trace panel shows the signed link, and the link opens the archive."""
    billing, admin = stack.children["billing"].url, stack.secrets["ROUTEUR_ADMIN_TOKEN"]
    org = f"org_dash_p_{uuid.uuid4().hex[:8]}"
    http_json("POST", f"{billing}/v1/admin/organizations", token=admin, body={"id": org})
    http_json("POST", f"{billing}/v1/admin/organizations/{org}/topups", token=admin, body={"amount_usd": "1"})
    _, key = http_json("POST", f"{billing}/v1/admin/organizations/{org}/keys", token=admin,
                       body={"name": "archived", "archive_payloads": True})
    client = openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=key["secret"], max_retries=0)
    request_id = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "archive me"}]).headers["x-request-id"]
    wait_for(lambda: http_json("GET", f"{stack.proxy_url}/v1/traces/{request_id}",
                               token=key["secret"])[1].get("payload_url"), timeout=30)
    login(page, stack.proxy_url, key["secret"])
    page.click(f"#logs tbody tr[data-request-id='{request_id}']")
    page.wait_for_selector(f"#trace[data-loaded='{request_id}']")
    link = page.locator("#trace-payload-link")
    href = link.get_attribute("href") or ""
    assert page.is_visible("#trace-payload") and href.startswith(f"{stack.proxy_url}/v1/payloads/{request_id}?")
    assert page.locator("#trace-fields tr[data-field='payload_url'] a").get_attribute("href") == href
    status, archived = http_json("GET", href)
    assert status == 200 and "archive me" in str(archived)
