"""Routing through the real router: rules and hot reload, breakers skipping a failing route, router outage."""

from __future__ import annotations

import time
from typing import Any

import openai

from launcher.stack import DEFAULT_RULES, Stack
from tests.conftest import http_json, wait_for

MESSAGES = [{"role": "user", "content": "Route me."}]


def _trace(client: openai.OpenAI, model: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    completion = client.chat.completions.create(model=model, messages=MESSAGES,
                                                extra_headers={"Routeur-Trace": "true", **(headers or {})})
    return completion.model_extra["routeur_trace"]  # type: ignore[no-any-return]


def _client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"], max_retries=0)


def test_rule_routes_auto_by_tag_and_rules_reload_without_restart(stack: Stack) -> None:
    client, search = _client(stack), {"Routeur-Tags": "team=search,env=prod"}
    try:
        stack.rules_path.write_text(DEFAULT_RULES + '[[rules]]\nname = "search"\n'
                                    'match = { model = "auto", tags = { team = "search" } }\n'
                                    'action = { model = "gpt-4.1-mini" }\n')
        trace = wait_for(lambda: (lambda t: t if t["route_reason"] == "rule:search" else None)(
            _trace(client, "auto", search)), timeout=15)
        assert (trace["requested_model"], trace["model"]) == ("auto", "gpt-4.1-mini")
        assert _trace(client, "auto")["route_reason"] == "default"  # no tag: the default model
        stack.rules_path.write_text(stack.rules_path.read_text().replace("gpt-4.1-mini", "gpt-4o"))
        wait_for(lambda: _trace(client, "auto", search)["model"] == "gpt-4o", timeout=15)
        stack.rules_path.write_text(stack.rules_path.read_text().replace('action = {', 'action = {{'))
        time.sleep(2.5)  # a bad edit is rejected; the last good rules stay in force
        assert _trace(client, "auto", search)["model"] == "gpt-4o"
        status, ready = http_json("GET", f"{stack.proxy_url}/readyz")
        assert status == 200 and ready["rules_error"]
    finally:
        stack.rules_path.write_text(DEFAULT_RULES)


def test_breaker_opens_skips_the_failing_route_then_a_probe_brings_it_back(stack: Stack) -> None:
    client, emulator = _client(stack), stack.children["emulator"].url
    http_json("PUT", f"{emulator}/_emulator/faults/llama-3.3-70b-versatile", body={"status": 503})
    try:
        def skipped() -> dict[str, Any] | None:
            trace = _trace(client, "llama-3.3-70b")
            assert trace["status_code"] == 200 and trace["provider"] == "together"
            return trace if [a["provider"] for a in trace["attempts"]] == ["together"] else None

        trace = wait_for(skipped, timeout=20, interval=0.05)
        assert trace["route"] == "groq/llama-3.3-70b-versatile"
        assert trace["fallback"] == "together/meta-llama/Llama-3.3-70B-Instruct-Turbo; breaker_open"
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    back = wait_for(lambda: (lambda t: t if t["provider"] == "groq" else None)(_trace(client, "llama-3.3-70b")),
                    timeout=30, interval=0.3)
    assert back["fallback"] is None and back["attempts"][0]["status_code"] == 200


def test_router_down_proxy_keeps_routing_with_last_snapshot(stack: Stack) -> None:
    client = _client(stack)
    stack.kill_service("router")
    try:
        time.sleep(3.5)
        assert _trace(client, "gpt-4o-mini")["status_code"] == 200
        status, ready = http_json("GET", f"{stack.proxy_url}/readyz")
        assert status == 200 and str(ready["router"]).startswith("stale")
    finally:
        stack.start_service("router")
    wait_for(lambda: http_json("GET", f"{stack.proxy_url}/readyz")[1]["router"] == "live", timeout=15)


def test_family_with_no_healthy_route_is_503_and_never_leaves_the_family(stack: Stack) -> None:
    client, emulator = _client(stack), stack.children["emulator"].url
    for upstream in ("llama-3.1-8b-instant", "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"):
        http_json("PUT", f"{emulator}/_emulator/faults/{upstream}", body={"status": 503})
    try:
        raw = client.chat.completions.with_raw_response
        try:
            raw.create(model="llama-3.1-8b", messages=MESSAGES)
            raise AssertionError("expected 503")
        except openai.InternalServerError as error:
            request_id = error.response.headers["x-request-id"]
            assert error.status_code == 503
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    status, trace = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(http_json(
        "GET", f"{stack.proxy_url}/v1/traces/{request_id}", token=stack.secrets["ROUTEUR_API_KEY"])))
    assert {a["provider"] for a in trace["attempts"]} == {"groq", "together"}
    assert trace["status_code"] == 503 and trace["cost_usd"] == 0


def test_claude_falls_back_to_bedrock_converse(stack: Stack) -> None:
    client, emulator = _client(stack), stack.children["emulator"].url
    http_json("PUT", f"{emulator}/_emulator/faults/claude-haiku-4-5-20251001", body={"status": 529})
    try:
        trace = _trace(client, "claude-haiku-4.5")
        stream = list(client.chat.completions.create(model="claude-haiku-4.5", messages=MESSAGES, stream=True,
                                                     stream_options={"include_usage": True}))
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    assert (trace["status_code"], trace["provider"]) == (200, "bedrock")
    assert trace["upstream_model"] == "global.anthropic.claude-haiku-4-5-20251001-v1:0"
    assert trace["fallback"].startswith("bedrock/global.anthropic.claude-haiku-4-5-20251001-v1:0; error:")
    assert trace["prompt_tokens"] > 0 and trace["completion_tokens"] > 0 and trace["usage_estimated"] is False
    usage = [c.usage for c in stream if c.usage is not None]
    assert len(usage) == 1 and usage[0].total_tokens > 0
    _, seen = http_json("GET", f"{emulator}/_emulator/requests?limit=3")
    bedrock = [r for r in seen["requests"] if r["path"].startswith("/model/")]
    assert bedrock and all("authorization" not in r["headers"] for r in bedrock)
