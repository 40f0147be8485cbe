"""A real nats-server and a real billing process: admin API, auth/admit/settle over NATS, the CLI, concurrency."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from launcher import procs
from launcher.nats import NatsServer
from proto import codec, subjects
from proto.billing import (
    AdmitReply,
    AdmitRequest,
    AuthReply,
    AuthRequest,
    KeySettings,
    LeaseReply,
    LeaseRequest,
    Settle,
    SettleBatch,
    SettleBatchReply,
    SettledBatch,
    SettleReply,
    decode_event,
    settlements_in,
)

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "rt-admin-billing-tests-0123456789abcdef"  # the services refuse admin tokens under 32 characters


class BillingProcess:
    """`python -m services.billing` on a free port against `nats_url`; restartable, killable."""

    def __init__(self, data_dir: Path, nats_url: str, **extra_env: str) -> None:
        self.data_dir = data_dir
        self.port = procs.free_port()
        self.log_path = data_dir / "billing.log"
        self.env = {**os.environ, "NATS_URL": nats_url, "BILLING_PORT": str(self.port),
                    "ROUTEUR_ADMIN_TOKEN": ADMIN, "BILLING_KEY_SECRET": "billing-test-key-secret-0123456789abcdef",
                    "PYTHONUNBUFFERED": "1", **extra_env}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = procs.spawn([sys.executable, "-m", "services.billing"], env=self.env, log_path=self.log_path,
                                cwd=ROOT)
        procs.wait_until(lambda: procs.http_ok(f"{self.url}/readyz"), 60, what="billing", proc=self.proc,
                         log_path=self.log_path)

    def kill(self) -> None:
        assert self.proc is not None
        procs.kill(self.proc)

    def terminate(self) -> int:
        assert self.proc is not None
        procs.terminate(self.proc, timeout=30)
        return self.proc.returncode

    def admin(self, method: str, path: str, body: Any = None, token: str | None = ADMIN) -> tuple[int, Any]:
        """(status, JSON body) with every JSON number read as a Decimal, so money compares exactly."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/v1/admin{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
                return response.status, json.loads(response.read(), parse_float=Decimal, parse_int=Decimal)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read(), parse_float=Decimal, parse_int=Decimal)

    def org_with_key(self, org_id: str, funds: str, **key: Any) -> dict[str, Any]:
        """A funded organization and a fresh key (the create-key response, secret included)."""
        status, _ = self.admin("POST", "/organizations", {"id": org_id, "name": org_id})
        assert status == 201
        status, _ = self.admin("POST", f"/organizations/{org_id}/topups", {"amount_usd": funds})
        assert status == 200
        status, created = self.admin("POST", f"/organizations/{org_id}/keys", {"name": "test", **key})
        assert status == 201, created
        return dict(created)


def start_nats(data_dir: Path) -> NatsServer:
    server = NatsServer(data_dir / "nats", port=procs.free_port(), log_path=data_dir / "nats.log")
    server.start()
    return server


@pytest.fixture(scope="module")
def billing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BillingProcess]:
    data_dir = tmp_path_factory.mktemp("billing")
    server = start_nats(data_dir)
    process = BillingProcess(data_dir, server.url)
    try:
        process.start()
        yield process
    finally:
        if process.proc is not None:
            process.terminate()
        server.stop()


@pytest.fixture
async def nc(billing: BillingProcess) -> AsyncIterator[Client]:
    client = await nats.connect(billing.env["NATS_URL"])
    yield client
    await client.close()


async def admit(nc: Client, request_id: str, reserve: str, tokens: int = 0, *, timeout: float = 5.0,
                **who: str) -> AdmitReply:
    request = AdmitRequest(request_id=request_id, reserve_usd=Decimal(reserve), reserve_tokens=tokens, **who)
    reply = await nc.request(subjects.BILLING_ADMIT, codec.encode(request), timeout=timeout)
    return codec.decode(reply.data, AdmitReply)


