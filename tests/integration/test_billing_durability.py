"""Billing killed with SIGKILL mid-load, stopped with SIGTERM, restarted from stream replay or snapshot."""

from __future__ import annotations

import asyncio
import random
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client

from tests.integration.test_billing_service import BillingProcess, admit, settle, start_nats

_UNREACHABLE = (nats.errors.TimeoutError, nats.errors.NoRespondersError)


async def _settle_until_stored(nc: Client, key: dict[str, Any], request_id: str, cost: Decimal) -> int:
    """What the proxy does: retry the settlement until billing says it is durably stored; returns the retries."""
    for attempt in range(10_000):
        try:
            reply = await settle(nc, key, request_id, cost, 10, timeout=1.0)
        except _UNREACHABLE:
            await asyncio.sleep(0.05)
            continue
        if reply.ok:
            return attempt
        assert reply.retryable, reply
        await asyncio.sleep(0.05)
    raise AssertionError(f"settlement {request_id} was never stored")


async def test_kill_9_mid_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    server = start_nats(tmp_path)
    billing = BillingProcess(tmp_path, server.url)
    nc = None
    try:
        billing.start()
        key = billing.org_with_key("org_crash", "1000")
        nc = await nats.connect(server.url, max_reconnect_attempts=-1)
        costs: dict[str, Decimal] = {}
        unreachable = 0
        stop = asyncio.Event()
        rng = random.Random(11)  # noqa: S311 (reproducible costs, not cryptography)

        async def worker(worker_id: int) -> None:
            nonlocal unreachable
            for i in range(1_000_000):
                if stop.is_set():
                    return
                request_id = f"w{worker_id}-{i}"
                try:
                    reply = await admit(nc, request_id, "0.01", 100, api_key=key["secret"], timeout=1.0)
                except _UNREACHABLE:  # the proxy would answer 503 (fail closed): no request, no cost
                    unreachable += 1
                    await asyncio.sleep(0.05)
                    continue
                assert reply.admitted, reply
                await asyncio.sleep(0.002)
                cost = Decimal(rng.randint(1, 10_000_000)) / 10**12
                unreachable += await _settle_until_stored(nc, key, request_id, cost)
                costs[request_id] = cost
                if rng.random() < 0.1:  # a redelivered settlement
                    unreachable += await _settle_until_stored(nc, key, request_id, cost)

        workers = [asyncio.create_task(worker(w)) for w in range(16)]
        await asyncio.sleep(1.5)
        settled_before_kill = len(costs)
        await asyncio.to_thread(billing.kill)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(billing.start)
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*workers)

        assert settled_before_kill > 50 and len(costs) > settled_before_kill + 50 and unreachable > 0
        status, org = billing.admin("GET", "/organizations/org_crash")
        assert status == 200
        assert org["balance_usd"] == Decimal(1000) - sum(costs.values(), Decimal(0))
        assert org["spent_usd"] == sum(costs.values(), Decimal(0))
        status, got = billing.admin("GET", f"/keys/{key['id']}")
        assert got["requests"] == len(costs) and got["tokens"] == 10 * len(costs)
    finally:
        if nc is not None:
            await nc.close()
        if billing.proc is not None:
            billing.terminate()
        server.stop()


async def test_sigterm_drains_and_restart_uses_the_snapshot_then_the_stream(tmp_path: Path) -> None:
    server = start_nats(tmp_path)
    billing = BillingProcess(tmp_path, server.url, BILLING_DATA_DIR=str(tmp_path / "billing-data"),
                             BILLING_SNAPSHOT_EVERY="5")
    nc = None
    try:
        billing.start()
        key = billing.org_with_key("org_snap", "3")
        nc = await nats.connect(server.url)
        for i in range(12):
            assert (await admit(nc, f"s-{i}", "0.1", api_key=key["secret"])).admitted
            assert (await settle(nc, key, f"s-{i}", Decimal("0.015"))).ok
        assert billing.terminate() == 0
        snapshot = tmp_path / "billing-data" / "billing-ledger.snapshot.json"
        assert snapshot.exists() and key["secret"].encode() not in snapshot.read_bytes()

        billing.start()
        assert "ledger_snapshot_loaded" in billing.log_path.read_text()
        status, org = billing.admin("GET", "/organizations/org_snap")
        assert status == 200 and org["balance_usd"] == Decimal(3) - 12 * Decimal("0.015")
        assert (await admit(nc, "after", "0.1", api_key=key["secret"])).admitted  # the key survived, hashed
        assert (await settle(nc, key, "s-3", Decimal("0.015"))).duplicate  # settled ids survive too
        billing.kill()
        billing.start()  # snapshot from the clean stop + the events after it
        status, org = billing.admin("GET", "/organizations/org_snap")
        assert org["balance_usd"] == Decimal(3) - 12 * Decimal("0.015")

        billing.terminate()
        await nc.close()
        nc = None
        server.stop()
        shutil.rmtree(tmp_path / "nats")  # a brand-new stream: the old snapshot must not be trusted
        server = start_nats(tmp_path)
        billing.env["NATS_URL"] = server.url
        billing.start()
        assert "ledger_snapshot_ignored" in billing.log_path.read_text()
        status, _ = billing.admin("GET", "/organizations/org_snap")
        assert status == 404
    finally:
        if nc is not None:
            await nc.close()
        if billing.proc is not None:
            billing.terminate()
        server.stop()
