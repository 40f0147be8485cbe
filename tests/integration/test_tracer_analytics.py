"""Analytics never stalls ingest (issue 18): `/v1/sql` and the NATS lookups run on bounded pools of read-only chdb
sessions with limits; a query that hits one ends with a 400 naming it, an abandoned one is killed in the engine, a
full pool answers 503; the engine itself refuses writes, settings and table functions on those sessions (below the
gate); and a wedged ingest session turns /readyz false, then heals by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from proto import codec, subjects
from proto.trace import UsageQuery, UsageReply
from services.common.settings import Secret
from services.tracer.limits import Limits
from services.tracer.service import Tracer, make_app
from services.tracer.settings import Settings
from services.tracer.store import TraceStore
from tests.integration.test_tracer_nats import NOW, _event
from tests.integration.tracer_bus import Bus, running_bus, until

ADMIN = {"Authorization": "Bearer t"}
# Reads far more than any limit allows unless it is stopped: ClickHouse cannot tell its size in advance.
ENDLESS = "SELECT count() FROM system.numbers WHERE sipHash64(number) = 7"


def _settings(url: str, *, ingest_exit_s: float = 300.0) -> Settings:
    return Settings(nats_url=url, stream_replicas=1, clickhouse_url="", host="127.0.0.1", port=0,
                    admin_token=Secret("t"), batch_size=100, flush_interval_s=0.05, ttl_days=90, log_level="INFO",
                    ingest_exit_s=ingest_exit_s)


@pytest.fixture
async def bus_(tmp_path: Path) -> AsyncIterator[Bus]:
    async with running_bus(tmp_path, Bus) as running:
        yield running


def _store(tmp_path: Path, limits: Limits, *, workers: int = 2, queue_s: float = 2.0) -> TraceStore:
    """A second store on the bus's engine (chdb: one engine per process, any number of sessions)."""
    return TraceStore(f"chdb:///{tmp_path / 'clickhouse'}", limits=limits, workers=workers, queue_s=queue_s)


async def _running_queries(bus_: Bus) -> int:
    return await bus_.one("SELECT count() FROM system.processes WHERE query LIKE '/* routeur-query:%'")


@pytest.mark.parametrize(("limits", "query", "limit"), [
    (Limits(), "SELECT count() FROM numbers(1e12)", "max_rows_to_read"),
    (Limits(max_rows_to_read=0, max_bytes_to_read=10_000_000), ENDLESS, "max_bytes_to_read"),
    (Limits(max_rows_to_read=0, max_bytes_to_read=0, max_execution_s=1.0), ENDLESS, "max_execution_time"),
    (Limits(max_result_rows=100), "SELECT number FROM numbers(1000)", "max_result_rows"),
    (Limits(max_memory_bytes=50_000_000), "SELECT groupArray(number) FROM numbers(100000000)", "max_memory_usage"),
])
async def test_a_query_over_a_limit_ends_by_it_with_a_400_naming_it(bus_: Bus, tmp_path: Path, limits: Limits,
                                                                      query: str, limit: str) -> None:
    store = _store(tmp_path, limits)
    tracer = Tracer(_settings(bus_.server.url), bus_.nc, bus_.js, store)
    try:
        async with TestClient(TestServer(make_app(_settings(bus_.server.url), tracer, store, bus_.nc))) as http:
            started = time.monotonic()
            response = await http.post("/v1/sql", json={"query": query}, headers=ADMIN)
            body = await response.json()
            assert time.monotonic() - started < 20
            assert response.status == 400, body
            assert body["error"]["code"] == "query_limit_exceeded" and body["error"]["param"] == limit, body
            assert limit in body["error"]["message"]
            # the session is still usable after the limit hit
            again = await http.post("/v1/sql", json={"query": "SELECT 1 AS one"}, headers=ADMIN)
            assert again.status == 200 and (await again.json())["rows"] == [[1]]
    finally:
        await store.close()