async def settle(nc: Client, key: dict[str, Any], request_id: str, cost: Decimal, tokens: int = 0, *,
                 timeout: float = 5.0) -> SettleReply:
    message = Settle(request_id=request_id, api_key_id=key["id"], organization_id=key["organization_id"],
                     cost_usd=cost, total_tokens=tokens)
    reply = await nc.request(subjects.BILLING_SETTLE, codec.encode(message), timeout=timeout)
    return codec.decode(reply.data, SettleReply)


def test_admin_api_manages_orgs_wallets_and_keys(billing: BillingProcess) -> None:
    key = billing.org_with_key("org_admin", "12.50", max_spend_usd="5", period="day", rate_limit_rpm=60)
    assert key["secret"].startswith("rk-") and key["id"].startswith("key_01")
    assert (key["max_spend_usd"], key["period"], key["rate_limit_rpm"]) == (5, "day", 60)
    status, listed = billing.admin("GET", "/organizations/org_admin/keys")
    assert status == 200 and [k["id"] for k in listed["data"]] == [key["id"]]
    assert key["secret"] not in json.dumps(listed, default=str) and "digest" not in json.dumps(listed, default=str)
    status, patched = billing.admin("PATCH", f"/keys/{key['id']}", {"rate_limit_rpm": None, "token_limit_tpm": 1000})
    assert status == 200 and patched["rate_limit_rpm"] is None and patched["token_limit_tpm"] == 1000
    assert patched["max_spend_usd"] == 5
    status, body = billing.admin("POST", "/organizations/org_admin/topups", {"amount_usd": "0.5", "topup_id": "inv-7"})
    assert status == 200 and body["organization"]["balance_usd"] == 13 and not body["duplicate"]
    status, body = billing.admin("POST", "/organizations/org_admin/topups", {"amount_usd": "0.5", "topup_id": "inv-7"})
    assert status == 200 and body["duplicate"] and body["organization"]["balance_usd"] == 13
    status, revoked = billing.admin("POST", f"/keys/{key['id']}/revoke")
    assert status == 200 and revoked["revoked"]
    status, org = billing.admin("GET", "/organizations/org_admin")
    assert status == 200 and org["keys"] == 1 and org["available_usd"] == 13


@pytest.mark.parametrize(("method", "path", "body", "token", "status", "code", "param"), [
    ("POST", "/organizations/org_bad/topups", {"amount_usd": -1}, ADMIN, 400, "invalid_request", "amount_usd"),
    ("POST", "/organizations/org_bad/topups", {"amount_usd": "abc"}, ADMIN, 400, "invalid_request", "amount_usd"),
    ("POST", "/organizations/org_bad/topups", {"amount_usd": 1, "oops": 1}, ADMIN, 400, "invalid_request", "oops"),
    ("POST", "/organizations/org_bad/keys", {"max_spend_usd": -2}, ADMIN, 400, "invalid_request", "max_spend_usd"),
    ("POST", "/organizations/org_bad/keys", {"rate_limit_rpm": -1}, ADMIN, 400, "invalid_request", "rate_limit_rpm"),
    ("POST", "/organizations/org_bad/keys", {"period": "week"}, ADMIN, 400, "invalid_request", "period"),
    ("POST", "/organizations", {"id": "acme"}, ADMIN, 400, "invalid_request", "id"),
    ("POST", "/organizations/org_bad/adjustments", {"amount_usd": 1}, ADMIN, 400, "invalid_request", "reason"),
    ("POST", "/organizations/org_nope/topups", {"amount_usd": 1}, ADMIN, 404, "not_found", "organization_id"),
    ("GET", "/keys/key_nope", None, ADMIN, 404, "not_found", "api_key_id"),
    ("GET", "/organizations", None, None, 401, "invalid_admin_token", None),
    ("GET", "/organizations", None, "wrong", 401, "invalid_admin_token", None),
    ("GET", "/nowhere", None, ADMIN, 404, "unknown_url", None),
    ("PUT", "/organizations", {}, ADMIN, 405, "method_not_allowed", None),
    ("PATCH", "/organizations/org_bad", {"oops": True}, ADMIN, 400, "invalid_request", "oops"),
    ("PATCH", "/organizations/org_bad", {"dlp_policy": "Redact!"}, ADMIN, 400, "invalid_request", "dlp_policy"),
    ("PATCH", "/organizations/org_bad", {"archive_payloads": "yes"}, ADMIN, 400, "invalid_request",
     "archive_payloads"),
    ("PATCH", "/organizations/org_nope", {"archive_payloads": True}, ADMIN, 404, "not_found", "organization_id"),
    ("POST", "/organizations", {"id": "org_bad2", "dlp_policy": ""}, ADMIN, 400, "invalid_request", "dlp_policy"),
])
def test_admin_api_rejects_bad_input_with_openai_errors(billing: BillingProcess, method: str, path: str, body: Any,
                                                       token: str | None, status: int, code: str,
                                                       param: str | None) -> None:
    billing.admin("POST", "/organizations", {"id": "org_bad"})
    got_status, got = billing.admin(method, path, body, token=token)
    assert got_status == status, got
    assert set(got["error"]) == {"message", "type", "param", "code"}
    assert (got["error"]["code"], got["error"]["param"]) == (code, param)


