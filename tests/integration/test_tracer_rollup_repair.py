"""The rollup reconciler against a real embedded ClickHouse (chdb): drift is built on purpose the ways faults build
it (a batch stored twice past the insert dedup, a batch whose rows reached `traces` but not the rollups, a batch that
reached usage_minute but not usage_hour/usage_day), and one round makes every rollup equal to `traces FINAL` again,
leaves the correct buckets alone, and `/v1/usage` (Tracer.usage) reports exact numbers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from proto import subjects
from proto.trace import TraceEvent, UsageQuery
from services.common.settings import Secret
from services.tracer import drift, reconcile, rollup_sql, rows, suspects
from services.tracer.service import Tracer
from services.tracer.settings import Settings
from services.tracer.store import TraceStore
from tests.integration.tracer_bus import Bus, running_bus, until

T0 = 1_763_900_000_000 // 86_400_000 * 86_400_000 + 86_400_000 - 90 * 60_000  # 22:30 UTC: the day ends at +90 min
WALL_S = T0 / 1000 + 86_400  # "now" for the TTL guard: the next day
SUMS = ("count()", "countIf(status_code >= 400)", "sum(prompt_tokens)", "sum(completion_tokens)", "sum(total_tokens)",
        "sum(cost_usd)", "countIf(fallback IS NOT NULL)", "sum(redactions)")
ROLLUP_SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "fallbacks",
               "redactions")
GRAINS = (("usage_minute", "minute", "toStartOfMinute"), ("usage_hour", "hour", "toStartOfHour"),
          ("usage_day", "day", "toStartOfDay"))


def event(i: int, org: str, ts: int, *, model: str = "m1", key: str = "key_1", status: int = 200) -> TraceEvent:
    return TraceEvent(request_id=f"req_{org}_{i:06d}", timestamp_ms=ts, organization_id=org, api_key_id=key,
                      endpoint="/v1/chat/completions", requested_model=model, model=model, provider="p1",
                      upstream_model=model, route_reason="default", status_code=status, stream=False,
                      latency_ms=1.0 + (i * 7919) % 500, upstream_latency_ms=1.0, prompt_tokens=i % 97,
                      completion_tokens=i % 13, total_tokens=i % 97 + i % 13,
                      cost_usd=Decimal(f"0.{(i * 104_729) % 10**12:012d}"), fallback="p2/m1" if i % 7 == 0 else None,
                      redactions=i % 3)


def spread(org: str, n: int, *, start: int = T0, minutes: int = 120, first: int = 0) -> list[TraceEvent]:
    """`n` traces of `org` over `minutes` minutes from `start` (crossing an hour and a day boundary)."""
    return [event(first + i, org, start + (i * minutes * 60_000) // n + i % 1000, model=("m1", "m2")[i % 2],
                  key=("key_1", "key_2", "key_3")[i % 3], status=(200, 200, 200, 429, 500)[i % 5]) for i in range(n)]


class Harness:
    def __init__(self, store: TraceStore, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop
        self.tracer = Tracer(None, None, None, store)  # type: ignore[arg-type]

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def sql(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.run(self.store.select(query, params or {}))[1]  # type: ignore[no-any-return]

    def command(self, statement: str) -> None:
        self.run(self.store.execute(statement, {}))

    def store_twice(self, events: list[TraceEvent]) -> None:
        """The same traces inserted again under another dedup token: what a replay after nats-server lost the
        acks did before the tracer checked it (one row in traces FINAL, two in the rollups)."""
        self.run(self.store.insert(rows.to_columns(events), dedup_token="replayed-" + rows.dedup_token(
            e.request_id for e in events)))

    def store_without(self, views: tuple[str, ...], events: list[TraceEvent]) -> None:
        """Insert with some materialized views detached: the rows reach `traces` (and the other rollups) but not
        these views' rollups, as when the tracer dies or the insert fails between the parts."""
        for view in views:
            self.command(f"DETACH TABLE {view}")
        try:
            self.run(self.store.insert(rows.to_columns(events), dedup_token="half-" + rows.dedup_token(
                e.request_id for e in events)))
        finally:
            for view in views:
                self.command(f"ATTACH TABLE {view}")

    def repairs(self, grain: str) -> float:
        value = self.tracer.metrics.registry.get_sample_value("routeur_tracer_rollup_repairs_total", {"grain": grain})
        return value or 0.0


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    store = TraceStore(f"chdb:///{tmp_path / 'chdb'}")
    loop.run_until_complete(store.open(ttl_days=3650))
    yield Harness(store, loop)
    loop.run_until_complete(store.close())
    loop.close()


