"""The tracer's handlers over a real nats-server: JetStream traces in, usage and logs replies out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from launcher.stack import Stack
from proto import codec, subjects
from proto.trace import (
    REPLY_BAD_QUERY,
    REPLY_FAILED,
    LogsQuery,
    LogsReply,
    TraceEvent,
    TraceQuery,
    TraceReply,
    UsageQuery,
    UsageReply,
)
from services.common.settings import Secret
from services.tracer.service import Tracer, make_app
from services.tracer.settings import Settings
from services.tracer.store import TraceStore
from tests.integration.tracer_bus import Bus, running_bus, until

NOW = int(time.time() * 1000)


def _settings(url: str, *, batch_size: int = 100, flush_interval_s: float = 0.05) -> Settings:
    return Settings(nats_url=url, stream_replicas=1, clickhouse_url="", host="127.0.0.1", port=0,
                    admin_token=Secret("t"), batch_size=batch_size, flush_interval_s=flush_interval_s, ttl_days=90,
                    log_level="INFO")


@pytest.fixture
async def bus_(tmp_path: Path) -> AsyncIterator[Bus]:
    async with running_bus(tmp_path, Bus) as running:
        yield running


@pytest.fixture
async def tracer(bus_: Bus) -> AsyncIterator[tuple[Client, Tracer]]:
    running = Tracer(_settings(bus_.server.url), bus_.nc, bus_.js, bus_.store)
    await running.start()
    yield bus_.nc, running
    await running.stop()


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
        assert reply.code == REPLY_BAD_QUERY and "DB::Exception" not in reply.error
    for subject, kind in ((subjects.TRACER_USAGE, UsageReply), (subjects.TRACER_LOGS, LogsReply),
                          (subjects.TRACER_GET, TraceReply)):
        raw = await nc.request(subject, b'{"since_ms": "yesterday", "request_id": 7}', timeout=5)
        undecodable = codec.decode(raw.data, kind)
        assert undecodable.error is not None and "does not decode" in undecodable.error  # type: ignore[attr-defined]
        assert undecodable.code == REPLY_BAD_QUERY  # type: ignore[attr-defined]
    bad_logs = await ask(subjects.TRACER_LOGS, LogsQuery(cursor="' OR 1=1 --"), LogsReply)
    assert isinstance(bad_logs, LogsReply) and bad_logs.error is not None and "cursor" in bad_logs.error
    assert bad_logs.code == REPLY_BAD_QUERY
    found = await ask(subjects.TRACER_GET, TraceQuery(request_id="req_0003"), TraceReply)
    assert isinstance(found, TraceReply) and found.error is None and found.trace is not None


class CrashesBeforeAck(Tracer):
    """Stores its batches but dies before acknowledging them: the worst moment for a crash."""

    async def _ack(self, msgs: list[Msg]) -> None:
        return None


async def test_a_crash_between_insert_and_ack_neither_loses_nor_doubles_a_trace(bus_: Bus) -> None:
    # the consumer as the tracer creates it, but with a 1 s ack wait so that redelivery comes quickly
    await bus_.js.add_consumer(subjects.TRACE_STREAM, config=ConsumerConfig(
        durable_name=subjects.TRACE_CONSUMER, name=subjects.TRACE_CONSUMER, filter_subject=subjects.TRACE_SUBJECT,
        ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=1, max_ack_pending=50_000))
    for i in range(250):
        await bus_.publish(_event(i, "org_a"))
    crashing = CrashesBeforeAck(_settings(bus_.server.url, batch_size=100), bus_.nc, bus_.js, bus_.store)
    await crashing.start()
    await until(lambda: _at_least(crashing, 250))
    await crashing.stop()
    assert await bus_.unacked() == 250  # stored, never acknowledged: JetStream delivers them again
    # the replacement gets them as redeliveries, regrouped in other batches, and more traces besides
    for i in range(250, 300):
        await bus_.publish(_event(i, "org_a"))
    replacement = Tracer(_settings(bus_.server.url, batch_size=70), bus_.nc, bus_.js, bus_.store)
    await replacement.start()

    async def all_acked() -> bool:
        return await bus_.unacked() == 0

    await until(all_acked)
    await replacement.stop()
    assert await bus_.count() == 300
    assert await bus_.count("traces") == 300  # not merely collapsed by FINAL: never inserted twice
    assert await bus_.rolled_up() == 300  # so the usage rollups count each request once


async def _at_least(tracer: Tracer, n: int) -> bool:
    return tracer.inserted >= n


async def test_stop_stores_and_acks_what_was_delivered(bus_: Bus) -> None:
    for i in range(120):
        await bus_.publish(_event(i, "org_a"))
    await bus_.js.publish(subjects.TRACE_SUBJECT, b'{"request_id": 7}', headers={"Nats-Msg-Id": "garbage"})
    # a batch that never fills and a flush interval that never comes: only stop() writes them
    patient = Tracer(_settings(bus_.server.url, batch_size=10_000, flush_interval_s=3600), bus_.nc, bus_.js, bus_.store)
    await patient.start()

    async def delivered() -> bool:
        try:
            info = await bus_.js.consumer_info(subjects.TRACE_STREAM, subjects.TRACE_CONSUMER)
        except NotFoundError:  # the tracer has not created it yet
            return False
        return info.num_pending == 0 and info.num_ack_pending == 121

    await until(delivered)
    assert await bus_.count() == 0
    await patient.stop()
    assert patient.inserted == 120 and await bus_.count() == 120
    assert await bus_.unacked() == 0  # the undecodable one is terminated, not left to be redelivered
    assert patient.metrics.registry.get_sample_value("routeur_tracer_undecodable_total") == 1


async def test_a_lost_consumer_is_created_again_and_its_replay_is_not_stored_twice(bus_: Bus) -> None:
    running = Tracer(_settings(bus_.server.url), bus_.nc, bus_.js, bus_.store)
    await running.start()
    for i in range(150):
        await bus_.publish(_event(i, "org_a"))
    await until(lambda: _at_least(running, 150))
    # someone deletes the consumer: the tracer creates it again, and the new one delivers the whole stream
    await bus_.js.delete_consumer(subjects.TRACE_STREAM, subjects.TRACE_CONSUMER)
    for i in range(150, 200):
        await bus_.publish(_event(i, "org_a"))

    async def caught_up() -> bool:
        try:
            return await bus_.unacked() == 0 and await bus_.count() == 200
        except NotFoundError:  # not created again yet
            return False

    await until(caught_up)
    await running.stop()
    assert await bus_.count("traces") == 200 and await bus_.rolled_up() == 200



def test_sql_endpoint_refuses_undecodable_bodies_and_tokens_with_4xx(stack: Stack) -> None:
    import http.client
    import urllib.parse

    url = urllib.parse.urlsplit(stack.children["tracer"].url)
    token = stack.secrets["ROUTEUR_ADMIN_TOKEN"]
    for body, authorization in ((b'{"query": "SELECT \xff"}', f"Bearer {token}"),
                                (b'{"query": "SELECT 1"}', "Bearer caf\u00e9-not-utf8")):
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        connection.request("POST", "/v1/sql", body=body, headers={"Authorization": authorization,
                                                                 "Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status in (400, 401), response.status
        assert b"Traceback" not in response.read()
        connection.close()


async def test_a_store_that_fails_makes_inserts_unhealthy_and_replies_say_failed(bus_: Bus) -> None:
    dead = TraceStore("http://127.0.0.1:1/")  # nothing listens there: every call fails
    failing = Tracer(_settings(bus_.server.url), bus_.nc, bus_.js, dead)
    await failing.start()
    try:
        for i in range(5):
            await bus_.publish(_event(i, "org_a"))

        async def unhealthy() -> bool:
            return not failing.health.healthy(time.monotonic())

        await until(unhealthy, timeout=30)
        assert failing.health.failures >= 3 and failing.inserted == 0
        assert failing.health.last_error is not None and "Error" in failing.health.last_error
        for subject, message, kind in ((subjects.TRACER_GET, TraceQuery(request_id="req_0001"), TraceReply),
                                       (subjects.TRACER_LOGS, LogsQuery(), LogsReply),
                                       (subjects.TRACER_USAGE, UsageQuery(), UsageReply)):
            reply = codec.decode((await bus_.nc.request(subject, codec.encode(message), timeout=5)).data, kind)
            assert reply.code == REPLY_FAILED and "unavailable" in reply.error  # type: ignore[attr-defined]
        async with TestClient(TestServer(make_app(_settings(bus_.server.url), failing, dead, bus_.nc))) as http:
            ready = await http.get("/readyz")
            detail = await ready.json()
            assert ready.status == 503 and detail["ready"] is False and detail["inserting"] is False, detail
            assert detail["nats"] is True and detail["failed_inserts_in_a_row"] >= 3, detail
            admin = {"Authorization": "Bearer t"}
            # refused before the engine: the answer is the gate's, although no engine answers
            refused = await http.post("/v1/sql", json={"query": "INSERT INTO traces VALUES (1)"}, headers=admin)
            assert refused.status == 400 and (await refused.json())["error"]["code"] == "read_only_sql"
            tried = await http.post("/v1/sql", json={"query": "SELECT 1"}, headers=admin)
            assert tried.status == 400 and (await tried.json())["error"]["code"] == "query_failed"
    finally:
        await failing.stop()
        await dead.close()
    assert await bus_.unacked() == 5  # nothing acked: the traces wait in the stream for a working store


async def test_inserts_that_keep_failing_turn_readiness_off_until_one_succeeds(bus_: Bus) -> None:
    # ClickHouse answers (a ping works) but refuses every insert: what a wedged ingest session looked like
    await bus_.store.execute("ALTER TABLE traces ADD CONSTRAINT refuse_all CHECK request_id = 'never'", {})
    running = Tracer(_settings(bus_.server.url), bus_.nc, bus_.js, bus_.store)
    await running.start()
    try:
        for i in range(3):
            await bus_.publish(_event(i, "org_a"))
        async with TestClient(TestServer(make_app(_settings(bus_.server.url), running, bus_.store, bus_.nc))) as http:

            async def readiness() -> tuple[int, dict[str, object]]:
                response = await http.get("/readyz")
                return response.status, await response.json()

            async def not_ready() -> bool:
                return (await readiness())[0] == 503

            await until(not_ready, timeout=30)
            _, detail = await readiness()
            assert detail["clickhouse"] is True and detail["inserting"] is False, detail
            assert "VIOLATED_CONSTRAINT" in str(detail["last_insert_error"]), detail
            await bus_.store.execute("ALTER TABLE traces DROP CONSTRAINT refuse_all", {})

            async def ready() -> bool:
                return (await readiness())[0] == 200

            await until(ready, timeout=30)
            _, detail = await readiness()
            assert detail["inserted"] == 3 and detail["last_insert_error"] is None, detail
    finally:
        await running.stop()
    assert await bus_.count() == 3