async def test_auth_admit_and_settle_over_nats(billing: BillingProcess, nc: Client) -> None:
    key = billing.org_with_key("org_nats", "1", rate_limit_rpm=100)
    reply = await nc.request(subjects.BILLING_AUTH, codec.encode(AuthRequest(api_key=key["secret"])), timeout=5)
    auth = codec.decode(reply.data, AuthReply)
    assert auth.ok and (auth.api_key_id, auth.organization_id) == (key["id"], "org_nats")
    reply = await nc.request(subjects.BILLING_AUTH, codec.encode(AuthRequest(api_key="rk-wrong")), timeout=5)
    assert codec.decode(reply.data, AuthReply).code == "invalid_api_key"

    admitted = await admit(nc, "req-1", "0.2", 100, api_key=key["secret"])
    assert admitted.admitted and admitted.api_key_id == key["id"] and admitted.organization_id == "org_nats"
    assert admitted.rate_limits.headers()["x-ratelimit-remaining-requests"] == "99"
    refused = await admit(nc, "req-2", "0.9", api_key_id=key["id"])
    assert (refused.admitted, refused.code, refused.status) == (False, "insufficient_quota", 402)
    assert (await admit(nc, "req-3", "0.1", api_key="rk-nope")).status == 401

    assert (await settle(nc, key, "req-1", Decimal("0.000123456789"), 80)).ok
    again = await settle(nc, key, "req-1", Decimal("0.000123456789"), 80)
    assert again.ok and again.duplicate
    status, org = billing.admin("GET", "/organizations/org_nats")
    assert status == 200 and org["balance_usd"] == Decimal("0.999876543211")
    assert org["reserved_usd"] == 0

    for garbage in (b"not json", b'{"request_id": 5}', b"{}"):
        reply = await nc.request(subjects.BILLING_ADMIT, garbage, timeout=5)
        assert codec.decode(reply.data, AdmitReply).code == "invalid_request"
        reply = await nc.request(subjects.BILLING_SETTLE, garbage, timeout=5)
        assert codec.decode(reply.data, SettleReply).status == 400
    assert (await admit(nc, "req-4", "0.1", api_key=key["secret"])).admitted  # the subscriber lived


async def _ledger_events(nc: Client) -> list[object]:
    js = nc.jetstream()
    last = (await js.stream_info(subjects.LEDGER_STREAM)).state.last_seq
    return [decode_event((await js.get_msg(subjects.LEDGER_STREAM, seq)).data) for seq in range(1, last + 1)]


