"""Bad input against the real processes: a table of hand-written hostile requests and a hypothesis fuzz run of
over 10,000 generated ones (tests/fuzz.py) across every public route of the proxies and billing's admin API.

Every bad request gets a 4xx in the route's error shape (OpenAI's, Anthropic's on /v1/messages), never a 5xx,
never a traceback or a source path; a bad request is refused before any upstream call; valid requests still
succeed; and at the end every process is the one that started, and ready. Requests aiohttp cannot parse as
HTTP at all (CR/LF or NUL inside a header, a raw NUL in the path) are refused 400 by aiohttp before any route,
so their body is aiohttp's text, not JSON (see services/proxy/errors.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from launcher.stack import Stack
from services.proxy.dashboard.routes import STATIC_DIR
from tests import fuzz, openapi, rawhttp
from tests.conftest import http_json, sql, wait_for

LIMIT = 1 << 20  # PROXY_MAX_BODY_BYTES in the test stack (tests/conftest.py)
# Each example is one slice of fuzz.classes(), about 29 requests sent together: over 10,000 in all (more with
# ROUTEUR_FUZZ_EXAMPLES).
EXAMPLES = max(360, int(os.environ.get("ROUTEUR_FUZZ_EXAMPLES", "0")))


def admin(stack: Stack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return http_json(method, f"{stack.children['billing'].url}/v1/admin{path}",
                     token=stack.secrets["ROUTEUR_ADMIN_TOKEN"], body=body)


@pytest.fixture(scope="module")
def targets(stack: Stack) -> fuzz.Targets:
    """A funded organization whose key has no rate limit (so 10k requests meet neither 402 nor 429), and a spare
    organization and key for the admin API fuzz to change."""
    org, spare = f"org_fuzz_{uuid.uuid4().hex[:8]}", f"org_spare_{uuid.uuid4().hex[:8]}"
    assert admin(stack, "POST", "/organizations", {"id": org})[0] == 201
    assert admin(stack, "POST", f"/organizations/{org}/topups", {"amount_usd": "100000"})[0] == 200
    status, key = admin(stack, "POST", f"/organizations/{org}/keys", {"name": "fuzz"})
    assert status == 201, key
    assert admin(stack, "POST", "/organizations", {"id": spare})[0] == 201
    status, spare_key = admin(stack, "POST", f"/organizations/{spare}/keys", {"name": "spare"})
    assert status == 201, spare_key
    static = {path.relative_to(STATIC_DIR).as_posix(): path.read_bytes() for path in STATIC_DIR.rglob("*")
              if path.is_file()}
    return fuzz.Targets(organization=org, api_key=key["secret"], admin_token=stack.secrets["ROUTEUR_ADMIN_TOKEN"],
                        spare_org=spare, spare_key_id=spare_key["id"], static_files=static)


def _ports(stack: Stack) -> dict[str, list[int]]:
    return {"proxy": [child.port for child in stack.children.values() if child.service == "proxy"],
            "billing": [stack.children["billing"].port]}


async def _send_all(ports: dict[str, list[int]], cases: list[fuzz.Case]) -> list[rawhttp.Reply]:
    return await asyncio.gather(*(rawhttp.send(ports[case.service][index % len(ports[case.service])], case.raw())
                                  for index, case in enumerate(cases)))


def _send_one(stack: Stack, case: fuzz.Case) -> rawhttp.Reply:
    return asyncio.run(rawhttp.send(_ports(stack)[case.service][0], case.raw()))


def judge(case: fuzz.Case, reply: rawhttp.Reply, targets: fuzz.Targets) -> list[str]:
    """fuzz.problems, plus: a dashboard asset served is one of the bundled files (no traversal), and every
    /v1/chat/completions error matches OpenAI's own ErrorResponse schema."""
    found = fuzz.problems(case, reply)
    if case.target.startswith("/dashboard/static/") and reply.status == 200 \
            and reply.body not in targets.static_files.values():
        found.append("a dashboard asset that is not one of the bundled files")
    if case.target == "/v1/chat/completions" and reply.status >= 400 and case.shape == "openai" \
            and isinstance(reply.json(), dict):
        try:
            openapi.validate("ErrorResponse", reply.json())
        except Exception as exc:  # jsonschema.ValidationError: report it with the case
            found.append(f"not an OpenAPI ErrorResponse: {str(exc)[:200]}")
    return found


