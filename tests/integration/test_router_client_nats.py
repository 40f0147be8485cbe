"""RoutingView's attempt reports over a real nats-server: the reports of one tick travel as one AttemptBatch
message on ROUTER_ATTEMPTS_BATCH (split when too large), none on ROUTER_ATTEMPTS, and stop() sends the rest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from catalog import loader
from launcher import procs
from launcher.nats import NatsServer
from proto import codec, subjects
from proto.routing import AttemptBatch, AttemptReport
from services.router.client import MAX_BATCH_BYTES, MAX_BATCH_REPORTS, RoutingView


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    running = NatsServer(tmp_path / "nats", port=procs.free_port(), log_path=tmp_path / "nats.log")
    running.start()
    yield running
    running.stop()


class Listener:
    """A stand-in router on a real connection: every message on both attempt subjects, raw."""

    def __init__(self) -> None:
        self.batches: list[bytes] = []
        self.singles: list[bytes] = []

    async def on_batch(self, msg: Msg) -> None:
        self.batches.append(msg.data)

    async def on_single(self, msg: Msg) -> None:
        self.singles.append(msg.data)

    def decoded(self) -> list[AttemptBatch]:
        return [codec.decode(data, AttemptBatch) for data in self.batches]

    def reports(self) -> list[AttemptReport]:
        return [report for batch in self.decoded() for report in batch.reports]

    async def heard(self, n: int) -> None:
        """Until `n` reports arrived, then a little longer (for anything that should not come)."""
        while len(self.reports()) < n:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)


@pytest.fixture
async def listener(server: NatsServer) -> AsyncIterator[Listener]:
    heard = Listener()
    nc = await nats.connect(server.url)
    await nc.subscribe(subjects.ROUTER_ATTEMPTS_BATCH, cb=heard.on_batch)
    await nc.subscribe(subjects.ROUTER_ATTEMPTS, cb=heard.on_single)
    await nc.flush()
    yield heard
    await nc.close()


async def test_one_tick_of_reports_is_one_batch_message_and_stop_flushes_the_rest(
        server: NatsServer, listener: Listener) -> None:
    nc = await nats.connect(server.url)
    view = RoutingView(nc, catalog=loader.load(), providers=("openai",), wall=lambda: 1_700_000_000.0)
    for i in range(5):
        view.report_nowait(AttemptReport("openai", "gpt-4o-mini", 200, float(i)))
    await asyncio.wait_for(listener.heard(5), 10)
    assert len(listener.batches) == 1 and len(listener.decoded()[0].reports) == 5  # five reports, one message
    view.report_nowait(AttemptReport("openai", "gpt-4o-mini", 503, 9.0, error_type="http_error"))
    await view.stop()  # before the linger is over: the last report is sent anyway
    await nc.flush()
    await asyncio.wait_for(listener.heard(6), 10)
    assert [len(batch.reports) for batch in listener.decoded()] == [5, 1]
    heard = listener.reports()
    assert [r.latency_ms for r in heard] == [0.0, 1.0, 2.0, 3.0, 4.0, 9.0]
    assert heard[0].timestamp_ms == 1_700_000_000_000 and heard[-1].status_code == 503
    assert listener.singles == []  # nothing on the pre-batching subject
    assert view.reports_dropped == 0
    await nc.close()


async def test_a_tick_too_large_for_one_message_is_split_in_order(server: NatsServer, listener: Listener) -> None:
    nc = await nats.connect(server.url)
    view = RoutingView(nc, catalog=loader.load(), providers=("openai",))
    total = 2 * MAX_BATCH_REPORTS + 500
    for i in range(total):
        view.report_nowait(AttemptReport("openai", "gpt-4o-mini", 200, float(i)))
    await asyncio.wait_for(listener.heard(total), 10)
    assert [len(batch.reports) for batch in listener.decoded()] == [MAX_BATCH_REPORTS, MAX_BATCH_REPORTS, 500]
    assert all(len(data) <= MAX_BATCH_BYTES for data in listener.batches)
    assert [r.latency_ms for r in listener.reports()] == [float(i) for i in range(total)]
    assert listener.singles == [] and view.reports_dropped == 0
    await view.stop()
    await nc.close()