async def test_a_settle_batch_is_one_stream_message_and_a_retry_writes_nothing(billing: BillingProcess,
                                                                                nc: Client) -> None:
    key = billing.org_with_key("org_batch", "10")
    before = len(await _ledger_events(nc))

    def batch(*items: tuple[str, str]) -> bytes:
        return codec.encode(SettleBatch(tuple(Settle(request_id=rid, api_key_id=key["id"],
                                                     organization_id="org_batch", cost_usd=Decimal(cost))
                                              for rid, cost in items)))

    items = [("b1", "0.1"), ("b2", "0.2"), ("b1", "0.1"), ("b3", "-1"), ("b4", "0.4")]
    reply = codec.decode((await nc.request(subjects.BILLING_SETTLE_BATCH, batch(*items), timeout=5)).data,
                         SettleBatchReply).replies
    assert [(r.ok, r.duplicate) for r in reply] == [(True, False), (True, False), (True, True), (False, False),
                                                    (True, False)]
    assert reply[3].status == 400 and not reply[3].retryable  # a negative cost is refused alone, for good
    events = (await _ledger_events(nc))[before:]
    assert len(events) == 1 and isinstance(events[0], SettledBatch)
    assert [m.request_id for m in events[0].settlements] == ["b1", "b2", "b4"]
    again = codec.decode((await nc.request(subjects.BILLING_SETTLE_BATCH, batch(*items[:3]), timeout=5)).data,
                         SettleBatchReply).replies
    assert all(r.ok and r.duplicate for r in again) and len(await _ledger_events(nc)) == before + 1
    status, org = billing.admin("GET", "/organizations/org_batch")
    assert status == 200 and org["balance_usd"] == Decimal("9.3")


async def test_a_retry_in_another_batch_while_the_first_write_is_in_flight_is_stored_once(
        billing: BillingProcess, nc: Client) -> None:
    """A proxy whose settle request timed out re-sends the same settlements, batched with others: whatever
    the interleaving, each request is in the ledger stream exactly once."""
    key = billing.org_with_key("org_overlap", "100")
    before = len(await _ledger_events(nc))

    def batch(ids: range) -> bytes:
        return codec.encode(SettleBatch(tuple(Settle(request_id=f"ov{i}", api_key_id=key["id"],
                                                     organization_id="org_overlap", cost_usd=Decimal("0.01"))
                                              for i in ids)))

    shapes = [range(0, 40), range(20, 60), range(10, 50), range(0, 60), range(55, 80)]
    replies = await asyncio.gather(*(nc.request(subjects.BILLING_SETTLE_BATCH, batch(ids), timeout=10)
                                     for ids in shapes))
    for reply in replies:
        assert all(r.ok for r in codec.decode(reply.data, SettleBatchReply).replies)
    stored = [member.request_id for event in (await _ledger_events(nc))[before:] for member in settlements_in(event)]
    assert sorted(stored) == sorted(f"ov{i}" for i in range(80))
    status, org = billing.admin("GET", "/organizations/org_overlap")
    assert status == 200 and org["spent_usd"] == Decimal("0.80")


async def test_a_lease_over_nats_reserves_and_its_settlements_draw_from_it(billing: BillingProcess,
                                                                           nc: Client) -> None:
    key = billing.org_with_key("org_lease", "10")
    request = LeaseRequest(lease_id="lease_t1", api_key=key["secret"], want_usd=Decimal("1"), min_usd=Decimal("0.01"))
    lease = codec.decode((await nc.request(subjects.BILLING_LEASE, codec.encode(request), timeout=5)).data,
                         LeaseReply)
    assert lease.granted and lease.granted_usd == Decimal("1") and lease.api_key_id == key["id"]
    status, org = billing.admin("GET", "/organizations/org_lease")
    assert org["reserved_usd"] == Decimal("1")
    settles = SettleBatch(tuple(Settle(request_id=f"l{i}", api_key_id=key["id"], organization_id="org_lease",
                                       cost_usd=Decimal("0.1"), lease_id="lease_t1") for i in range(3)))
    replies = codec.decode((await nc.request(subjects.BILLING_SETTLE_BATCH, codec.encode(settles), timeout=5)).data,
                           SettleBatchReply).replies
    assert all(r.ok for r in replies)
    status, org = billing.admin("GET", "/organizations/org_lease")
    assert (org["balance_usd"], org["reserved_usd"]) == (Decimal("9.7"), Decimal("0.7"))
    release = LeaseRequest(lease_id="lease_t1", release=True)
    released = codec.decode((await nc.request(subjects.BILLING_LEASE, codec.encode(release), timeout=5)).data,
                            LeaseReply)
    assert released.reason == "released"
    status, org = billing.admin("GET", "/organizations/org_lease")
    assert (org["balance_usd"], org["reserved_usd"]) == (Decimal("9.7"), 0)
    limited = billing.org_with_key("org_lease_rpm", "10", rate_limit_rpm=5)
    request = LeaseRequest(lease_id="lease_t2", api_key=limited["secret"], want_usd=Decimal("1"))
    refused = codec.decode((await nc.request(subjects.BILLING_LEASE, codec.encode(request), timeout=5)).data,
                           LeaseReply)
    assert (refused.granted, refused.reason) == (False, "rate_limited")


