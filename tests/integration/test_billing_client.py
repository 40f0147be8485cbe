"""The proxy's billing client against a real NATS server: fail closed by default, fail open within a grace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from launcher import procs
from launcher.nats import NatsServer
from proto import codec, subjects
from proto.billing import (
    AdmitReply,
    AdmitRequest,
    AuthReply,
    KeySettings,
    LeaseReply,
    LeaseRequest,
    Settle,
    SettleBatch,
    SettleBatchReply,
    SettleReply,
)
from services.proxy.billing_client import BillingClient
from services.proxy.errors import ServiceUnavailable

KEY = "rk-test"


@pytest.fixture
async def nc(tmp_path: Path) -> AsyncIterator[Client]:
    server = NatsServer(tmp_path / "nats", port=procs.free_port(), log_path=tmp_path / "nats.log")
    server.start()
    client = await nats.connect(server.url)
    yield client
    await client.close()
    server.stop()


async def _vouch(nc: Client) -> object:
    async def auth(msg: Msg) -> None:
        await msg.respond(codec.encode(AuthReply(ok=True, api_key_id="key_1", organization_id="org_1")))

    return await nc.subscribe(subjects.BILLING_AUTH, cb=auth)


def _admit() -> AdmitRequest:
    return AdmitRequest(request_id="01JTEST", reserve_usd=Decimal("0.01"), api_key=KEY)


@pytest.mark.parametrize("fail_open_s", [0.0, 30.0])
async def test_billing_down_after_auth(nc: Client, fail_open_s: float) -> None:
    client = BillingClient(nc, timeout_s=0.3, fail_open_s=fail_open_s)
    sub = await _vouch(nc)
    assert (await client.authenticate(KEY)).api_key_id == "key_1"
    await sub.unsubscribe()  # billing is gone; nobody answers admit
    if fail_open_s == 0:
        with pytest.raises(ServiceUnavailable, match="billing is unavailable"):
            await client.admit(_admit())
    else:
        reply = await client.admit(_admit())
        assert reply.admitted and reply.organization_id == "org_1"


async def test_grace_expires_and_unknown_keys_never_fail_open(nc: Client) -> None:
    client = BillingClient(nc, timeout_s=0.2, fail_open_s=0.5)
    sub = await _vouch(nc)
    await client.authenticate(KEY)
    await sub.unsubscribe()
    with pytest.raises(ServiceUnavailable):
        await client.admit(AdmitRequest(request_id="01JX", reserve_usd=Decimal(1), api_key="rk-never-seen"))
    await asyncio.sleep(0.6)
    with pytest.raises(ServiceUnavailable):
        await client.admit(_admit())


async def test_settlements_are_retried_until_billing_confirms_each(nc: Client) -> None:
    answers: dict[str, int] = {}

    batches: list[int] = []

    def one(request: Settle) -> SettleReply:  # refuses each settlement once (retryable), then stores it
        answers[request.request_id] = answers.get(request.request_id, 0) + 1
        ok = answers[request.request_id] > 1
        return SettleReply(ok=ok, retryable=not ok, code=None if ok else "ledger_busy")

    async def settle(msg: Msg) -> None:
        batch = codec.decode(msg.data, SettleBatch)
        batches.append(len(batch.settles))
        await msg.respond(codec.encode(SettleBatchReply(tuple(one(request) for request in batch.settles))))

    await nc.subscribe(subjects.BILLING_SETTLE_BATCH, cb=settle)
    client = BillingClient(nc, timeout_s=1.0)
    client.start()
    for i in range(30):
        client.settle(Settle(request_id=f"r{i}", api_key_id="key_1", organization_id="org_1",
                             cost_usd=Decimal("0.001")))
    await client.close(10.0)
    assert answers == {f"r{i}": 2 for i in range(30)} and client.backlog == 0
    assert len(batches) < 30  # settlements submitted together travel together


async def test_settlements_wait_while_nobody_answers(nc: Client) -> None:
    client = BillingClient(nc, timeout_s=0.3)
    client.start()
    client.settle(Settle(request_id="r1", api_key_id="key_1", organization_id="org_1", cost_usd=Decimal("0.5")))
    await asyncio.sleep(0.5)  # billing is down: the first sends find no responder and the settlement is kept
    stored: list[str] = []

    async def settle(msg: Msg) -> None:
        batch = codec.decode(msg.data, SettleBatch).settles
        stored.extend(request.request_id for request in batch)
        await msg.respond(codec.encode(SettleBatchReply(tuple(SettleReply(ok=True) for _ in batch))))

    await nc.subscribe(subjects.BILLING_SETTLE_BATCH, cb=settle)
    await client.close(10.0)
    assert stored == ["r1"] and client.backlog == 0


class FakeBilling:
    """Billing's lease/admit/settle subjects on a real NATS, recording what the proxy's client sends."""

    def __init__(self, nc: Client, *, grant: Decimal | None) -> None:
        self.nc, self.grant = nc, grant
        self.admits: list[str] = []
        self.leases: list[LeaseRequest] = []
        self.settles: list[Settle] = []

    async def start(self) -> None:
        await self.nc.subscribe(subjects.BILLING_ADMIT, cb=self._admit)
        await self.nc.subscribe(subjects.BILLING_LEASE, cb=self._lease)
        await self.nc.subscribe(subjects.BILLING_SETTLE_BATCH, cb=self._settle)

    async def _admit(self, msg: Msg) -> None:
        self.admits.append(codec.decode(msg.data, AdmitRequest).request_id)
        await msg.respond(codec.encode(AdmitReply(admitted=True, api_key_id="key_1", organization_id="org_1")))

    async def _lease(self, msg: Msg) -> None:
        request = codec.decode(msg.data, LeaseRequest)
        self.leases.append(request)
        if request.release or self.grant is None:
            reply = LeaseReply(granted=False, reason="released" if request.release else "rate_limited")
        else:
            reply = LeaseReply(granted=True, granted_usd=self.grant, ttl_s=5.0, api_key_id="key_1",
                               organization_id="org_1", settings=KeySettings(dlp_policy="redact"))
        await msg.respond(codec.encode(reply))

    async def _settle(self, msg: Msg) -> None:
        batch = codec.decode(msg.data, SettleBatch).settles
        self.settles.extend(batch)
        await msg.respond(codec.encode(SettleBatchReply(tuple(SettleReply(ok=True) for _ in batch))))


def _request(i: int, usd: str = "0.01") -> AdmitRequest:
    return AdmitRequest(request_id=f"req{i}", reserve_usd=Decimal(usd), api_key=KEY)


async def test_a_lease_admits_locally_within_its_grant_and_settlements_carry_it(nc: Client) -> None:
    billing = FakeBilling(nc, grant=Decimal("0.05"))
    await billing.start()
    client = BillingClient(nc, timeout_s=1.0)
    client.start()
    first = await client.admit(_request(0))  # no lease yet: billing admits it, and a lease is asked for
    assert first.admitted and billing.admits == ["req0"]
    await asyncio.sleep(0.2)
    replies = [await client.admit(_request(i)) for i in range(1, 8)]
    # 0.05 USD of lease holds five 0.01 worst cases; the sixth and seventh go to billing
    assert billing.admits == ["req0", "req6", "req7"] and client.leased_admissions == 5
    assert all(r.admitted for r in replies) and replies[0].settings == KeySettings(dlp_policy="redact")
    lease_id = billing.leases[0].lease_id
    assert billing.leases[0].want_usd >= Decimal("0.01") and billing.leases[0].min_usd == Decimal("0.01")
    for i in range(8):
        client.settle(Settle(request_id=f"req{i}", api_key_id="key_1", organization_id="org_1",
                             cost_usd=Decimal("0.002")))
    await client.close(5.0)
    by_request = {s.request_id: s.lease_id for s in billing.settles}
    assert by_request == {"req0": None, "req6": None, "req7": None, **{f"req{i}": lease_id for i in range(1, 6)}}
    asked = [r.lease_id for r in billing.leases if not r.release]  # the first, and a renewal as it ran low
    released = [r.lease_id for r in billing.leases if r.release]
    assert sorted(released) == sorted(asked) and lease_id in released  # each given back once all are settled
    assert client.open_leases == 0


async def test_a_declined_lease_leaves_every_request_to_billing(nc: Client) -> None:
    billing = FakeBilling(nc, grant=None)
    await billing.start()
    client = BillingClient(nc, timeout_s=1.0)
    client.start()
    for i in range(5):
        assert (await client.admit(_request(i))).admitted
        await asyncio.sleep(0.05)
    await client.close(5.0)
    assert billing.admits == [f"req{i}" for i in range(5)] and client.leased_admissions == 0
    assert len([r for r in billing.leases if not r.release]) == 1  # declined: not asked again at once


async def test_leases_off_never_asks(nc: Client) -> None:
    billing = FakeBilling(nc, grant=Decimal(1))
    await billing.start()
    client = BillingClient(nc, timeout_s=1.0, leases=False)
    for i in range(3):
        await client.admit(_request(i))
        await asyncio.sleep(0.05)
    assert billing.leases == [] and len(billing.admits) == 3
