"""Security properties of the running stack: key secrets stored only as HMAC digests, the admin API closed to API
keys, one organization blind to another's traces, logs, usage, keys and payload links, secrets compared in
constant time, no secret or prompt in any log line, and every service listening on loopback by default."""

from __future__ import annotations

import ast
import asyncio
import ipaddress
import os
import re
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest

from launcher.stack import Stack
from services.archiver import links
from services.archiver.envelope import parse_master_keys
from services.billing.ledger import Ledger
from tests import rawhttp
from tests.conftest import http_json, wait_for

REPO = Path(__file__).resolve().parent.parent.parent
CHAT = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "%s"}]}'


def admin(stack: Stack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return http_json(method, f"{stack.children['billing'].url}/v1/admin{path}",
                     token=stack.secrets["ROUTEUR_ADMIN_TOKEN"], body=body)


def new_org(stack: Stack, **key_settings: Any) -> tuple[str, dict[str, Any]]:
    """A funded organization and one key (the admin API's answer, with the secret shown once)."""
    org = f"org_sec_{uuid.uuid4().hex[:10]}"
    assert admin(stack, "POST", "/organizations", {"id": org})[0] == 201
    assert admin(stack, "POST", f"/organizations/{org}/topups", {"amount_usd": "10"})[0] == 200
    status, key = admin(stack, "POST", f"/organizations/{org}/keys", {"name": "sec", **key_settings})
    assert status == 201, key
    return org, key


def raw(stack: Stack, method: str, target: str, headers: tuple[tuple[bytes, bytes], ...] = (), body: bytes = b"",
        service: str = "proxy") -> rawhttp.Reply:
    return asyncio.run(rawhttp.send(stack.children[service].port,
                                 rawhttp.request_bytes(method, target, headers=headers, body=body)))


def bearer(secret: str) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"Authorization", b"Bearer " + secret.encode()),)


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


# ------------------------------------------------------------------------------------------ key storage


def test_api_key_secrets_are_stored_only_as_hmac_digests(stack: Stack) -> None:
    """The ledger stream (NATS' files) and billing's snapshot hold a key's HMAC digest, never its secret."""
    _, key = new_org(stack)
    imported = "rk-" + uuid.uuid4().hex + uuid.uuid4().hex  # an imported secret takes the same path
    _, imported_key = new_org(stack, secret=imported)
    secrets = [key["secret"], imported]
    for secret in secrets:
        assert raw(stack, "GET", "/v1/models", bearer(secret)).status == 200
    assert imported_key["secret"] == imported
    for view in (admin(stack, "GET", f"/keys/{key['id']}")[1], admin(stack, "GET", f"/keys/{imported_key['id']}")[1]):
        assert not set(view) & {"secret", "digest"}, view

    stack.stop_service("billing")  # billing writes its snapshot on the way out
    stack.start_service("billing")
    billing_dir = stack.data_dir / "billing"
    assert list(billing_dir.iterdir()), "billing wrote no snapshot"
    ledger = Ledger(key_secret=stack.secrets["BILLING_KEY_SECRET"].encode())
    stored = {where: [path.read_bytes() for path in where.rglob("*") if path.is_file()]
              for where in (stack.nats.data_dir, billing_dir)}
    for secret in secrets:
        digest = ledger.digest(secret).encode()
        for where, contents in stored.items():
            assert any(digest in content for content in contents), f"{where} holds the digest"
            assert not any(secret.removeprefix("rk-").encode() in content for content in contents), where


# ------------------------------------------------------------------------------------------ admin surfaces


def test_admin_apis_refuse_api_keys(stack: Stack) -> None:
    _, key = new_org(stack)
    secret = key["secret"]
    for method, path, body in [("GET", "/organizations", None), ("POST", "/organizations", {"id": "org_evil"}),
                               ("GET", f"/keys/{key['id']}", None), ("PATCH", f"/keys/{key['id']}",
                                                                     {"rate_limit_rpm": None}),
                               ("POST", f"/keys/{key['id']}/revoke", None)]:
        for credential in (secret, None, "", stack.secrets["ROUTEUR_ADMIN_TOKEN"] + "x"):
            status, reply = http_json(method, f"{stack.children['billing'].url}/v1/admin{path}", token=credential,
                                      body=body)
            assert (status, reply["error"]["code"]) == (401, "invalid_admin_token"), (method, path, reply)
    status, reply = http_json("POST", f"{stack.children['tracer'].url}/v1/sql", token=secret,
                              body={"query": "SELECT 1"})
    assert (status, reply["error"]["code"]) == (401, "invalid_admin_token")
    assert http_json("GET", f"{stack.proxy_url}/v1/models", token=secret)[0] == 200  # the key itself works