def _process_ids(stack: Stack) -> dict[str, int | None]:
    return {name: child.proc.pid if child.proc is not None and child.proc.poll() is None else None
            for name, child in stack.children.items()}


def _ready(stack: Stack) -> dict[str, int]:
    return {name: http_json("GET", f"{child.url}/readyz")[0] for name, child in stack.children.items()
            if child.service in ("proxy", "billing")}


@pytest.fixture
def watched_logs(stack: Stack) -> Iterator[dict[Path, int]]:
    """The size of each proxy and billing log now, so a test reads only what was written during it."""
    yield {path: path.stat().st_size for path in stack.logs.glob("*.log")
           if path.name.startswith(("proxy", "billing"))}


def new_log_problems(offsets: dict[Path, int]) -> list[str]:
    """Lines written since `offsets` that show a failure: a non-JSON line (a raw traceback), an unhandled error."""
    found = []
    for path, offset in offsets.items():
        with path.open("rb") as handle:
            handle.seek(offset)
            for line in handle.read().splitlines():
                if not line.strip():
                    continue
                try:
                    event = json.loads(line).get("event")
                except ValueError:
                    found.append(f"{path.name}: not a JSON log line: {line[:160]!r}")
                    continue
                if event in ("unhandled_error", "admin_request_failed"):
                    found.append(f"{path.name}: {line[:300]!r}")
    return found


def leaked_to_upstream(stack: Stack, org: str) -> list[dict[str, Any]]:
    """The organization's traces that failed with a 4xx after an upstream attempt: a bad request the proxy let
    through to the provider (an emulated provider, that validates like the real ones)."""
    return sql(stack, "SELECT request_id, endpoint, requested_model, status_code, error_code FROM traces FINAL "
                      "WHERE organization_id = {org:String} AND status_code BETWEEN 400 AND 499 "
                      "AND length(attempts) > 0", {"org": org})


# ------------------------------------------------------------------------------------------ the fuzz run

MODEL_ROUTES = ("/v1/chat/completions", "/v1/messages", "/v1/embeddings")


def test_fuzz_over_10k_requests_every_one_refused_cleanly(stack: Stack, targets: fuzz.Targets,
                                                          watched_logs: dict[Path, int]) -> None:
    ports, before = _ports(stack), _process_ids(stack)
    org = targets.organization
    tally: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()  # by what the case expects: "ok", "refuse", "any"
    traced = 0
    loop = asyncio.new_event_loop()
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                     HealthCheck.large_base_example])
    @given(fuzz.sweeps(targets))
    def batch(cases: tuple[fuzz.Case, ...]) -> None:
        nonlocal traced
        replies = loop.run_until_complete(_send_all(ports, list(cases)))
        failures = []
        for case, reply in zip(cases, replies, strict=True):
            tally[case.kind] += 1
            outcomes[case.expect] += 1
            if case.target in MODEL_ROUTES and case.method == "POST" and "x-request-id" in reply.headers \
                    and reply.status != 401:
                traced += 1  # authenticated: the proxy traces it, whatever became of it
            failures += [f"{case.kind} {case.method} {case.target[:80]} {case.body[:200]!r} -> {reply.status} "
                         f"{reply.body[:200]!r}: {problem}" for problem in judge(case, reply, targets)]
        assert not failures, "\n".join(failures)

    try:
        batch()
    finally:
        loop.close()
    elapsed = time.monotonic() - started

    total = sum(tally.values())
    print(f"\nfuzz: {total} requests, {len(tally)} classes, {elapsed:.1f} s, {traced} traced; "
          f"rarest: {tally.most_common()[-12:]}")
    assert total >= 10_000, f"only {total} requests were generated"
    rare = {name: tally[name] for name in fuzz.classes() if tally[name] < 10}
    assert not rare, f"input classes sent fewer than 10 times: {rare}"
    assert outcomes["refuse"] >= 6000 and outcomes["ok"] >= 1000, outcomes
    assert _process_ids(stack) == before, "a process died or was restarted during the fuzz run"
    assert set(_ready(stack).values()) == {200}
    assert new_log_problems(watched_logs) == []

    control = _provoke_an_upstream_refusal(stack, targets)  # shows the leak query can find one
    count = "SELECT count() AS n FROM traces FINAL WHERE organization_id = {org:String}"
    wait_for(lambda: int(sql(stack, count, {"org": org})[0]["n"]) >= traced + 1, timeout=90)
    leaks = leaked_to_upstream(stack, org)
    assert [row["request_id"] for row in leaks] == [control], f"bad requests that reached the provider: {leaks}"


