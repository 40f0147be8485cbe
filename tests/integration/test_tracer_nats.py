"""The tracer's handlers over a real nats-server: JetStream traces in, usage and logs replies out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from launcher import procs
from launcher.nats import NatsServer
from proto import codec, subjects
from proto.trace import LogsQuery, LogsReply, TraceEvent, UsageQuery, UsageReply
from services.common import bus
from services.common.settings import Secret
from services.tracer.service import Tracer
from services.tracer.settings import Settings
from services.tracer.store import TraceStore

NOW = int(time.time() * 1000)


@pytest.fixture
async def tracer(tmp_path: Path) -> AsyncIterator[tuple[Client, Tracer]]:
    server = NatsServer(tmp_path / "nats", port=procs.free_port(), log_path=tmp_path / "nats.log")
    server.start()
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await bus.ensure_streams(js, (subjects.TRACE_STREAM,))
    store = TraceStore(f"chdb:///{tmp_path / 'clickhouse'}")
    await store.open(ttl_days=90)
    settings = Settings(nats_url=server.url, stream_replicas=1, clickhouse_url="", host="127.0.0.1", port=0,
                        admin_token=Secret("t"), batch_size=100, flush_interval_s=0.05, ttl_days=90,
                        log_level="INFO")
    running = Tracer(settings, nc, js, store)
    await running.start()
    yield nc, running
    await running.stop()
    await nc.close()
    await store.close()
    server.stop()


def _event(i: int, org: str) -> TraceEvent:
    return TraceEvent(request_id=f"req_{i:04d}", timestamp_ms=NOW - i * 1000, organization_id=org,
                      api_key_id=f"key_{i % 2}", endpoint="/v1/chat/completions", requested_model="m",
                      model=f"m{i % 3}", provider="p", upstream_model="m", route_reason="default", status_code=200,
                      stream=False, latency_ms=5.0 + i, upstream_latency_ms=4.0, total_tokens=10, prompt_tokens=7,
                      completion_tokens=3, cost_usd=Decimal("0.000000000123"),
                      fallback="p2/m" if i % 5 == 0 else None)


async def test_usage_and_logs_over_nats(tracer: tuple[Client, Tracer]) -> None:
    nc, running = tracer
    js = nc.jetstream()
    for i in [*range(30), 3]:  # the repeat is a retried publish: same Nats-Msg-Id, as the proxy sends
        await js.publish(subjects.TRACE_SUBJECT, codec.encode(_event(i, "org_a" if i < 20 else "org_b")),
                         headers={"Nats-Msg-Id": f"req_{i:04d}"})
    deadline = time.monotonic() + 20
    while running.inserted < 30 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)

    async def ask(subject: str, message: object, kind: type) -> object:
        return codec.decode((await nc.request(subject, codec.encode(message), timeout=5)).data, kind)

    query = UsageQuery(organization_id="org_a", group_by="key", bucket="day", since_ms=NOW - 86_400_000,
                       until_ms=NOW + 60_000)
    usage = await ask(subjects.TRACER_USAGE, query, UsageReply)
    assert isinstance(usage, UsageReply) and usage.error is None and usage.totals is not None
    assert usage.totals.requests == 20 and usage.totals.total_tokens == 200
    assert usage.totals.cost_usd == Decimal("0.000000002460") and usage.totals.fallbacks == 4
    assert {row.group for row in usage.rows} == {"key_0", "key_1"}

    logs = await ask(subjects.TRACER_LOGS, LogsQuery(organization_id="org_a", has_fallback=True), LogsReply)
    assert isinstance(logs, LogsReply) and [t.request_id for t in logs.traces] == [
        "req_0000", "req_0005", "req_0010", "req_0015"]

    for bad, needle in ((UsageQuery(bucket="fortnight"), "'bucket' must be one of"),
                        (UsageQuery(group_by="1; SELECT 1"), "'group_by' must be one of")):
        reply = await ask(subjects.TRACER_USAGE, bad, UsageReply)
        assert isinstance(reply, UsageReply) and reply.error is not None and needle in reply.error
        assert "DB::Exception" not in reply.error
    raw = await nc.request(subjects.TRACER_USAGE, b'{"since_ms": "yesterday"}', timeout=5)
    assert codec.decode(raw.data, UsageReply).error.startswith("bad query")  # type: ignore[union-attr]
    bad_logs = await ask(subjects.TRACER_LOGS, LogsQuery(cursor="' OR 1=1 --"), LogsReply)
    assert isinstance(bad_logs, LogsReply) and bad_logs.error is not None and "cursor" in bad_logs.error