# ------------------------------------------------------------------------------------------ tenant isolation


def _chat(stack: Stack, secret: str, text: str) -> str:
    reply = raw(stack, "POST", "/v1/chat/completions", bearer(secret), CHAT % text.encode())
    assert reply.status == 200, reply
    return reply.headers["x-request-id"]


def _trace(stack: Stack, secret: str, request_id: str) -> dict[str, Any] | None:
    status, body = http_json("GET", f"{stack.proxy_url}/v1/traces/{request_id}", token=secret)
    return body if status == 200 else None


def test_an_organization_cannot_read_another_organizations_data(stack: Stack) -> None:
    org_a, key_a = new_org(stack)
    org_b, key_b = new_org(stack, archive_payloads=True)
    a, b = key_a["secret"], key_b["secret"]
    mine = _chat(stack, a, "from A")
    theirs = _chat(stack, b, "from B")
    wait_for(lambda: _trace(stack, a, mine))
    payload_url = wait_for(lambda: (_trace(stack, b, theirs) or {}).get("payload_url"), timeout=30)
    assert _trace(stack, stack.secrets["ROUTEUR_ADMIN_TOKEN"], theirs) is not None  # it exists

    status, body = http_json("GET", f"{stack.proxy_url}/v1/traces/{theirs}", token=a)
    assert (status, body["error"]["code"]) == (404, "trace_not_found") and org_b not in str(body)

    def logs(query: str) -> list[str]:
        status, body = http_json("GET", f"{stack.proxy_url}/v1/logs?{query}", token=a)
        assert status == 200, body
        assert {row["organization_id"] for row in body["data"]} <= {org_a}
        return [row["request_id"] for row in body["data"]]

    assert logs("") == [mine]
    assert logs(f"organization_id={org_b}") == [mine]  # an org key cannot widen its scope
    assert logs(f"api_key_id={key_b['id']}") == []

    def usage(query: str) -> Any:
        status, body = http_json("GET", f"{stack.proxy_url}/v1/usage?group_by=key&{query}", token=a)
        assert status == 200, body
        return body["data"], body["totals"]

    wait_for(lambda: usage("")[0], timeout=30)
    assert usage(f"organization_id={org_b}") == usage("")
    assert key_b["id"] not in str(usage(f"organization_id={org_b}")) and usage(f"api_key_id={key_b['id']}")[0] == []

    status, keys = http_json("GET", f"{stack.proxy_url}/dashboard/api/keys?organization_id={org_b}", token=a)
    assert status == 200 and [w["organization_id"] for w in keys["organizations"]] == [org_a]
    assert {k["organization_id"] for k in keys["data"]} == {org_a}

    # The payload link is the credential (anyone holding it may read it, until it expires); A can get none for
    # B's request (the trace lookup is a 404 above), nor turn its own or B's link into another.
    link = urllib.parse.urlsplit(payload_url)
    query = dict(urllib.parse.parse_qsl(link.query))
    assert http_json("GET", payload_url)[0] == 200

    def opened(request_id: str, **changes: str) -> tuple[int, Any]:
        return http_json("GET", f"{stack.proxy_url}/v1/payloads/{request_id}?"
                                f"{urllib.parse.urlencode({**query, **changes})}")

    sig = query["sig"]
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    master = parse_master_keys(os.environ.get("ROUTEUR_MASTER_KEY") or stack.secrets["ROUTEUR_MASTER_KEY"])
    expired = links.mint(org_b, theirs, keys=links.derive_link_keys(master), ttl_s=60, now_s=time.time() - 120)
    for status, body in [opened(theirs, org=org_a), opened(mine), opened(mine, org=org_a), opened(theirs, sig=flipped),
                         opened(theirs, sig=sig[:-1]), opened(theirs, expires=str(int(query["expires"]) + 1)),
                         opened(theirs, expires="9999999999"),
                         http_json("GET", stack.proxy_url + expired.path)]:
        assert (status, body["error"]["code"]) == (403, "invalid_payload_link"), body
    assert "from B" not in str(opened(theirs, org=org_a))


# ------------------------------------------------------------------------------------------ constant time

# The modules that check a presented secret (API key, admin token, payload link signature, session cookie)
CREDENTIAL_MODULES = ("services/proxy/auth.py", "services/proxy/caller.py", "services/proxy/service.py",
                      "services/proxy/pipeline.py", "services/proxy/billing_client.py",
                      "services/proxy/dashboard/routes.py", "services/proxy/dashboard/session.py",
                      "services/archiver/links.py", "services/archiver/service.py", "services/billing/admin.py",
                      "services/billing/ledger.py", "services/billing/service.py", "services/tracer/service.py")