def _provoke_an_upstream_refusal(stack: Stack, targets: fuzz.Targets) -> str:
    """One request the emulated provider refuses with a 400 (a fault plan): the one allowed upstream 4xx."""
    emulator = stack.children["emulator"].url
    status, _ = http_json("PUT", f"{emulator}/_emulator/faults/gpt-4.1-nano", body={"status": 400, "fail_times": 1})
    assert status == 200
    reply = _send_one(stack, fuzz.Case("control", "proxy", "POST", "/v1/chat/completions",
                                       ((b"Authorization", b"Bearer " + targets.api_key.encode()),),
                                       b'{"model": "gpt-4.1-nano", "messages": [{"role": "user", "content": "x"}]}',
                                       "refuse", "openai"))
    assert reply.status == 400, reply
    return reply.headers["x-request-id"]


def test_the_oracle_flags_what_it_must() -> None:
    """The fuzz run can fail: each kind of wrong answer is caught by fuzz.problems."""
    case = fuzz.Case("t", "proxy", "POST", "/v1/chat/completions", (), b"{}", "refuse", "openai")
    good = rawhttp.Reply(400, {"content-type": "application/json"},
                      b'{"error": {"message": "m", "type": "invalid_request_error", "param": null, "code": "c"}}')
    assert fuzz.problems(case, good) == []
    for status, body in [(500, good.body), (502, good.body), (200, b"{}"), (303, b""), (0, b""),
                         (400, b"400: Bad Request"), (400, b'{"error": "flat"}'),
                         (400, good.body[:-2] + b', "trace": "Traceback (most recent call last)"}}'),
                         (404, b'{"error": {"message": "File \\"/srv/x.py\\", line 3", "type": "t", "code": "c"}}')]:
        assert fuzz.problems(case, rawhttp.Reply(status, {}, body)), (status, body)
    anthropic = fuzz.Case("t", "proxy", "POST", "/v1/messages", (), b"{}", "refuse", "anthropic")
    assert fuzz.problems(anthropic, good)  # the OpenAI shape on /v1/messages is wrong
    shaped = rawhttp.Reply(400, {}, b'{"type": "error", "error": {"type": "x", "message": "m"}}')
    assert fuzz.problems(anthropic, shaped) == []
    valid = fuzz.Case("t", "proxy", "POST", "/v1/chat/completions", (), b"{}", "ok", "openai")
    assert fuzz.problems(valid, good) == ["HTTP 400 for a valid request"]


# ------------------------------------------------------------------------------------------ the table