async def test_rpm_limit_over_nats_with_retry_after(billing: BillingProcess, nc: Client) -> None:
    key = billing.org_with_key("org_rpm", "1", rate_limit_rpm=3, token_limit_tpm=10_000)
    replies = [await admit(nc, f"rpm-{i}", "0", 10, api_key=key["secret"]) for i in range(4)]
    assert [r.admitted for r in replies] == [True, True, True, False]
    refused = replies[-1]
    assert refused.code == "rate_limit_exceeded" and refused.status == 429
    assert refused.retry_after_s is not None and 59 < refused.retry_after_s <= 60
    headers = refused.rate_limits.headers()
    assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-remaining-tokens"] == "9970"


async def test_300_concurrent_admits_never_pass_max_spend(billing: BillingProcess, nc: Client) -> None:
    key = billing.org_with_key("org_burst", "100", max_spend_usd="0.50")
    replies = await asyncio.gather(*(admit(nc, f"burst-{i}", "0.01", api_key=key["secret"]) for i in range(300)))
    admitted = [f"burst-{i}" for i, r in enumerate(replies) if r.admitted]
    assert 45 <= len(admitted) <= 50
    assert {r.code for r in replies if not r.admitted} == {"budget_exceeded"}
    settled = await asyncio.gather(*(settle(nc, key, rid, Decimal("0.01")) for rid in admitted))
    assert all(s.ok for s in settled)
    status, got = billing.admin("GET", f"/keys/{key['id']}")
    assert status == 200 and got["spent_usd"] <= Decimal("0.50") and got["reserved_usd"] == 0


async def test_300_concurrent_requests_admit_settle_within_max_spend(billing: BillingProcess, nc: Client) -> None:
    """Requests admit, run, settle: released reservations let more in, spend never passes maxSpend."""
    key = billing.org_with_key("org_flow", "100", max_spend_usd="0.50")
    costs: list[Decimal] = []

    async def request(i: int) -> None:
        await asyncio.sleep((i % 30) * 0.002)
        reply = await admit(nc, f"flow-{i}", "0.01", 500, api_key=key["secret"])
        if reply.admitted:
            await asyncio.sleep(0.005)
            cost = Decimal("0.01") - Decimal(i % 5) / 1000
            assert (await settle(nc, key, f"flow-{i}", cost, 400)).ok
            costs.append(cost)

    await asyncio.gather(*(request(i) for i in range(300)))
    assert len(costs) >= 45 and sum(costs) <= Decimal("0.50")
    status, org = billing.admin("GET", "/organizations/org_flow")
    assert status == 200 and org["balance_usd"] == Decimal(100) - sum(costs, Decimal(0))


async def auth(nc: Client, secret: str) -> AuthReply:
    reply = await nc.request(subjects.BILLING_AUTH, codec.encode(AuthRequest(api_key=secret)), timeout=5)
    return codec.decode(reply.data, AuthReply)