VERIFIERS = ("services/proxy/auth.py", "services/archiver/links.py", "services/billing/admin.py",
             "services/billing/ledger.py", "services/tracer/service.py")
SECRET_NAME = re.compile(r"secret|token|passw|sig|digest|hmac|credential|cookie|presented|given|expected", re.I)
# Comparisons that name a secret but compare no secret value, each with the reason it is safe.
BENIGN = {
    "COOKIE in request.cookies",  # the cookie's name
    "digest in self._by_digest",  # membership of a keyed HMAC digest: its timing tells nothing about a secret
    "event.digest not in self._by_digest",  # the same, replaying the ledger
}


def _names(node: ast.AST) -> list[str]:
    return [n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node)
            if isinstance(n, (ast.Name, ast.Attribute))]


def test_secrets_are_compared_in_constant_time() -> None:
    """No ==, != or `in` on anything named like a secret in the modules that check credentials; the verifiers
    call hmac.compare_digest (session cookies are AES-GCM: the tag check is the library's, in constant time)."""
    found = []
    for module in CREDENTIAL_MODULES:
        tree = ast.parse((REPO / module).read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare) or not any(
                    isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
                continue
            operands = [side for side in (node.left, *node.comparators) if not isinstance(side, ast.Constant)]
            if any(SECRET_NAME.search(name) for side in operands for name in _names(side)) \
                    and ast.unparse(node) not in BENIGN:
                found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert found == [], "compare secrets with hmac.compare_digest"
    for module in VERIFIERS:
        calls = [node for node in ast.walk(ast.parse((REPO / module).read_text()))
                 if isinstance(node, ast.Attribute) and node.attr == "compare_digest"]
        assert calls, f"{module} verifies a secret without hmac.compare_digest"
    assert "AESGCM" in (REPO / "services/proxy/dashboard/session.py").read_text()


def test_the_constant_time_check_catches_a_plain_comparison() -> None:
    """The scan above sees `==` on a token (so it can fail)."""
    tree = ast.parse("def ok(given: str, token: str) -> bool:\n    return given == token\n")
    compare = next(node for node in ast.walk(tree) if isinstance(node, ast.Compare))
    assert any(SECRET_NAME.search(name) for name in _names(compare.left))


# ------------------------------------------------------------------------------------------ logs


def _canary_requests(stack: Stack, key: str, prompt: str, fake_key: str) -> list[str]:
    """Requests that carry the canary prompt or the canary key through every path that might log them: served,
    refused by validation, refused by auth, malformed HTTP. Returns the request ids of those with one."""
    ids = []
    prompt_b, fake = prompt.encode(), fake_key.encode()
    chat = CHAT % prompt_b
    proxied: list[tuple[str, str, tuple[tuple[bytes, bytes], ...], bytes]] = [
        ("POST", "/v1/chat/completions", bearer(key), chat),
        ("POST", "/v1/chat/completions", bearer(key), chat[:-1] + b', "stream": true}'),
        ("POST", "/v1/messages", bearer(key), b'{"model": "claude-haiku-4.5", "max_tokens": 20, "messages": '
                                               b'[{"role": "user", "content": "' + prompt_b + b'"}]}'),
        ("POST", "/v1/embeddings", bearer(key), b'{"model": "text-embedding-3-small", "input": "' + prompt_b + b'"}'),
        ("POST", "/v1/chat/completions", bearer(key), chat[:-1] + b', "temperature": 9}'),
        ("POST", "/v1/chat/completions", bearer(key), chat.replace(b"gpt-4o-mini", prompt_b)),  # unknown model
        ("POST", "/v1/chat/completions", bearer(key), chat[:-3]),  # invalid JSON
        ("POST", "/v1/chat/completions", bearer(key), chat.replace(prompt_b, prompt_b + b"\xff")),
        ("POST", "/v1/chat/completions", bearer(key), chat[:-1] + b', "x": ' + b"[" * 2000 + b"]" * 2000 + b"}"),
        ("POST", "/v1/chat/completions", bearer(key), chat[:-1] + b', "user": "' + b"x" * (1 << 20) + b'"}'),
        ("POST", "/v1/chat/completions", bearer(fake_key), chat),
        ("POST", "/v1/messages", ((b"x-api-key", fake),), chat),
        ("GET", "/v1/logs?model=" + prompt, bearer(fake_key), b""),
        ("GET", "/dashboard/api/keys", bearer(fake_key), b""),
        ("GET", "/v1/models", ((b"Authorization", b"Bearer " + fake + b"\xff"),), b""),
    ]
    for method, target, headers, body in proxied:
        reply = raw(stack, method, target, headers, body)
        assert reply.status < 500, (target, reply)
        ids.append(reply.headers["x-request-id"])
    login = raw(stack, "POST", "/dashboard/login", ((b"Origin", b"http://127.0.0.1"),
                                                     (b"Content-Type", b"application/x-www-form-urlencoded")),
                b"token=" + fake + b"&next=%2Fdashboard%2Flogs")
    assert login.status == 401
    malformed = [bearer(fake_key)[0][1] + b"\r", bearer(fake_key)[0][1] + b"\x00", b"a\r\n " + fake,
                 prompt_b + b"\rx", b"a" * 9000 + fake]
    for value in malformed:
        for service in ("proxy", "billing"):
            reply = raw(stack, "GET", "/v1/models", ((b"Authorization", value),), service=service)
            assert reply.status == 400, reply
    for credential in (fake, fake + b"\xff"):
        reply = raw(stack, "GET", "/v1/admin/organizations", ((b"Authorization", b"Bearer " + credential),),
                    service="billing")
        assert reply.status == 401, reply
    return ids


def test_no_secret_or_prompt_in_any_log_line(stack: Stack) -> None:
    """Every log file but the provider emulator's (it stands for the provider, which sees prompts) is searched
    for the canary prompt and the canary key; the search is first shown to find what every log does hold."""
    canary = uuid.uuid4().hex
    _, key = new_org(stack)
    ids = _canary_requests(stack, key["secret"], f"CANARYPROMPT{canary}", f"rk-CANARYKEY{canary}")
    time.sleep(1.0)  # log lines are written as the requests end; give the slowest a moment
    logs = [path for path in stack.logs.rglob("*") if path.is_file() and not path.name.startswith("emulator")]
    assert any(ids[0].encode() in path.read_bytes() for path in logs), "the search finds the request ids"
    for secret in (canary, key["secret"], stack.secrets["ROUTEUR_ADMIN_TOKEN"], stack.secrets["BILLING_KEY_SECRET"]):
        lines = [f"{path.name}: {line[:300]!r}" for path in logs for line in path.read_bytes().splitlines()
                 if secret.encode() in line]
        assert lines == []


@pytest.mark.parametrize("service", ["tracer", "router", "archiver"])
def test_malformed_requests_to_other_services_keep_secrets_out_of_their_logs(stack: Stack, service: str) -> None:
    canary = f"rt-CANARY{uuid.uuid4().hex}".encode()
    reply = raw(stack, "GET", "/readyz", ((b"Authorization", b"Bearer " + canary + b"\r"),), service=service)
    assert reply.status == 400
    time.sleep(0.5)
    assert files_containing(stack.logs, canary) == []


# ------------------------------------------------------------------------------------------ loopback

SERVICES = ("proxy", "billing", "tracer", "router", "archiver", "emulator")


@pytest.mark.parametrize("service", SERVICES)
def test_services_default_to_loopback(service: str) -> None:
    """Each service's settings, with only the variables it requires, bind 127.0.0.1."""
    settings_module = __import__(f"services.{service}.settings", fromlist=["load"])
    settings = settings_module.load({"ROUTEUR_ADMIN_TOKEN": "t" * 40})
    host = settings.host if hasattr(settings, "host") else settings.base.host
    assert host == "127.0.0.1"


def _listening(pids: list[int]) -> dict[int, list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """Local addresses of every TCP socket in LISTEN state owned by `pids` (from /proc), by pid."""
    inodes: dict[str, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes[target[8:-1]] = pid
    found: dict[int, list[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {pid: [] for pid in pids}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:
                found[inodes[inode]].append(_address(local))
    return found


def _address(local: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address of /proc/net/tcp{,6}: hex, each 32-bit word in the host's (little-endian) byte order."""
    raw = bytes.fromhex(local.split(":")[0])
    return ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))


def _loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_the_running_stack_listens_on_loopback_only(stack: Stack) -> None:
    """The launcher's stack (what `make run` starts): every listening socket of every process is 127.0.0.1."""
    procs = [child.proc for child in stack.children.values()] + [stack.nats.proc]
    listening = _listening([proc.pid for proc in procs if proc is not None])
    assert all(listening.values()), listening
    exposed = {pid: [str(a) for a in addresses] for pid, addresses in listening.items()
               if not all(_loopback(address) for address in addresses)}
    assert exposed == {}, f"listening beyond loopback: {exposed}"
    assert "0.0.0.0" not in (REPO / "launcher/stack.py").read_text()  # noqa: S104 (the string searched for)
