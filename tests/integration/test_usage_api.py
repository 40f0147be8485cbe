"""GET /v1/usage and the /v1/logs filters through the proxy: scoping, totals equal to the raw traces, bad input."""

from __future__ import annotations

import uuid
from decimal import Decimal

import openai

from launcher.stack import Stack
from tests.conftest import http_json, sql, wait_for


def test_usage_is_scoped_and_its_totals_equal_the_raw_traces(stack: Stack) -> None:
    billing = stack.children["billing"].url
    admin = stack.secrets["ROUTEUR_ADMIN_TOKEN"]
    org = f"org_{uuid.uuid4().hex[:10]}"
    http_json("POST", f"{billing}/v1/admin/organizations", token=admin, body={"id": org})
    http_json("POST", f"{billing}/v1/admin/organizations/{org}/topups", token=admin, body={"amount_usd": "5"})
    _, key = http_json("POST", f"{billing}/v1/admin/organizations/{org}/keys", token=admin, body={"name": "u"})
    client = openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=key["secret"], max_retries=0)
    for model in ("gpt-4o-mini", "gpt-4o-mini", "claude-haiku-4.5"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "usage"}])
    raw = wait_for(lambda: (lambda r: r if r[0]["n"] == 3 else None)(sql(
        stack, "SELECT count() AS n, sum(cost_usd) AS cost, sum(total_tokens) AS tokens FROM traces FINAL "
               "WHERE organization_id = {org:String}", {"org": org})))[0]
    url = f"{stack.proxy_url}/v1/usage?group_by=model&bucket=day"
    status, usage = wait_for(lambda: (lambda r: r if r[0] == 200 and r[1]["totals"]
                                      and r[1]["totals"]["requests"] == 3 else None)(
        http_json("GET", url, token=key["secret"])))
    assert {row["group"] for row in usage["data"]} == {"gpt-4o-mini", "claude-haiku-4.5"}
    assert Decimal(str(usage["totals"]["cost_usd"])) == Decimal(str(raw["cost"]))
    assert usage["totals"]["total_tokens"] == raw["tokens"]
    status, admin_view = http_json("GET", f"{url}&organization_id={org}", token=stack.secrets["ROUTEUR_ADMIN_TOKEN"])
    assert status == 200 and admin_view["totals"]["requests"] == 3
    status, demo_view = http_json("GET", f"{url}&organization_id={org}", token=stack.secrets["ROUTEUR_API_KEY"])
    assert status == 200, "an org key's organization_id parameter is ignored: it sees only its own org"
    assert (demo_view["totals"] or {}).get("requests") != 3 or Decimal(str(demo_view["totals"]["cost_usd"])) != \
        Decimal(str(raw["cost"]))
    for bad in ("group_by=nope", "bucket=week", "since_ms=abc", "group_by=model';DROP%20TABLE%20traces"):
        status, body = http_json("GET", f"{stack.proxy_url}/v1/usage?{bad}", token=key["secret"])
        assert status == 400 and body["error"]["type"] == "invalid_request_error", bad
    status, logs = http_json("GET", f"{stack.proxy_url}/v1/logs?has_fallback=false&route_reason=default",
                             token=key["secret"])
    assert status == 200 and len(logs["data"]) == 3
    status, _ = http_json("GET", f"{stack.proxy_url}/v1/logs?has_fallback=maybe", token=key["secret"])
    assert status == 400