Sums = dict[tuple[Any, ...], tuple[Any, ...]]


def raw_by(h: Harness, table: str, column: str, bucket_fn: str) -> tuple[Sums, Sums]:
    """Per (organization, bucket, key, model, provider): the sums from traces FINAL, then from the rollup."""
    raw = h.sql(f"SELECT organization_id, toUnixTimestamp({bucket_fn}(ts)) AS b, api_key_id, model, provider, "
                f"{', '.join(SUMS)} FROM traces FINAL GROUP BY organization_id, b, api_key_id, model, provider")
    rolled = h.sql(f"SELECT organization_id, toUnixTimestamp({column}) AS b, api_key_id, model, provider, "
                   f"{', '.join(f'sum({c})' for c in ROLLUP_SUMS)} FROM {table} "
                   "GROUP BY organization_id, b, api_key_id, model, provider")
    return {tuple(r[:5]): tuple(r[5:]) for r in raw}, {tuple(r[:5]): tuple(r[5:]) for r in rolled}


def off_by(h: Harness) -> dict[str, dict[str, int]]:
    """Per rollup and organization: rollup requests minus traces FINAL requests (0 everywhere: exact)."""
    out: dict[str, dict[str, int]] = {}
    for table, _, _ in GRAINS:
        raw = dict(h.sql("SELECT organization_id, count() FROM traces FINAL GROUP BY organization_id"))
        rolled = dict(h.sql(f"SELECT organization_id, sum(requests) FROM {table} GROUP BY organization_id"))
        out[table] = {org: int(rolled.get(org, 0)) - int(raw.get(org, 0)) for org in sorted(set(raw) | set(rolled))}
    return out


def assert_exact(h: Harness) -> None:
    for table, column, bucket_fn in GRAINS:
        raw, rolled = raw_by(h, table, column, bucket_fn)
        assert raw == rolled, f"{table} differs from traces FINAL"
    # the latency states too: with fewer than 8192 values per bucket, merged quantiles are the exact ones
    raw_q = h.sql("SELECT organization_id, toUnixTimestamp(toStartOfMinute(ts)) AS b, quantiles(0.5, 0.95)(latency_ms) "
                  "FROM traces FINAL GROUP BY organization_id, b ORDER BY organization_id, b")
    rolled_q = h.sql("SELECT organization_id, toUnixTimestamp(minute) AS b, quantilesMerge(0.5, 0.95)(latency_ms) "
                     "FROM usage_minute GROUP BY organization_id, b ORDER BY organization_id, b")
    assert [(o, b, [round(v, 6) for v in q]) for o, b, q in raw_q] == \
        [(o, b, [round(v, 6) for v in q]) for o, b, q in rolled_q]


def wait_applied(h: Harness, timeout: float = 30.0) -> None:
    """Wait until ClickHouse has applied every queued DELETE (mutation) of the rollups."""
    deadline = time.monotonic() + timeout
    while h.sql(rollup_sql.PENDING_MUTATIONS_SQL, {"tables": list(rollup_sql.ROLLUP_TABLES)})[0][0]:
        assert time.monotonic() < deadline, "a rollup mutation was not applied"
        time.sleep(0.05)


class Recording:
    """The real store, with every statement the reconciler executes recorded (and, with `die_before`, the process
    killed right before the first statement starting with that text: it never runs)."""

    def __init__(self, store: TraceStore, die_before: str | None = None) -> None:
        self.store = store
        self.die_before = die_before
        self.executed: list[tuple[str, dict[str, Any]]] = []

    async def select(self, sql: str, params: dict[str, Any]) -> Any:
        return await self.store.select(sql, params)

    async def execute(self, sql: str, params: dict[str, Any], *, settings: dict[str, Any] | None = None) -> None:
        if self.die_before is not None and sql.startswith(self.die_before):
            raise ConnectionError("killed")
        self.executed.append((sql, params))
        await self.store.execute(sql, params, settings=settings)

    def organizations_written(self) -> set[str]:
        """The organizations whose rollup rows a DELETE or a rebuild INSERT touched."""
        return {org for sql, params in self.executed if not sql.startswith("INSERT INTO rollup_repairs")
                for org in params["orgs"]}