@pytest.mark.parametrize("statement", [
    "INSERT INTO rollup_repairs (organization_id, minute, version, done) VALUES ('org_probe', 0, 0, 1)",
    "CREATE TABLE probe (x UInt8) ENGINE = Memory",
    "SET readonly = 0",
    "SET max_execution_time = 0",
    "SELECT 1 SETTINGS max_rows_to_read = 0",
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:1/x', 'CSV', 'x String')",
    "SELECT * FROM s3('http://127.0.0.1:1/bucket/x.csv', 'CSV', 'x String')",
    "SELECT * FROM remote('127.0.0.1:1', system.one)",
])
async def test_the_analytics_session_itself_refuses_what_the_gate_refuses(bus_: Bus, statement: str) -> None:
    """Below the gate (store.analytics is called directly): the embedded engine's read-only session refuses."""
    with pytest.raises(Exception, match=r"READONLY|readonly"):
        await bus_.store.analytics(statement, {})
    assert await bus_.one("SELECT count() FROM rollup_repairs WHERE organization_id = 'org_probe'") == 0
    # its own limits are still in force
    _, found = await bus_.store.analytics("SELECT value FROM system.settings WHERE name = 'max_execution_time'", {})
    assert float(found[0][0]) == Limits().max_execution_s


async def test_an_abandoned_query_is_killed_and_frees_its_session(bus_: Bus, tmp_path: Path) -> None:
    # no row or time limit worth the name: only the kill can end it within this test
    store = _store(tmp_path, Limits(max_rows_to_read=0, max_bytes_to_read=0, max_execution_s=600), workers=1,
                   queue_s=10)
    tracer = Tracer(_settings(bus_.server.url), bus_.nc, bus_.js, store)
    try:
        async with TestClient(TestServer(make_app(_settings(bus_.server.url), tracer, store, bus_.nc))) as http:
            url = http.make_url("/v1/sql")
            async with aiohttp.ClientSession() as session:
                pending = asyncio.ensure_future(session.post(url, json={"query": ENDLESS}, headers=ADMIN))

                async def running() -> bool:
                    return await _running_queries(bus_) == 1

                await until(running, timeout=10)
                pending.cancel()  # the client goes away mid-query
                with pytest.raises(asyncio.CancelledError):
                    await pending

            async def killed() -> bool:
                return store.analytics_pool.killed == 1 and await _running_queries(bus_) == 0

            await until(killed, timeout=10)
            # the only session is free again at once
            started = time.monotonic()
            response = await http.post("/v1/sql", json={"query": "SELECT 1 AS one"}, headers=ADMIN)
            assert response.status == 200 and time.monotonic() - started < 5
    finally:
        await store.close()


async def test_busy_analytics_neither_stall_ingest_nor_lookups_and_a_full_pool_is_503(bus_: Bus,
                                                                                       tmp_path: Path) -> None:
    store = _store(tmp_path, Limits(max_rows_to_read=0, max_bytes_to_read=0, max_execution_s=600), workers=2,
                   queue_s=0.3)
    tracer = Tracer(_settings(bus_.server.url), bus_.nc, bus_.js, store)
    await tracer.start()
    try:
        async with TestClient(TestServer(make_app(_settings(bus_.server.url), tracer, store, bus_.nc))) as http:
            long = [asyncio.ensure_future(http.post("/v1/sql", json={"query": ENDLESS}, headers=ADMIN))
                    for _ in range(2)]

            async def both_running() -> bool:
                return await _running_queries(bus_) == 2

            await until(both_running, timeout=10)
            busy = await http.post("/v1/sql", json={"query": "SELECT 1"}, headers=ADMIN)
            detail = await busy.json()
            assert busy.status == 503 and detail["error"]["code"] == "analytics_busy", detail
            assert busy.headers["Retry-After"] == "1"
            # ingest goes on: 50 traces stored within seconds while both analytics sessions are taken
            started = time.monotonic()
            for i in range(50):
                await bus_.publish(_event(i, "org_a"))

            async def stored() -> bool:
                return tracer.inserted >= 50

            await until(stored, timeout=10)
            assert time.monotonic() - started < 10
            # and the NATS lookups have their own sessions
            query = UsageQuery(organization_id="org_a", group_by="key", bucket="day", since_ms=NOW - 86_400_000,
                               until_ms=NOW + 60_000)
            reply = codec.decode((await bus_.nc.request(subjects.TRACER_USAGE, codec.encode(query), timeout=5)).data,
                                 UsageReply)
            assert reply.error is None and reply.totals is not None and reply.totals.requests == 50
            for task in long:
                task.cancel()
            await asyncio.gather(*long, return_exceptions=True)

            async def killed() -> bool:
                return await _running_queries(bus_) == 0

            await until(killed, timeout=10)
    finally:
        await tracer.stop()
        await store.close()


