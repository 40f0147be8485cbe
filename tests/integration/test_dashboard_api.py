"""Dashboard session and read APIs through the real proxies: cookie login/logout, CSRF and revocation, the Keys
JSON, and /v1/logs, /v1/usage, /v1/traces auth, pagination and hostile filters (400 or empty, never a 5xx)."""

from __future__ import annotations

import http.client
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import openai
import pytest

from launcher.stack import Stack
from proto.billing import KeyLimits, KeysQuery, KeysReply
from services.billing import overview
from services.billing.ledger import Ledger
from services.billing.validate import KeyPatch
from services.proxy.dashboard.session import COOKIE, Sessions
from tests.conftest import http_json, sql, wait_for

HOSTILE = ("x' OR 1=1 --", "'; DROP TABLE traces; --", "\\' OR ''='", "model) OR (1=1", "{model:String}",
           "1 UNION SELECT * FROM system.tables", "%00", "\x00", "ü" * 300, "key_1' AND sleep(3) --")


# --- the session cookie itself (pure) ---------------------------------------------------------------


def test_session_seal_open_expiry_and_tampering() -> None:
    sessions = Sessions(b"s" * 32, ttl_s=60)
    cookie = sessions.seal("rk-secret", now_s=1000)
    assert "rk-secret" not in cookie and sessions.open(cookie, now_s=1059) == "rk-secret"
    assert sessions.open(cookie, now_s=1060) is None  # expired
    assert Sessions(b"t" * 32).open(cookie, now_s=1000) is None  # another deployment's admin token
    opened = sessions.open_session(cookie, now_s=1000)
    assert opened is not None and len(opened.session_id) == 32 and opened.expires_s == 1060
    again = sessions.open_session(sessions.seal("rk-secret", now_s=1000), now_s=1000)
    assert again is not None and again.session_id != opened.session_id  # each sign-in is its own session
    flipped = cookie[:20] + ("A" if cookie[20] != "A" else "B") + cookie[21:]
    for bad in (flipped, cookie[:-2], "", "not base64 !", "A" * 3000, cookie + "x"):
        assert sessions.open(bad, now_s=1000) is None, bad
    assert sessions.seal("rk-secret", now_s=1000) != cookie  # a fresh nonce every time


def test_keys_read_model_statuses_spend_and_scope() -> None:
    """billing's BILLING_KEYS answer (pure): per key the period spend against maxSpend, open reservations, status."""
    ledger = Ledger(key_secret=b"k" * 32)
    now_ms = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    for org in ("org_a", "org_b"):
        ledger.apply(ledger.create_org(now_ms=now_ms, org_id=org, name=org.upper()))
        ledger.apply(ledger.top_up(org, Decimal("10"), now_ms=now_ms))  # type: ignore[arg-type]
    made = {}
    for name, org in (("spender", "org_a"), ("off", "org_a"), ("gone", "org_a"), ("other", "org_b")):
        event, secret = ledger.create_key(org, now_ms=now_ms, name=name,
                                          limits=KeyLimits(max_spend_usd=Decimal("2"), period="day"))
        ledger.apply(event)
        made[name] = event.api_key_id
    ledger.apply(ledger.update_key(made["off"], KeyPatch(enabled=False), now_ms=now_ms))
    ledger.apply(ledger.revoke_key(made["gone"], now_ms=now_ms))  # type: ignore[arg-type]
    assert ledger.settle("r1", Decimal("0.5"), 10, now_ms=now_ms, api_key_id=made["spender"])
    assert ledger.admit(made["spender"], "r2", Decimal("0.25"), 5, now_ms / 1000).admitted
    reply = overview.keys_reply(ledger, KeysQuery("org_a"), now_ms)
    assert [w.organization_id for w in reply.organizations] == ["org_a"]
    assert reply.organizations[0].balance_usd == Decimal("9.5")
    assert reply.organizations[0].available_usd == Decimal("9.25")
    by_name = {k.name: k for k in reply.keys}
    assert {n: k.status for n, k in by_name.items()} == {"spender": "active", "off": "disabled", "gone": "revoked"}
    spender = by_name["spender"]
    assert (spender.period_spent_usd, spender.reserved_usd, spender.budget_remaining_usd) == (
        Decimal("0.5"), Decimal("0.25"), Decimal("1.25"))
    assert spender.period_start_ms == now_ms and spender.requests == 1
    everything = overview.keys_reply(ledger, KeysQuery(), now_ms)
    assert len(everything.keys) == 4 and len(everything.organizations) == 2
    assert overview.keys_reply(ledger, KeysQuery("org_zz' OR 1=1"), now_ms) == KeysReply()