def test_one_round_makes_every_rollup_exact_and_leaves_correct_buckets_alone(harness: Harness) -> None:
    h = harness
    fine = spread("org_fine", 600)
    doubled = spread("org_doubled", 400)
    halves = spread("org_half", 300)
    hourless = spread("org_hourless", 200)
    for batch in (fine, doubled, halves[:150], hourless[:100]):
        assert h.run(h.tracer.store_events(batch, redelivered=False)) == len(batch)
    h.store_twice(doubled[100:220])  # a replay of acked traces: 120 requests counted twice
    h.store_without(("usage_minute_mv", "usage_hour_mv", "usage_day_mv"), halves[150:])  # 150 in traces only
    h.store_without(("usage_hour_mv", "usage_day_mv"), hourless[100:])  # in usage_minute, not in hour/day
    assert off_by(h) == {
        "usage_minute": {"org_doubled": 120, "org_fine": 0, "org_half": -150, "org_hourless": 0},
        "usage_hour": {"org_doubled": 120, "org_fine": 0, "org_half": -150, "org_hourless": -100},
        "usage_day": {"org_doubled": 120, "org_fine": 0, "org_half": -150, "org_hourless": -100},
    }

    # the tracer's own marking: the half-stored and replayed rows come back as redeliveries, are found already
    # stored and mark their minutes; org_fine's minutes are marked too (a suspect window), but are right
    for batch in (halves[150:], doubled[100:220], hourless[100:]):
        assert h.run(h.tracer.store_events(batch, redelivered=True)) == 0
    h.tracer.suspects.mark(suspects.minutes_of(fine), time.monotonic())
    suspect = suspects.minutes_of(halves[150:] + doubled[100:220] + hourless[100:] + fine)
    assert len(h.tracer.suspects) == len(suspect)
    assert not h.tracer.suspects.due(time.monotonic())  # not before the delay (60 s by default)

    recording = Recording(h.store)
    h.tracer.reconciler.store = recording  # type: ignore[assignment]
    checked = h.run(h.tracer.reconciler.round(time.monotonic() + 61, wall_s=WALL_S))
    assert checked == len(suspect)
    assert off_by(h) == {table: {org: 0 for org in ("org_doubled", "org_fine", "org_half", "org_hourless")}
                         for table in ("usage_minute", "usage_hour", "usage_day")}
    assert_exact(h)
    assert recording.organizations_written() == {"org_doubled", "org_half", "org_hourless"}  # org_fine untouched
    drifted_minutes = len(suspects.minutes_of(halves[150:] + doubled[100:220]))
    assert h.repairs("minute") == drifted_minutes
    drifted_hours = len(drift.coarser(suspects.minutes_of(halves[150:] + doubled[100:220] + hourless[100:]),
                                          3600))
    assert h.repairs("hour") == drifted_hours
    drifted_days = len(drift.coarser(suspects.minutes_of(halves[150:] + doubled[100:220] + hourless[100:]),
                                         86_400))
    assert drifted_days == 5  # org_doubled's replay is before midnight, the others straddle it
    assert h.repairs("day") == drifted_days

    # the rebuilt buckets are checked once more later; the rollups are right, so nothing is rebuilt again
    assert 0 < len(h.tracer.suspects) < len(suspect)
    assert h.run(h.tracer.reconciler.round(time.monotonic() + 200, wall_s=WALL_S)) > 0
    assert len(h.tracer.suspects) == 0
    assert (h.repairs("minute"), h.repairs("hour"), h.repairs("day")) == (drifted_minutes, drifted_hours, drifted_days)
    assert_exact(h)

    # what /v1/usage answers is now exact at every bucket width
    for org, events in (("org_doubled", doubled), ("org_half", halves), ("org_hourless", hourless),
                        ("org_fine", fine)):
        for bucket in ("minute", "hour", "day"):
            reply = h.run(h.tracer.usage(UsageQuery(organization_id=org, group_by="model", bucket=bucket,
                                                    since_ms=T0 - 86_400_000, until_ms=T0 + 2 * 86_400_000),
                                         now_ms=T0))
            assert reply.totals is not None and reply.totals.requests == len(events), (org, bucket)
            assert reply.totals.cost_usd == sum((e.cost_usd for e in events), Decimal(0))
            assert reply.totals.errors == sum(1 for e in events if e.status_code >= 400)
            assert reply.totals.total_tokens == sum(e.total_tokens for e in events)
            assert sum(row.requests for row in reply.rows) == len(events)


