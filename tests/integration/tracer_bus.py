"""A tracer's surroundings for integration tests: a real nats-server with the trace stream, a connection and a
chdb store in a temp dir (no stack), plus a polling helper."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import nats
from nats.aio.client import Client

from launcher import procs
from launcher.nats import NatsServer
from proto import codec, subjects
from proto.trace import TraceEvent
from services.common import bus
from services.tracer.store import TraceStore


class Bus:
    def __init__(self, server: NatsServer, nc: Client, store: TraceStore) -> None:
        self.server, self.nc, self.store = server, nc, store
        self.js = nc.jetstream()

    async def publish(self, event: TraceEvent) -> None:
        await self.js.publish(subjects.TRACE_SUBJECT, codec.encode(event), headers={"Nats-Msg-Id": event.request_id})

    async def publish_all(self, events: list[TraceEvent]) -> None:
        for event in events:
            await self.publish(event)

    async def one(self, sql: str) -> int:
        """The single number `sql` selects (0 for NULL)."""
        return int((await self.store.select(sql, {}))[1][0][0] or 0)

    async def count(self, table: str = "traces FINAL") -> int:
        return await self.one(f"SELECT count() FROM {table}")

    async def rolled_up(self) -> int:
        return await self.one("SELECT sum(requests) FROM usage_minute")

    async def unacked(self) -> int:
        info = await self.js.consumer_info(subjects.TRACE_STREAM, subjects.TRACE_CONSUMER)
        return int(info.num_ack_pending or 0) + int(info.num_pending or 0)


B = TypeVar("B", bound=Bus)


@asynccontextmanager
async def running_bus(tmp_path: Path, kind: type[B]) -> AsyncIterator[B]:
    server = NatsServer(tmp_path / "nats", port=procs.free_port(), log_path=tmp_path / "nats.log")
    server.start()
    try:
        nc = await nats.connect(server.url)
        await bus.ensure_streams(nc.jetstream(), (subjects.TRACE_STREAM,))
        store = TraceStore(f"chdb:///{tmp_path / 'clickhouse'}")
        await store.open(ttl_days=90)
        try:
            yield kind(server, nc, store)
        finally:
            await nc.close()
            await store.close()
    finally:
        server.stop()


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