# --- helpers -------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def cookie(self) -> str:
        return self.headers.get("Set-Cookie", "")


def raw(url: str, *, method: str = "GET", form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None) -> Reply:
    """One request, redirects not followed (http.client), so Location and Set-Cookie can be checked."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    body = urllib.parse.urlencode(form).encode() if form is not None else None
    sent = dict(headers or {})
    if body is not None:
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body, headers=sent)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def login(base: str, token: str, **extra: str) -> Reply:
    return raw(f"{base}/dashboard/login", method="POST", form={"token": token, **extra}, headers={"Origin": base})


def session_of(reply: Reply) -> str:
    assert reply.status == 303, (reply.status, reply.body[:300])
    value = reply.cookie.split(";", 1)[0]
    assert value.startswith(f"{COOKIE}=")
    return value.split("=", 1)[1]


def with_cookie(session: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={session}"}


@dataclass
class Org:
    id: str
    key_id: str
    secret: str
    request_ids: list[str]


def make_org(stack: Stack, *, requests: int, **limits: Any) -> Org:
    billing, admin = stack.children["billing"].url, stack.secrets["ROUTEUR_ADMIN_TOKEN"]
    org = f"org_dapi_{uuid.uuid4().hex[:10]}"
    assert http_json("POST", f"{billing}/v1/admin/organizations", token=admin, body={"id": org})[0] == 201
    http_json("POST", f"{billing}/v1/admin/organizations/{org}/topups", token=admin, body={"amount_usd": "3"})
    status, key = http_json("POST", f"{billing}/v1/admin/organizations/{org}/keys", token=admin,
                            body={"name": "dapi", **limits})
    assert status == 201, key
    client = openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=key["secret"], max_retries=0)
    ids = [client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"page {i}"}]).headers["x-request-id"]
        for i in range(requests)]
    wait_for(lambda: sql(stack, "SELECT count() AS n FROM traces FINAL WHERE organization_id = {o:String}",
                         {"o": org})[0]["n"] == requests)
    return Org(org, key["id"], key["secret"], ids)


@pytest.fixture(scope="module")
def org(stack: Stack) -> Iterator[Org]:
    yield make_org(stack, requests=5, max_spend_usd="2", period="day", rate_limit_rpm=100)


# --- login, cookie, CSRF, logout, revocation -------------------------------------------------------


def test_login_sets_a_strict_http_only_cookie_that_every_replica_accepts(stack: Stack, org: Org) -> None:
    base, other = stack.proxy_url, stack.children["proxy-2"].url
    reply = login(base, org.secret, next="/dashboard/usage?period=7d")
    session = session_of(reply)
    assert reply.headers["Location"] == "/dashboard/usage?period=7d"
    flags = {part.strip().split("=")[0].lower() for part in reply.cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite", "max-age"} <= flags and "secure" not in flags
    assert "SameSite=Strict" in reply.cookie and "Path=/" in reply.cookie
    assert org.secret not in reply.cookie
    for replica in (base, other):
        status, logs = http_json("GET", f"{replica}/v1/logs?limit=500", headers=with_cookie(session))
        assert status == 200 and {t["request_id"] for t in logs["data"]} == set(org.request_ids)
        assert raw(f"{replica}/dashboard/keys", headers=with_cookie(session)).status == 200
    https = raw(f"{base}/dashboard/login", method="POST", form={"token": org.secret},
                headers={"Origin": base, "X-Forwarded-Proto": "https"})
    assert "Secure" in https.cookie


@pytest.mark.parametrize("origin", [None, "http://evil.example", "null"])
def test_login_and_logout_refuse_other_origins(stack: Stack, org: Org, origin: str | None) -> None:
    headers = {"Origin": origin} if origin else {}
    reply = raw(f"{stack.proxy_url}/dashboard/login", method="POST", form={"token": org.secret}, headers=headers)
    assert reply.status == 403 and not reply.cookie
    reply = raw(f"{stack.proxy_url}/dashboard/logout", method="POST", headers=headers)
    assert reply.status == 403 and not reply.cookie


def test_login_refuses_bad_credentials_and_foreign_next(stack: Stack, org: Org) -> None:
    for token in ("rk-nope", "", "x" * 600, stack.secrets["ROUTEUR_ADMIN_TOKEN"] + "x"):
        reply = login(stack.proxy_url, token)
        assert reply.status in (400, 401) and not reply.cookie, token
    for target in ("https://evil.example/", "//evil.example/dashboard/logs", "/dashboard/login", "/v1/logs",
                   "/dashboard/logs\r\nSet-Cookie: x=1", "javascript:alert(1)"):
        reply = login(stack.proxy_url, org.secret, next=target)
        assert reply.status == 303 and reply.headers["Location"] == "/dashboard/logs", target
    admin = login(stack.proxy_url, stack.secrets["ROUTEUR_ADMIN_TOKEN"])
    status, logs = http_json("GET", f"{stack.proxy_url}/v1/logs?organization_id={org.id}",
                             headers=with_cookie(session_of(admin)))
    assert status == 200 and len(logs["data"]) == 5


def test_pages_redirect_without_a_valid_session_and_logout_clears_it(stack: Stack, org: Org) -> None:
    base = stack.proxy_url
    for path in ("/dashboard/logs", "/dashboard/usage", "/dashboard/keys"):
        reply = raw(f"{base}{path}")
        assert reply.status == 303 and reply.headers["Location"].startswith("/dashboard/login?next=")
    assert raw(f"{base}/dashboard").headers["Location"] == "/dashboard/logs"
    session = session_of(login(base, org.secret))
    page = raw(f"{base}/dashboard/logs", headers=with_cookie(session))
    assert page.status == 200 and org.id.encode() in page.body
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    tampered = session[:-3] + ("AAA" if not session.endswith("AAA") else "BBB")
    assert raw(f"{base}/dashboard/logs", headers=with_cookie(tampered)).status == 303
    assert http_json("GET", f"{base}/v1/logs", headers=with_cookie(tampered))[0] == 401
    out = raw(f"{base}/dashboard/logout", method="POST", headers={"Origin": base, **with_cookie(session)})
    assert out.status == 303 and out.headers["Location"] == "/dashboard/login"
    assert out.cookie.startswith(f"{COOKIE}=;") or out.cookie.startswith(f'{COOKIE}="";')
    assert "Max-Age=0" in out.cookie


def test_logout_ends_the_session_on_every_proxy_even_for_a_copied_cookie(stack: Stack, org: Org) -> None:
    """Sign-out on one proxy puts the session on the shared list: a copy of the cookie (taken before) stops
    working on that proxy at once and on the other within the KV watch's propagation; another session of the
    same key stays open."""
    base, other = stack.proxy_url, stack.children["proxy-2"].url
    session = session_of(login(base, org.secret))
    second = session_of(login(base, org.secret))
    copied = dict(with_cookie(session))
    for replica in (base, other):
        assert http_json("GET", f"{replica}/v1/logs", headers=copied)[0] == 200
    out = raw(f"{base}/dashboard/logout", method="POST", headers={"Origin": base, **with_cookie(session)})
    assert out.status == 303 and "Max-Age=0" in out.cookie
    assert http_json("GET", f"{base}/v1/logs", headers=copied)[0] == 401
    assert raw(f"{base}/dashboard/keys", headers=copied).status == 303
    wait_for(lambda: http_json("GET", f"{other}/v1/logs", headers=copied)[0] == 401, timeout=5, interval=0.05)
    assert raw(f"{other}/dashboard/keys", headers=copied).status == 303
    assert http_json("GET", f"{other}/dashboard/api/keys", headers=copied)[0] == 401
    for replica in (base, other):
        assert http_json("GET", f"{replica}/v1/logs", headers=with_cookie(second))[0] == 200


def test_the_cookie_never_spends(stack: Stack, org: Org) -> None:
    """The cookie authenticates reads only: a cross-site form can never call the metered routes with it."""
    session = session_of(login(stack.proxy_url, org.secret))
    status, body = http_json("POST", f"{stack.proxy_url}/v1/chat/completions", headers=with_cookie(session),
                             body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"


def test_a_revoked_key_ends_its_session(stack: Stack) -> None:
    victim = make_org(stack, requests=1)
    session = session_of(login(stack.proxy_url, victim.secret))
    assert http_json("GET", f"{stack.proxy_url}/v1/logs", headers=with_cookie(session))[0] == 200
    status, _ = http_json("POST", f"{stack.children['billing'].url}/v1/admin/keys/{victim.key_id}/revoke",
                          token=stack.secrets["ROUTEUR_ADMIN_TOKEN"])
    assert status == 200
    # the proxy caches billing's verdict for ~5 s; then every read and page refuses the session
    wait_for(lambda: http_json("GET", f"{stack.proxy_url}/v1/logs", headers=with_cookie(session))[0] == 401,
             timeout=15)
    wait_for(lambda: raw(f"{stack.proxy_url}/dashboard/keys", headers=with_cookie(session)).status == 303,
             timeout=15)
    assert http_json("GET", f"{stack.proxy_url}/dashboard/api/keys", headers=with_cookie(session))[0] == 401
    assert login(stack.proxy_url, victim.secret).status == 401


# --- the Keys JSON -------------------------------------------------------------------------------


def test_keys_api_is_scoped_and_matches_billing(stack: Stack, org: Org) -> None:
    billing, admin = stack.children["billing"].url, stack.secrets["ROUTEUR_ADMIN_TOKEN"]
    truth = wait_for(lambda: (lambda r: r[1] if r[1]["requests"] == 5 else None)(
        http_json("GET", f"{billing}/v1/admin/keys/{org.key_id}", token=admin)))  # settlements are async
    status, mine = http_json("GET", f"{stack.proxy_url}/dashboard/api/keys?organization_id=org_demo",
                             token=org.secret)
    assert status == 200
    assert [w["organization_id"] for w in mine["organizations"]] == [org.id]
    assert [k["api_key_id"] for k in mine["data"]] == [org.key_id]
    key = mine["data"][0]
    _, wallet = http_json("GET", f"{billing}/v1/admin/organizations/{org.id}", token=admin)
    assert key["limits"] == {"max_spend_usd": 2, "period": "day", "rate_limit_rpm": 100, "token_limit_tpm": None}
    assert key["status"] == "active" and key["requests"] == truth["requests"] == 5
    assert Decimal(str(key["period_spent_usd"])) == Decimal(str(truth["period_spent_usd"])) > 0
    assert Decimal(str(key["budget_remaining_usd"])) == Decimal(str(truth["budget_remaining_usd"]))
    assert Decimal(str(mine["organizations"][0]["balance_usd"])) == Decimal(str(wallet["balance_usd"]))
    assert "digest" not in key and "secret" not in key
    status, everything = http_json("GET", f"{stack.proxy_url}/dashboard/api/keys", token=admin)
    assert status == 200 and {org.id, "org_demo"} <= {w["organization_id"] for w in everything["organizations"]}
    status, one = http_json("GET", f"{stack.proxy_url}/dashboard/api/keys?organization_id={org.id}", token=admin)
    assert status == 200 and [k["api_key_id"] for k in one["data"]] == [org.key_id]
    for hostile in HOSTILE:
        query = urllib.parse.urlencode({"organization_id": hostile})
        status, body = http_json("GET", f"{stack.proxy_url}/dashboard/api/keys?{query}", token=admin)
        assert status == 200 and body["data"] == [] and body["organizations"] == [], hostile


# --- the read APIs: auth, pagination, hostile filters --------------------------------------------


def test_read_apis_require_a_valid_credential(stack: Stack, org: Org) -> None:
    urls = ["/v1/logs", "/v1/usage", f"/v1/traces/{org.request_ids[0]}", "/dashboard/api/keys"]
    for path in urls:
        for token in (None, "rk-invalid", "Bearer", stack.secrets["ROUTEUR_ADMIN_TOKEN"][:-1]):
            status, body = http_json("GET", f"{stack.proxy_url}{path}", token=token)
            assert status == 401 and body["error"]["code"] == "invalid_api_key", (path, token)
        assert http_json("GET", f"{stack.proxy_url}{path}", token=org.secret)[0] == 200


def test_logs_pagination_through_the_proxy(stack: Stack, org: Org) -> None:
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        url = f"{stack.proxy_url}/v1/logs?limit=2" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
        status, page = http_json("GET", url, token=org.secret)
        assert status == 200 and len(page["data"]) <= 2
        seen += page["data"]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    ids = [t["request_id"] for t in seen]
    assert pages == 3 and len(ids) == len(set(ids)) and set(ids) == set(org.request_ids)
    keys = [(t["timestamp_ms"], t["request_id"]) for t in seen]
    assert keys == sorted(keys, reverse=True)
    status, big = http_json("GET", f"{stack.proxy_url}/v1/logs?limit=100000", token=org.secret)
    assert status == 200 and len(big["data"]) == 5
    status, smallest = http_json("GET", f"{stack.proxy_url}/v1/logs?limit=-1", token=org.secret)
    assert status == 400 or len(smallest["data"]) <= 1  # clamped to [1, 500]
    for bad in ("limit=abc", "limit=1e3", "cursor=abc", f"cursor=1:{'Z' * 26}%27", "cursor=99999999999999999999:x"):
        status, body = http_json("GET", f"{stack.proxy_url}/v1/logs?{bad}", token=org.secret)
        assert status == 400 and body["error"]["param"] in ("cursor", None), bad


LOG_TEXT = ("api_key_id", "model", "provider", "route_reason", "organization_id")
LOG_TYPED = ("status_code", "limit", "since_ms", "until_ms", "has_fallback", "cursor")
USAGE_TEXT = ("api_key_id", "model", "provider", "organization_id")
USAGE_TYPED = ("group_by", "bucket", "since_ms", "until_ms")


@pytest.mark.parametrize("who", ["key", "admin"])
def test_hostile_filters_answer_400_or_empty_never_an_engine_error(stack: Stack, org: Org, who: str) -> None:
    token = org.secret if who == "key" else stack.secrets["ROUTEUR_ADMIN_TOKEN"]
    before = sql(stack, "SELECT count() AS n FROM traces")[0]["n"]

    def check(path: str, name: str, value: str, *, text: bool) -> None:
        query = urllib.parse.urlencode({name: value})
        status, body = http_json("GET", f"{stack.proxy_url}{path}?{query}", token=token)
        assert status in (200, 400), (path, name, value, status, body)
        if status == 400:
            assert body["error"]["type"] == "invalid_request_error"
            assert "DB::Exception" not in body["error"]["message"] and "Code:" not in body["error"]["message"]
            return
        assert text, (path, name, value)
        if who == "key" and name == "organization_id":  # ignored for a key: its own organization, nothing else
            if path == "/v1/logs":
                assert {t["organization_id"] for t in body["data"]} == {org.id}, value
            else:
                assert body["totals"]["requests"] == 5, value
        elif path == "/v1/logs":
            assert body["data"] == [], (name, value)
        else:
            assert body["data"] == [] and (body["totals"] or {}).get("requests", 0) == 0, (name, value)

    for value in HOSTILE:
        for name in LOG_TEXT:
            check("/v1/logs", name, value, text=True)
        for name in LOG_TYPED:
            check("/v1/logs", name, value, text=False)
        for name in USAGE_TEXT:
            check("/v1/usage", name, value, text=True)
        for name in USAGE_TYPED:
            check("/v1/usage", name, value, text=False)
        status, _ = http_json("GET", f"{stack.proxy_url}/v1/traces/{urllib.parse.quote(value, safe='')}", token=token)
        assert status in (400, 404), value
    assert sql(stack, "SELECT count() AS n FROM traces")[0]["n"] >= before
    status, logs = http_json("GET", f"{stack.proxy_url}/v1/logs?organization_id={org.id}", token=token)
    assert status == 200 and len(logs["data"]) == 5  # nothing was dropped or altered