def test_merged_parts_and_repeated_rounds_stay_exact(harness: Harness) -> None:
    """Rebuilt rows merge like any other (AggregatingMergeTree), and a round over buckets that are right (or that
    were already rebuilt) changes nothing."""
    h = harness
    events = spread("org_m", 500, minutes=30)
    h.run(h.tracer.store_events(events[:250], redelivered=False))
    h.store_twice(events[:250])
    h.store_without(("usage_minute_mv",), events[250:])
    everything = suspects.minutes_of(events)
    assert h.run(h.tracer.reconciler.check(everything, wall_s=WALL_S))["minute"] == everything
    for table, _, _ in GRAINS:
        h.command(f"OPTIMIZE TABLE {table} FINAL")
    assert_exact(h)
    before = (h.repairs("minute"), h.repairs("hour"), h.repairs("day"))
    for _ in range(2):
        assert h.run(h.tracer.reconciler.check(everything, wall_s=WALL_S)) == {"minute": set(), "hour": set(),
                                                                                 "day": set()}
    assert (h.repairs("minute"), h.repairs("hour"), h.repairs("day")) == before
    assert_exact(h)


def test_a_repair_is_not_dropped_as_a_duplicate_block(harness: Harness) -> None:
    """The same bucket rebuilt twice with identical content: without insert_deduplicate = 0 the second INSERT would
    be dropped as a copy of the first, after its DELETE had run: the bucket would be lost."""
    h = harness
    events = spread("org_d", 50, minutes=1)
    h.run(h.tracer.store_events(events, redelivered=False))
    minute = suspects.minutes_of(events)
    for extra in range(3):
        h.store_twice(events[:10 + extra])  # another replay each time (another dedup token)
        assert h.run(h.tracer.reconciler.check(minute, wall_s=WALL_S))["minute"] == minute
        assert_exact(h)


def test_traces_in_the_last_second_of_a_minute_are_rebuilt_into_it(harness: Harness) -> None:
    """`ts` is DateTime64(3): bounds compared as DateTime are rounded to the second, which once put a trace at
    hh:mm:59.8 outside its own minute, so the rebuild dropped it (found by the live test at a minute's edge)."""
    h = harness
    edge = T0 // 60_000 * 60_000 + 60_000  # the start of the next minute
    late = [event(i, "org_e", edge - 250 + i * 10) for i in range(25)]  # hh:mm:59.750 … 59.990
    h.store_without(("usage_minute_mv", "usage_hour_mv", "usage_day_mv"), late)
    early = [event(100 + i, "org_e", edge + i) for i in range(5)]
    h.run(h.tracer.store_events(early, redelivered=False))
    minutes = suspects.minutes_of(late + early)
    assert len(minutes) == 2
    h.run(h.tracer.reconciler.check(minutes, wall_s=WALL_S))
    wait_applied(h)
    assert off_by(h) == {t: {"org_e": 0} for t, _, _ in GRAINS}
    assert_exact(h)


def test_buckets_older_than_the_trace_ttl_are_never_rebuilt(harness: Harness) -> None:
    h = harness
    events = spread("org_old", 20, minutes=1)
    h.run(h.tracer.store_events(events, redelivered=False))
    h.store_twice(events)
    late = WALL_S + 90 * 86_400  # the traces of that minute may be gone by now (TTL 90 days)
    assert h.run(h.tracer.reconciler.check(suspects.minutes_of(events), wall_s=late))["minute"] == set()
    assert off_by(h)["usage_minute"] == {"org_old": 20}