async def test_a_wedged_ingest_session_turns_readiness_off_and_the_tracer_heals_by_itself(bus_: Bus) -> None:
    running = Tracer(_settings(bus_.server.url), bus_.nc, bus_.js, bus_.store)
    await running.start()
    try:
        for i in range(3):
            await bus_.publish(_event(i, "org_a"))

        async def first() -> bool:
            return running.inserted == 3

        await until(first)
        # The fault: the ingest session left read-only (what the driver's SET/restore once did). Nothing outside the
        # tracer removes it: only a fresh session heals it.
        await bus_.store.execute("SET readonly = 1", {})
        for i in range(3, 8):
            await bus_.publish(_event(i, "org_a"))
        async with TestClient(TestServer(make_app(_settings(bus_.server.url), running, bus_.store, bus_.nc))) as http:
            seen_not_ready: dict[str, object] = {}

            async def ready_again() -> bool:
                response = await http.get("/readyz")
                detail = await response.json()
                if response.status == 503 and not seen_not_ready:
                    seen_not_ready.update(detail)
                return bool(seen_not_ready) and response.status == 200

            await until(ready_again, timeout=40)
            assert seen_not_ready["inserting"] is False and "READONLY" in str(seen_not_ready["last_insert_error"])
        assert running.resets >= 1 and running.inserted == 8 and not running.gave_up.is_set()
    finally:
        await running.stop()
    assert await bus_.count() == 8


async def test_inserts_failing_past_the_exit_threshold_make_the_tracer_give_up(bus_: Bus) -> None:
    dead = TraceStore("http://127.0.0.1:1/")  # nothing listens there: every insert fails, fresh client or not
    failing = Tracer(_settings(bus_.server.url, ingest_exit_s=3.0), bus_.nc, bus_.js, dead)
    await failing.start()
    try:
        await bus_.publish(_event(0, "org_a"))

        async def gave_up() -> bool:
            return failing.gave_up.is_set()

        await until(gave_up, timeout=30)
        assert failing.resets >= 1
    finally:
        await failing.stop()
        await dead.close()
    assert await bus_.unacked() == 1  # nothing lost: the next process stores it


async def test_a_query_failing_mid_result_never_leaks_into_the_next_answer(bus_: Bus, tmp_path: Path) -> None:
    """On chdb a result-limit failure left its output in the session, where the next query's answer was read after
    it (wrong columns, or "unrecognized data found in stream"): a failed session is now replaced."""
    store = _store(tmp_path, Limits(), workers=2, queue_s=60)
    limited = ("SELECT number FROM system.numbers", "SELECT * FROM system.numbers_mt LIMIT 100000000",
               "SELECT count() FROM numbers(1e12)")
    wrong: list[object] = []

    async def over_limits(query: str) -> None:
        for _ in range(3):
            with pytest.raises(Exception, match="TOO_MANY_ROWS"):
                await store.analytics(query, {})

    async def small(i: int) -> None:
        for _ in range(30):
            try:
                columns, found = await store.analytics(f"SELECT {i} AS n{i}", {})
            except Exception as exc:  # noqa: BLE001 (a leak shows as a decoding failure too)
                wrong.append(exc)
                continue
            if (columns, found) != ([f"n{i}"], [(i,)]):
                wrong.append((columns, found[:2]))
            await asyncio.sleep(0.05)

    try:
        await asyncio.gather(*[over_limits(query) for query in limited], small(1), small(2))
    finally:
        await store.close()
    assert not wrong, wrong[:3]