async def test_org_settings_apply_to_every_key_and_a_keys_own_dlp_policy_wins(billing: BillingProcess,
                                                                                nc: Client) -> None:
    status, org = billing.admin("POST", "/organizations", {"id": "org_settings", "dlp_policy": "redact"})
    assert status == 201 and (org["archive_payloads"], org["dlp_policy"]) == (False, "redact")
    assert billing.admin("POST", "/organizations/org_settings/topups", {"amount_usd": "1"})[0] == 200
    _, plain = billing.admin("POST", "/organizations/org_settings/keys", {"name": "plain"})
    _, strict = billing.admin("POST", "/organizations/org_settings/keys", {"name": "strict", "dlp_policy": "block"})
    assert plain["effective"] == {"archive_payloads": False, "dlp_policy": "redact"}
    assert (await auth(nc, plain["secret"])).settings == KeySettings(dlp_policy="redact")
    assert (await auth(nc, strict["secret"])).settings == KeySettings(dlp_policy="block")

    status, org = billing.admin("PATCH", "/organizations/org_settings", {"archive_payloads": True})
    assert status == 200 and (org["archive_payloads"], org["dlp_policy"]) == (True, "redact")
    assert billing.admin("GET", "/organizations/org_settings")[1]["archive_payloads"] is True
    assert (await auth(nc, plain["secret"])).settings == KeySettings(archive_payloads=True, dlp_policy="redact")
    assert (await auth(nc, strict["secret"])).settings == KeySettings(archive_payloads=True, dlp_policy="block")
    admitted = await admit(nc, "org-settings-1", "0.01", api_key=strict["secret"])
    assert admitted.admitted and admitted.settings == KeySettings(archive_payloads=True, dlp_policy="block")

    status, view = billing.admin("GET", f"/keys/{plain['id']}")
    assert status == 200 and (view["archive_payloads"], view["dlp_policy"]) == (False, "off")
    assert view["effective"] == {"archive_payloads": True, "dlp_policy": "redact"}
    _, listed = billing.admin("GET", "/organizations/org_settings/keys")
    assert {k["name"]: k["effective"]["dlp_policy"] for k in listed["data"]} == {"plain": "redact",
                                                                                   "strict": "block"}

    status, org = billing.admin("PATCH", "/organizations/org_settings", {"archive_payloads": False,
                                                                         "dlp_policy": "off"})
    assert status == 200 and (org["archive_payloads"], org["dlp_policy"]) == (False, "off")
    assert (await auth(nc, plain["secret"])).settings == KeySettings()


def test_cli_drives_the_admin_api(billing: BillingProcess, tmp_path: Path) -> None:
    env = {**os.environ, "ROUTEUR_BILLING_URL": billing.url, "ROUTEUR_ADMIN_TOKEN": ADMIN}

    def cli(*args: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "services.billing.cli", "--env-file", str(tmp_path / "none"),
                               "--json", *args], env=env, cwd=ROOT, capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr.decode()
        return json.loads(done.stdout)

    assert cli("create-org", "--id", "org_cli", "--name", "CLI")["id"] == "org_cli"
    assert cli("top-up", "org_cli", "20.25", "--id", "inv-1")["organization"]["balance_usd"] == 20.25
    key = cli("create-key", "org_cli", "--name", "ci", "--max-spend", "3", "--period", "month", "--rpm", "60")
    assert key["secret"].startswith("rk-") and key["period"] == "month"
    changed = cli("set-limits", key["id"], "--rpm", "none", "--tpm", "5000")
    assert changed["rate_limit_rpm"] is None and changed["token_limit_tpm"] == 5000 and changed["max_spend_usd"] == 3
    assert [k["id"] for k in cli("list-keys", "org_cli")["data"]] == [key["id"]]
    assert cli("balance", "org_cli")["available_usd"] == 20.25
    assert cli("revoke-key", key["id"])["revoked"]
    assert cli("create-org", "--id", "org_cli_set", "--archive-payloads")["archive_payloads"] is True
    changed_org = cli("set-org", "org_cli_set", "--no-archive-payloads", "--dlp-policy", "redact")
    assert (changed_org["archive_payloads"], changed_org["dlp_policy"]) == (False, "redact")
    cli("create-key", "org_cli_set", "--name", "inherits")
    text = subprocess.run([sys.executable, "-m", "services.billing.cli", "list-keys", "org_cli_set"], env=env,
                          cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert text.returncode == 0 and b"archive off  dlp redact (org)" in text.stdout, text.stdout
    text = subprocess.run([sys.executable, "-m", "services.billing.cli", "balance", "org_cli"], env=env, cwd=ROOT,
                          capture_output=True, timeout=60, check=False)
    assert text.returncode == 0 and b"balance 20.25 USD" in text.stdout
    failed = subprocess.run([sys.executable, "-m", "services.billing.cli", "top-up", "org_cli", "-5"], env=env,
                            cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert failed.returncode == 1 and b"400 invalid_request" in failed.stderr