def test_at_start_the_minutes_of_the_last_rows_ingested_are_suspect(harness: Harness) -> None:
    """The previous process may have died between the `traces` part and the rollups of its last insert."""
    h = harness
    now_ms = int(time.time() * 1000) // 60_000 * 60_000
    earlier = [event(i, "org_s", now_ms - 3 * 3_600_000 + i) for i in range(5)]
    last = [event(100 + i, "org_s", now_ms - 600_000 + i) for i in range(5)] + [event(200, "org_t", now_ms - 60_000)]
    h.run(h.tracer.store_events(earlier, redelivered=False))
    time.sleep(1.3)  # the window looked back is max(suspect window, 1 s): use a 0 s window below
    h.store_without(("usage_minute_mv", "usage_hour_mv", "usage_day_mv"), last)
    assert off_by(h)["usage_minute"] == {"org_s": -5, "org_t": -1}
    tracer = h.tracer
    tracer.suspects = suspects.Suspects(delay_s=0, window_s=0)
    tracer.reconciler.suspects = tracer.suspects
    assert h.run(tracer.reconciler.recover(time.monotonic())) == (2, 0)
    assert tracer.suspects.waiting() == suspects.minutes_of(last)
    assert h.run(tracer.reconciler.round(time.monotonic(), wall_s=time.time())) == 2
    assert off_by(h)["usage_minute"] == {"org_s": 0, "org_t": 0}
    assert_exact(h)


@pytest.mark.parametrize("table", ["usage_minute", "usage_hour", "usage_day"])
def test_a_correction_cut_short_between_delete_and_insert_is_finished_by_the_next_process(harness: Harness,
                                                                                         table: str) -> None:
    h = harness
    events = spread("org_k", 300, minutes=150)  # crosses an hour and a day boundary
    h.run(h.tracer.store_events(events[:200], redelivered=False))
    h.store_twice(events[50:120])  # counted twice in every rollup
    h.store_without(("usage_minute_mv", "usage_hour_mv", "usage_day_mv"), events[200:])  # in traces only
    minutes = suspects.minutes_of(events[50:120] + events[200:])
    total = f"SELECT sum(requests) FROM {table} WHERE organization_id = 'org_k'"
    before = h.sql(total)[0][0]
    assert before == 200 + 70  # 70 counted twice, 100 missing
    dying = reconcile.Reconciler(Recording(h.store, die_before=f"INSERT INTO {table} "),  # type: ignore[arg-type]
                                 h.tracer.metrics,
                                 suspects.Suspects(delay_s=0, window_s=0), ttl_days=3650)
    with pytest.raises(ConnectionError, match="killed"):
        h.run(dying.check(minutes, wall_s=WALL_S))
    assert len(h.sql("SELECT * FROM rollup_repairs FINAL WHERE done = 0")) == len(minutes)
    wait_applied(h)  # the DELETE's mutation outlives the process that queued it
    assert h.sql(total)[0][0] < before  # the DELETE ran, its INSERT did not: the rollup is short now

    restarted = reconcile.Reconciler(h.store, h.tracer.metrics, suspects.Suspects(delay_s=0, window_s=0),
                                     ttl_days=3650)
    recent, unfinished = h.run(restarted.recover(time.monotonic()))
    assert unfinished == len(minutes) and minutes <= restarted.suspects.waiting()
    while h.run(restarted.round(time.monotonic(), wall_s=WALL_S)):  # the rebuilt buckets are verified once more
        pass
    assert len(restarted.suspects) == 0
    assert off_by(h) == {t: {"org_k": 0} for t, _, _ in GRAINS}
    assert_exact(h)
    assert h.sql("SELECT * FROM rollup_repairs FINAL WHERE done = 0") == []


# ------------------------------------------------------------------------------------------ a running tracer