KEY, ADMIN, SPARE_ORG, SPARE_KEY = b"<key>", b"<admin>", "<spare_org>", "<spare_key>"
AUTH = ((b"Authorization", b"Bearer " + KEY),)
ADMIN_AUTH = ((b"Authorization", b"Bearer " + ADMIN),)
CHAT, MESSAGES, EMBEDDINGS = "/v1/chat/completions", "/v1/messages", "/v1/embeddings"
HI = b'[{"role": "user", "content": "hi"}]'


def chat(extra: bytes = b"", model: bytes = b"gpt-4o-mini", messages: bytes = HI) -> bytes:
    return b'{"model": "' + model + b'", "messages": ' + messages + extra + b"}"


def nested(depth: int) -> bytes:
    """A chat body whose JSON nests `depth` levels, in a tool's parameter schema (at level 5: body, tools, tool,
    function, parameters)."""
    chain = b'{"x": ' * (depth - 5) + b"{}" + b"}" * (depth - 5)
    return chat(b', "tools": [{"type": "function", "function": {"name": "f", "parameters": ' + chain + b"}}]")


# (id, service, method, target, headers, body, status, error code; "protocol" = aiohttp's own 400, no JSON)
TABLE: list[tuple[str, str, str, str, tuple[tuple[bytes, bytes], ...], bytes, int, str | None]] = [
    ("json-truncated", "proxy", "POST", CHAT, AUTH, b'{"model": "gpt-4o-mini", "messages": [', 400, "invalid_json"),
    ("json-trailing-comma", "proxy", "POST", CHAT, AUTH, chat(b","), 400, "invalid_json"),
    ("json-empty-body", "proxy", "POST", CHAT, AUTH, b"", 400, "invalid_json"),
    ("json-array", "proxy", "POST", CHAT, AUTH, b"[]", 400, "invalid_request"),
    ("json-nan", "proxy", "POST", CHAT, AUTH, chat(b', "temperature": NaN'), 400, "invalid_json"),
    ("json-huge-number", "proxy", "POST", CHAT, AUTH, chat(b', "temperature": 1e999'), 400, "invalid_json"),
    ("type-model", "proxy", "POST", CHAT, AUTH, b'{"model": 5, "messages": ' + HI + b"}", 400, "invalid_request"),
    ("type-messages", "proxy", "POST", CHAT, AUTH, chat(messages=b'"hi"'), 400, "invalid_request"),
    ("type-role-object", "proxy", "POST", CHAT, AUTH, chat(messages=b'[{"role": {}, "content": "x"}]'), 400,
     "invalid_request"),
    ("type-content", "proxy", "POST", CHAT, AUTH, chat(messages=b'[{"role": "user", "content": 5}]'), 400,
     "invalid_request"),
    ("type-content-part", "proxy", "POST", CHAT, AUTH, chat(messages=b'[{"role": "user", "content": [5]}]'), 400,
     "invalid_request"),
    ("type-stream", "proxy", "POST", CHAT, AUTH, chat(b', "stream": "yes"'), 400, "invalid_request"),
    ("stream-null-is-valid", "proxy", "POST", CHAT, AUTH, chat(b', "stream": null'), 200, None),
    ("stream-options-alone", "proxy", "POST", CHAT, AUTH, chat(b', "stream_options": {"include_usage": true}'), 400,
     "invalid_request"),
    ("type-tools", "proxy", "POST", CHAT, AUTH, chat(b', "tools": 5'), 400, "invalid_request"),
    ("type-text-part", "proxy", "POST", CHAT, AUTH,
     chat(messages=b'[{"role": "user", "content": [{"type": "text", "text": ["x"]}]}]'), 400, "invalid_request"),
    ("type-reasoning-effort-gemini", "proxy", "POST", CHAT, AUTH,
     chat(b', "reasoning_effort": ["high"]', model=b"gemini-2.5-flash"), 400, "invalid_request"),
    ("type-tool-call-id-gemini", "proxy", "POST", CHAT, AUTH, chat(model=b"gemini-2.5-flash", messages=(
        b'[{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": ["c1"], "content": "y"}]')), 400,
     "invalid_request"),
    ("no-content-for-anthropic", "proxy", "POST", CHAT, AUTH,
     chat(model=b"claude-haiku-4.5", messages=b'[{"role": "user", "content": []}]'), 400, "invalid_request"),
    ("no-content-for-anthropic-messages", "proxy", "POST", MESSAGES, AUTH,
     b'{"model": "claude-haiku-4.5", "max_tokens": 9, "messages": [{"role": "user", "content": ""}]}', 400, None),
    ("type-temperature", "proxy", "POST", CHAT, AUTH, chat(b', "temperature": "hot"'), 400, "invalid_request"),
    ("missing-model", "proxy", "POST", CHAT, AUTH, b'{"messages": ' + HI + b"}", 400, "invalid_request"),
    ("missing-messages", "proxy", "POST", CHAT, AUTH, b'{"model": "gpt-4o-mini"}', 400, "invalid_request"),
    ("unknown-model", "proxy", "POST", CHAT, AUTH, chat(model=b"gpt-9000"), 404, "model_not_found"),
    ("embedding-model-on-chat", "proxy", "POST", CHAT, AUTH, chat(model=b"text-embedding-3-small"), 400,
     "model_not_supported"),
    ("max-tokens-absurd", "proxy", "POST", CHAT, AUTH, chat(b', "max_tokens": 1' + b"0" * 30), 400, "invalid_value"),
    ("max-tokens-over-cap", "proxy", "POST", CHAT, AUTH, chat(b', "max_completion_tokens": 16385'), 400,
     "invalid_value"),
    ("max-tokens-at-cap", "proxy", "POST", CHAT, AUTH, chat(b', "max_tokens": 16384'), 200, None),
    ("max-tokens-negative", "proxy", "POST", CHAT, AUTH, chat(b', "max_tokens": -1'), 400, "invalid_request"),
    ("max-tokens-float", "proxy", "POST", CHAT, AUTH, chat(b', "max_tokens": 10.5'), 400, "invalid_request"),
    ("messages-max-tokens-absurd", "proxy", "POST", MESSAGES, AUTH,
     b'{"model": "claude-haiku-4.5", "max_tokens": 1000000000, "messages": ' + HI + b"}", 400, None),
    ("messages-text-not-string", "proxy", "POST", MESSAGES, AUTH, b'{"model": "claude-haiku-4.5", "max_tokens": 9, '
     b'"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}', 400, None),
    ("messages-temperature-range", "proxy", "POST", MESSAGES, AUTH,
     b'{"model": "gpt-4o-mini", "max_tokens": 9, "temperature": 7, "messages": ' + HI + b"}", 400, None),
    ("messages-stop-sequences-string", "proxy", "POST", MESSAGES, AUTH,
     b'{"model": "claude-haiku-4.5", "max_tokens": 9, "stop_sequences": "ab", "messages": ' + HI + b"}", 400, None),
    ("embeddings-empty-input", "proxy", "POST", EMBEDDINGS, AUTH, b'{"model": "text-embedding-3-small", "input": ""}',
     400, "invalid_request"),
    ("embeddings-negative-token", "proxy", "POST", EMBEDDINGS, AUTH,
     b'{"model": "text-embedding-3-small", "input": [1, -5]}', 400, "invalid_request"),
    ("embeddings-bool-token", "proxy", "POST", EMBEDDINGS, AUTH,
     b'{"model": "text-embedding-3-small", "input": [true]}', 400, "invalid_request"),
    ("huge-body", "proxy", "POST", CHAT, AUTH, chat(b', "user": "' + b"x" * LIMIT + b'"'), 413, "request_too_large"),
    ("huge-body-messages", "proxy", "POST", MESSAGES, AUTH, b"x" * (LIMIT + 1), 413, None),
    ("huge-body-embeddings", "proxy", "POST", EMBEDDINGS, AUTH, b"x" * (LIMIT + 1), 413, "request_too_large"),
    ("just-under-the-limit", "proxy", "POST", CHAT, AUTH, b" " * (LIMIT - 2) + b"{}", 400, "invalid_request"),
    ("nested-100000", "proxy", "POST", CHAT, AUTH, b"[" * 100_000, 400, "invalid_json"),
    ("nested-995-levels", "proxy", "POST", CHAT, AUTH, nested(995), 400, "invalid_json"),
    ("nested-129-levels", "proxy", "POST", CHAT, AUTH, nested(129), 400, "invalid_json"),
    ("nested-128-levels-is-valid", "proxy", "POST", CHAT, AUTH, nested(128), 200, None),
    ("nested-embeddings", "proxy", "POST", EMBEDDINGS, AUTH, b'{"input": ' + b"[" * 5000, 400, "invalid_json"),
    ("nested-messages", "proxy", "POST", MESSAGES, AUTH, b'{"system": ' + b"[" * 5000, 400, None),
    ("utf8-invalid-in-string", "proxy", "POST", CHAT, AUTH, chat(messages=b'[{"role": "user", "content": "\xff"}]'),
     400, "invalid_json"),
    ("utf8-overlong", "proxy", "POST", CHAT, AUTH, chat(messages=b'[{"role": "user", "content": "\xc0\xaf"}]'), 400,
     "invalid_json"),
    ("utf8-encoded-surrogate", "proxy", "POST", MESSAGES, AUTH, b'{"model": "claude-haiku-4.5", "max_tokens": 9, '
     b'"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}', 400, None),
    ("utf8-invalid-embeddings", "proxy", "POST", EMBEDDINGS, AUTH,
     b'{"model": "text-embedding-3-small", "input": "\xff"}', 400, "invalid_json"),
    ("json-lone-surrogate", "proxy", "POST", CHAT, AUTH, chat(messages=b'[{"role": "user", "content": "\\ud800"}]'),
     400, "invalid_json"),
    ("nul-raw-in-json", "proxy", "POST", CHAT, AUTH, chat(messages=b'[{"role": "user", "content": "a\x00b"}]'), 400,
     "invalid_json"),
    ("nul-escaped-is-valid", "proxy", "POST", CHAT, AUTH, chat(messages=b'[{"role": "user", "content": "a\\u0000"}]'),
     200, None),
    ("nul-in-model", "proxy", "POST", CHAT, AUTH, chat(model=b"gpt-4o-mini\\u0000"), 404, "model_not_found"),
    ("nul-in-trace-id", "proxy", "GET", "/v1/traces/%00", AUTH, b"", 404, "trace_not_found"),
    ("nul-raw-in-path", "proxy", "GET", "/v1/traces/\x00", AUTH, b"", 400, "protocol"),
    ("header-cr", "proxy", "POST", CHAT, (*AUTH, (b"X-Note", b"a\rb")), chat(), 400, "protocol"),
    ("header-lf", "proxy", "POST", CHAT, (*AUTH, (b"X-Note", b"a\nb")), chat(), 400, "protocol"),
    ("header-crlf-no-colon", "proxy", "POST", CHAT, (*AUTH, (b"X-Note", b"a\r\nnot a header")), chat(), 400,
     "protocol"),
    ("header-obs-fold", "proxy", "POST", CHAT, (*AUTH, (b"X-Note", b"a\r\n folded")), chat(), 400, "protocol"),
    ("header-nul", "proxy", "POST", CHAT, ((b"Authorization", b"Bearer " + KEY + b"\x00"),), chat(), 400,
     "protocol"),
    ("header-too-long", "proxy", "GET", "/v1/models", ((b"X-Long", b"a" * 9000),), b"", 400, "protocol"),
    ("auth-non-ascii", "proxy", "POST", CHAT, ((b"Authorization", b"Bearer rk-\xff\xfe"),), chat(), 401,
     "invalid_api_key"),
    ("auth-non-ascii-x-api-key", "proxy", "POST", MESSAGES, ((b"x-api-key", b"rk-\xc3\xa9"),), chat(), 401, None),
    ("auth-admin-token-non-ascii", "proxy", "GET", "/v1/logs", ((b"Authorization", b"Bearer " + ADMIN + b"\xff"),),
     b"", 401, "invalid_api_key"),
    ("auth-control-char", "proxy", "GET", "/v1/models", ((b"Authorization", b"Bearer rk-a\tb"),), b"", 401,
     "invalid_api_key"),
    ("auth-too-long", "proxy", "GET", "/v1/models", ((b"Authorization", b"Bearer rk-" + b"a" * 600),), b"", 401,
     "invalid_api_key"),
    ("traversal-trace-encoded", "proxy", "GET", "/v1/traces/..%2F..%2Fetc%2Fpasswd", AUTH, b"", 404,
     "trace_not_found"),
    ("traversal-trace-raw", "proxy", "GET", "/v1/traces/../../etc/passwd", AUTH, b"", 404, "unknown_url"),
    ("traversal-payload", "proxy", "GET", "/v1/payloads/..%2F..%2Fetc?org=..&expires=1&sig=x", (), b"", 403,
     "invalid_payload_link"),
    ("traversal-static-raw", "proxy", "GET", "/dashboard/static/../../service.py", (), b"", 404, "unknown_url"),
    ("traversal-static-dots", "proxy", "GET", "/dashboard/static/%2e%2e/%2e%2e/service.py", (), b"", 404,
     "unknown_url"),
    ("traversal-static-slash", "proxy", "GET", "/dashboard/static/..%2f..%2f..%2fpyproject.toml", (), b"", 404,
     "unknown_url"),
    ("traversal-static-absolute", "proxy", "GET", "/dashboard/static//etc/passwd", (), b"", 404, "unknown_url"),
    ("traversal-dashboard", "proxy", "GET", "/dashboard/../v1/models", (), b"", 404, "unknown_url"),
    ("static-missing", "proxy", "GET", "/dashboard/static/missing.js", (), b"", 404, "unknown_url"),
    ("static-present", "proxy", "GET", "/dashboard/static/app.css", (), b"", 200, None),
    ("wrong-method", "proxy", "GET", CHAT, AUTH, b"", 405, "method_not_allowed"),
    ("wrong-method-messages", "proxy", "PUT", MESSAGES, AUTH, b"", 405, None),
    ("unknown-route", "proxy", "GET", "/v1/nothing", AUTH, b"", 404, "unknown_url"),
    ("logs-limit-not-a-number", "proxy", "GET", "/v1/logs?limit=ten", AUTH, b"", 400, "invalid_request"),
    ("logs-cursor-forged", "proxy", "GET", "/v1/logs?cursor=1%3A..%2F..", AUTH, b"", 400, "invalid_request"),
    ("dashboard-login-deep-json", "proxy", "POST", "/dashboard/login",
     ((b"Origin", b"http://127.0.0.1"), (b"Content-Type", b"application/json")), b'{"token": ' + b"[" * 5000, 400,
     "page"),
    ("dashboard-login-surrogate", "proxy", "POST", "/dashboard/login",
     ((b"Origin", b"http://127.0.0.1"), (b"Content-Type", b"application/json")), b'{"token": "rk-\\ud800"}', 400,
     "page"),
    ("dashboard-keys-non-ascii", "proxy", "GET", "/dashboard/api/keys", ((b"Authorization", b"Bearer \xff"),), b"",
     401, "invalid_api_key"),
    ("admin-negative-rpm", "billing", "POST", f"/v1/admin/organizations/{SPARE_ORG}/keys", ADMIN_AUTH,
     b'{"rate_limit_rpm": -1}', 400, "invalid_request"),
    ("admin-negative-tpm", "billing", "PATCH", f"/v1/admin/keys/{SPARE_KEY}", ADMIN_AUTH,
     b'{"token_limit_tpm": -5}', 400, "invalid_request"),
    ("admin-zero-rpm", "billing", "PATCH", f"/v1/admin/keys/{SPARE_KEY}", ADMIN_AUTH, b'{"rate_limit_rpm": 0}', 400,
     "invalid_request"),
    ("admin-negative-max-spend", "billing", "PATCH", f"/v1/admin/keys/{SPARE_KEY}", ADMIN_AUTH,
     b'{"max_spend_usd": "-1"}', 400, "invalid_request"),
    ("admin-negative-topup", "billing", "POST", f"/v1/admin/organizations/{SPARE_ORG}/topups", ADMIN_AUTH,
     b'{"amount_usd": -5}', 400, "invalid_request"),
    ("admin-topup-overflow", "billing", "POST", f"/v1/admin/organizations/{SPARE_ORG}/topups", ADMIN_AUTH,
     b'{"amount_usd": "1e999999999"}', 400, "invalid_request"),
    ("admin-topup-nan", "billing", "POST", f"/v1/admin/organizations/{SPARE_ORG}/topups", ADMIN_AUTH,
     b'{"amount_usd": "NaN"}', 400, "invalid_request"),
    ("admin-adjust-zero", "billing", "POST", f"/v1/admin/organizations/{SPARE_ORG}/adjustments", ADMIN_AUTH,
     b'{"amount_usd": "0", "reason": "x"}', 400, "invalid_request"),
    ("admin-invalid-utf8", "billing", "POST", "/v1/admin/organizations", ADMIN_AUTH, b'{"name": "\xff"}', 400,
     "invalid_request"),
    ("admin-deep-json", "billing", "POST", "/v1/admin/organizations", ADMIN_AUTH, b"[" * 5000, 400,
     "invalid_request"),
    ("admin-token-non-ascii", "billing", "GET", "/v1/admin/organizations",
     ((b"Authorization", b"Bearer " + ADMIN + b"\xff"),), b"", 401, "invalid_admin_token"),
    ("admin-api-key", "billing", "GET", "/v1/admin/organizations", AUTH, b"", 401, "invalid_admin_token"),
    ("admin-header-cr", "billing", "GET", "/v1/admin/organizations", ((b"Authorization", b"Bearer " + ADMIN + b"\r"),),
     b"", 400, "protocol"),
    ("admin-traversal", "billing", "GET", "/v1/admin/organizations/..%2F..%2Fkeys", ADMIN_AUTH, b"", 404, "not_found"),
]


@pytest.mark.parametrize(("service", "method", "target", "headers", "body", "status", "code"),
                         [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_hand_written_hostile_request(stack: Stack, targets: fuzz.Targets, service: str, method: str, target: str,
                                      headers: tuple[tuple[bytes, bytes], ...], body: bytes, status: int,
                                      code: str | None) -> None:
    values = {KEY: targets.api_key.encode(), ADMIN: targets.admin_token.encode()}
    for placeholder, value in values.items():
        headers = tuple((name, value_.replace(placeholder, value)) for name, value_ in headers)
    target = target.replace(SPARE_ORG, targets.spare_org).replace(SPARE_KEY, targets.spare_key_id)
    shape = {"protocol": "protocol", "page": "page"}.get(code or "", "anthropic" if target == MESSAGES else "openai")
    case = fuzz.Case("table", service, method, target, headers, body, "ok" if status < 300 else "refuse", shape)
    reply = _send_one(stack, case)
    assert reply.status == status, reply
    assert judge(case, reply, targets) == []
    if code not in (None, "protocol", "page"):
        assert reply.json()["error"]["code"] == code, reply
    if status == 413:
        assert str(LIMIT).encode() in reply.body  # the message names the configured limit
    assert set(_ready(stack).values()) == {200}
