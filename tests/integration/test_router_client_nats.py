"""RoutingView's attempt reports over a real nats-server: queued reports reach the router, stop() sends the rest."""

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
from proto.routing import AttemptReport
from services.router.client import RoutingView


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    running = NatsServer(tmp_path / "nats", port=procs.free_port(), log_path=tmp_path / "nats.log")
    running.start()
    yield running
    running.stop()


async def _heard(heard: list[AttemptReport], n: int) -> None:
    while len(heard) < n:
        await asyncio.sleep(0.01)


async def test_reports_are_delivered_in_order_and_stop_flushes_them(server: NatsServer) -> None:
    heard: list[AttemptReport] = []

    async def router(msg: Msg) -> None:
        heard.append(codec.decode(msg.data, AttemptReport))

    listener, nc = await nats.connect(server.url), await nats.connect(server.url)
    await listener.subscribe(subjects.ROUTER_ATTEMPTS, cb=router)
    await listener.flush()
    view = RoutingView(nc, catalog=loader.load(), providers=("openai",), wall=lambda: 1_700_000_000.0)
    for i in range(5):
        view.report_nowait(AttemptReport("openai", "gpt-4o-mini", 200, float(i)))
    await asyncio.wait_for(_heard(heard, 5), 10)
    view.report_nowait(AttemptReport("openai", "gpt-4o-mini", 503, 9.0, error_type="http_error"))
    await view.stop()  # before the linger is over: the last report is sent anyway
    await nc.flush()
    await asyncio.wait_for(_heard(heard, 6), 10)
    assert [r.latency_ms for r in heard] == [0.0, 1.0, 2.0, 3.0, 4.0, 9.0]
    assert heard[0].timestamp_ms == 1_700_000_000_000 and heard[-1].status_code == 503
    assert view.reports_dropped == 0
    await listener.close()
    await nc.close()
