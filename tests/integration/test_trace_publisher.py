"""The proxy's trace publisher against a real nats-server: batches are stored once each, and nothing is lost
while JetStream cannot take them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from launcher import procs
from launcher.nats import NatsServer
from proto import codec, subjects
from proto.trace import TraceEvent
from services.common import bus
from services.proxy.publisher import TracePublisher


@pytest.fixture
async def nc(tmp_path: Path) -> AsyncIterator[Client]:
    server = NatsServer(tmp_path / "nats", port=procs.free_port(), log_path=tmp_path / "nats.log")
    server.start()
    client = await nats.connect(server.url)
    yield client
    await client.close()
    server.stop()


def _event(i: int) -> TraceEvent:
    return TraceEvent(request_id=f"req_{i:05d}", timestamp_ms=1_763_900_000_000 + i, organization_id="org_a",
                      api_key_id="key_1", endpoint="/v1/chat/completions", requested_model="m", model="m",
                      provider="p", upstream_model="m", route_reason="default", status_code=200, stream=False,
                      latency_ms=1.0, upstream_latency_ms=1.0, cost_usd=Decimal("0.000001"))


async def _published(publisher: TracePublisher, n: int) -> None:
    while publisher.published < n:
        await asyncio.sleep(0.02)


async def _failed(publisher: TracePublisher, n: int) -> None:
    while publisher.failures < n:
        await asyncio.sleep(0.02)


async def _stored(nc: Client) -> list[TraceEvent]:
    js = nc.jetstream()
    sub = await js.pull_subscribe(subjects.TRACE_SUBJECT, durable="check", stream=subjects.TRACE_STREAM)
    found: list[TraceEvent] = []
    try:
        while True:
            msgs = await sub.fetch(500, timeout=0.5)
            found += [codec.decode(m.data, TraceEvent) for m in msgs]
    except (TimeoutError, nats.errors.TimeoutError):
        return found


async def test_every_event_is_stored_once_and_retries_are_deduplicated(nc: Client) -> None:
    await bus.ensure_streams(nc.jetstream(), (subjects.TRACE_STREAM,))
    publisher = TracePublisher(nc.jetstream(), batch=64)
    publisher.start()
    for i in range(300):
        publisher.submit(_event(i))
    publisher.submit(_event(7))  # a retried publish of an event already sent: same Nats-Msg-Id
    await asyncio.wait_for(_published(publisher, 301), 20)
    await publisher.close(5.0)
    stored = await _stored(nc)
    assert sorted(e.request_id for e in stored) == [f"req_{i:05d}" for i in range(300)]
    assert stored[0] == _event(0)


async def test_events_wait_for_jetstream_and_are_published_when_it_is_back(nc: Client) -> None:
    publisher = TracePublisher(nc.jetstream(), ack_timeout_s=0.5)
    publisher.start()
    for i in range(20):
        publisher.submit(_event(i))
    await asyncio.wait_for(_failed(publisher, 20), 20)  # no stream yet: nobody acknowledges, they stay queued
    assert publisher.published == 0 and publisher.backlog > 0
    await bus.ensure_streams(nc.jetstream(), (subjects.TRACE_STREAM,))
    await asyncio.wait_for(_published(publisher, 20), 20)
    await publisher.close(5.0)
    assert len(await _stored(nc)) == 20
