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
from proto.billing import AdmitRequest, AuthReply, Settle, SettleReply
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

    async def settle(msg: Msg) -> None:  # refuses each settlement once (retryable), then stores it
        request = codec.decode(msg.data, Settle)
        answers[request.request_id] = answers.get(request.request_id, 0) + 1
        ok = answers[request.request_id] > 1
        await msg.respond(codec.encode(SettleReply(ok=ok, retryable=not ok, code=None if ok else "ledger_busy")))

    await nc.subscribe(subjects.BILLING_SETTLE, cb=settle)
    client = BillingClient(nc, timeout_s=1.0)
    client.start()
    for i in range(30):
        client.settle(Settle(request_id=f"r{i}", api_key_id="key_1", organization_id="org_1",
                             cost_usd=Decimal("0.001")))
    await client.close(10.0)
    assert answers == {f"r{i}": 2 for i in range(30)} and client.backlog == 0


async def test_settlements_wait_while_nobody_answers(nc: Client) -> None:
    client = BillingClient(nc, timeout_s=0.3)
    client.start()
    client.settle(Settle(request_id="r1", api_key_id="key_1", organization_id="org_1", cost_usd=Decimal("0.5")))
    await asyncio.sleep(0.5)  # billing is down: the first sends find no responder and the settlement is kept
    stored: list[str] = []

    async def settle(msg: Msg) -> None:
        stored.append(codec.decode(msg.data, Settle).request_id)
        await msg.respond(codec.encode(SettleReply(ok=True)))

    await nc.subscribe(subjects.BILLING_SETTLE, cb=settle)
    await client.close(10.0)
    assert stored == ["r1"] and client.backlog == 0