class Live(Bus):
    def tracer(self) -> Tracer:
        settings = Settings(nats_url=self.server.url, stream_replicas=1, clickhouse_url="", host="127.0.0.1", port=0,
                            admin_token=Secret("t"), batch_size=100, flush_interval_s=0.05, ttl_days=90,
                            log_level="INFO", reconcile_delay_s=0.2, reconcile_suspect_s=0.0)
        return Tracer(settings, self.nc, self.js, self.store)

    async def off(self) -> dict[str, int]:
        """Per rollup: its request count minus traces FINAL's."""
        raw = await self.count()
        return {table: await self.one(f"SELECT sum(requests) FROM {table}") - raw for table, _, _ in GRAINS}


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with running_bus(tmp_path, Live) as running:
        yield running


async def test_a_tracer_started_after_a_half_stored_insert_repairs_the_rollups_on_its_own(live: Live) -> None:
    """Its predecessor died between the `traces` part and the rollup parts of its last insert: the new process
    marks the minutes ingested last at start, and its consumer loop rebuilds them while traces keep flowing."""
    now_ms = int(time.time() * 1000)
    half = [event(i, "org_h", now_ms - 90_000 + i * 10) for i in range(40)]
    for view in ("usage_minute_mv", "usage_hour_mv", "usage_day_mv"):
        await live.store.execute(f"DETACH TABLE {view}", {})
    await live.store.insert(rows.to_columns(half), dedup_token="half")
    for view in ("usage_minute_mv", "usage_hour_mv", "usage_day_mv"):
        await live.store.execute(f"ATTACH TABLE {view}", {})
    assert await live.off() == {"usage_minute": -40, "usage_hour": -40, "usage_day": -40}

    tracer = live.tracer()
    await tracer.start()
    try:
        fresh = [event(1000 + i, "org_h", now_ms - 30_000 + i) for i in range(25)]
        await live.publish_all(fresh)

        async def exact() -> bool:
            return await live.one("SELECT count() FROM traces FINAL") == 65 and set((await live.off()).values()) == {0}

        await until(exact)
    finally:
        await tracer.stop()
    assert tracer.metrics.registry.get_sample_value("routeur_tracer_rollup_repairs_total", {"grain": "minute"})


async def test_stored_traces_delivered_again_as_new_never_reach_the_rollups_twice(live: Live) -> None:
    """nats-server killed: the consumer's acks are lost and traces already stored come back with delivery count 1.
    Recreating the consumer behind the tracer's back does the same: whatever comes back again must not count twice,
    even in batches made differently from the first ones (so ClickHouse's insert deduplication cannot help)."""
    tracer = live.tracer()
    await tracer.start()
    try:
        now_ms = int(time.time() * 1000)
        events = [event(i, "org_r", now_ms - 60_000 + i * 100) for i in range(30)]
        for chunk in (events[:10], events[10:20], events[20:]):  # three batches of ten
            target = tracer.inserted + len(chunk)
            await live.publish_all(chunk)

            async def stored(n: int = target) -> bool:
                return tracer.inserted >= n

            await until(stored)
        assert tracer.inserted == 30
        config = ConsumerConfig(durable_name=subjects.TRACE_CONSUMER, name=subjects.TRACE_CONSUMER,
                                filter_subject=subjects.TRACE_SUBJECT, ack_policy=AckPolicy.EXPLICIT,
                                deliver_policy=DeliverPolicy.ALL, ack_wait=60, max_ack_pending=50_000)
        await live.js.delete_consumer(subjects.TRACE_STREAM, subjects.TRACE_CONSUMER)
        await live.js.add_consumer(subjects.TRACE_STREAM, config=config)  # every stored trace is pending again
        more = [event(100 + i, "org_r", now_ms - 1_000 + i) for i in range(5)]
        await live.publish_all(more)

        async def settled() -> bool:
            info = await live.js.consumer_info(subjects.TRACE_STREAM, subjects.TRACE_CONSUMER)
            return not info.num_pending and not info.num_ack_pending

        await until(settled)
        await asyncio.sleep(0.5)  # anything marked is checked 0.2 s later
    finally:
        await tracer.stop()
    assert await live.one("SELECT count() FROM traces FINAL") == 35
    assert await live.off() == {"usage_minute": 0, "usage_hour": 0, "usage_day": 0}

