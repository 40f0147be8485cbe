"""The rollup reconciler's pure parts: suspect-bucket bookkeeping, the SQL it builds, the comparison; and when the
tracer marks buckets (a fake store: no ClickHouse here)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from proto import codec
from proto.trace import TraceEvent
from services.common.settings import SettingsError
from services.tracer import drift, reconcile, rollup_sql, schema, suspects
from services.tracer import settings as settings_module
from services.tracer.batching import ack_info
from services.tracer.drift import Drift
from services.tracer.metrics import TracerMetrics
from services.tracer.service import Tracer
from services.tracer.suspects import Suspects

MIN = 1_763_900_040  # a minute boundary (Unix seconds)
A, B = ("org_a", MIN), ("org_b", MIN + 60)


# ------------------------------------------------------------------------------------------ bookkeeping


def test_a_bucket_is_due_delay_after_it_was_first_marked_and_marking_again_does_not_postpone_it() -> None:
    s = Suspects(delay_s=60, window_s=120)
    s.mark([A], now=100.0)
    assert A in s and len(s) == 1
    assert not s.due(159.9) and s.take_due(159.9) == []
    s.mark([A, A], now=150.0)  # marked again while waiting: still due at 160
    assert len(s) == 1
    assert s.due(160.0)
    assert s.take_due(160.0) == [(A, False)]
    assert len(s) == 0 and not s.due(10_000.0)


def test_only_the_due_buckets_are_taken_and_the_next_due_time_follows() -> None:
    s = Suspects(delay_s=10, window_s=0)
    s.mark([A], now=0.0)
    s.mark([B], now=5.0)
    assert s.take_due(12.0) == [(A, False)]
    assert not s.due(14.9) and s.due(15.0)
    assert s.take_due(15.0) == [(B, False)]


def test_a_round_takes_whole_hours_up_to_a_limit() -> None:
    s = Suspects(delay_s=0, window_s=0)
    buckets = [(f"org_{i % 2}", MIN + 3600 * (i // 4) + 60 * (i % 4)) for i in range(40)]  # 10 hours, 4 each
    s.mark(buckets, now=0.0)
    first = s.take_due(1.0, max_hours=3)
    assert len(first) == 12 and len({b[1] // 3600 for b, _ in first}) == 3
    assert s.due(1.0)  # the rest is still due: the next turn of the loop takes it
    rest = s.take_due(1.0, max_hours=100)
    assert {b for b, _ in first} | {b for b, _ in rest} == set(buckets) and len(s) == 0


def test_everything_takes_what_is_not_due_yet() -> None:
    s = Suspects(delay_s=60, window_s=0)
    s.mark([A, B], now=0.0)
    assert s.take_due(1.0) == []
    assert sorted(s.take_due(1.0, everything=True)) == [(A, False), (B, False)]
    s.mark([("o", MIN + 3600 * i) for i in range(5)], now=2.0)
    assert len(s.take_due(2.0, everything=True, max_hours=2)) == 2 and len(s) == 3


def test_verification_marks_are_flagged_and_a_real_mark_wins() -> None:
    s = Suspects(delay_s=1, window_s=0)
    s.mark([A, B], now=0.0, verify=True)
    s.mark([B], now=0.5)  # a fault marks it again before the verification: a full check
    s.mark([A], now=0.5, verify=True)
    assert sorted(s.take_due(2.0)) == [(A, True), (B, False)]


def test_the_number_of_waiting_buckets_is_bounded() -> None:
    s = Suspects(delay_s=1, window_s=0, limit=3)
    s.mark([("o", MIN + 60 * i) for i in range(5)], now=0.0)
    assert len(s) == 3 and s.dropped == 2
    s.mark([("o", MIN)], now=0.0)  # already waiting: not a drop
    assert s.dropped == 2


def test_the_suspect_window_opens_for_window_s_and_only_ever_extends() -> None:
    s = Suspects(delay_s=60, window_s=120)
    assert not s.in_window(0.0)
    s.open_window(10.0)
    assert s.in_window(10.0) and s.in_window(129.9) and not s.in_window(130.0)
    s.open_window(20.0)
    assert s.in_window(139.9)
    closed = Suspects(delay_s=60, window_s=0)
    closed.open_window(10.0)
    assert not closed.in_window(10.0)


@pytest.mark.parametrize("delay, window, limit", [(-1, 0, 1), (0, -1, 1), (0, 0, 0), (float("nan"), 0, 1)])
def test_nonsense_bookkeeping_is_refused(delay: float, window: float, limit: int) -> None:
    with pytest.raises(ValueError):
        Suspects(delay_s=delay, window_s=window, limit=limit)


def trace(i: int, org: str, ts_ms: int) -> TraceEvent:
    return TraceEvent(request_id=f"req_{i:04d}", timestamp_ms=ts_ms, organization_id=org, api_key_id="k",
                      endpoint="/v1/chat/completions", requested_model="m", model="m", provider="p",
                      upstream_model="m", route_reason="default", status_code=200, stream=False, latency_ms=1.0,
                      upstream_latency_ms=1.0, cost_usd=Decimal("0.000001"))


def test_minutes_of_floors_each_trace_to_its_organization_and_minute() -> None:
    ms = MIN * 1000
    events = [trace(0, "a", ms), trace(1, "a", ms + 59_999), trace(2, "a", ms + 60_000), trace(3, "b", ms + 1)]
    assert suspects.minutes_of(events) == {("a", MIN), ("a", MIN + 60), ("b", MIN)}


def test_coarser_buckets_and_spans() -> None:
    day = MIN - MIN % 86_400
    assert drift.coarser([("a", MIN), ("a", MIN + 60), ("b", MIN)], 86_400) == {("a", day), ("b", day)}
    pairs = [("a", day + 3600 * 2 + 60), ("a", day + 60), ("b", day + 120), ("a", day + 3600 * 2)]
    assert drift.spans(pairs, 3600) == [[("a", day + 60), ("b", day + 120)],
                                            [("a", day + 7200), ("a", day + 7260)]]


# ------------------------------------------------------------------------------------------ SQL


def _columns(select: str) -> list[str]:
    """The output column names of a `SELECT a, f(b, c) AS d, …` list: top-level commas only."""
    items, depth, current = [], 0, ""
    for char in select.removeprefix("SELECT").split(" FROM ")[0]:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [item.split(" AS ")[-1].strip() for item in items]


ROLLUP_COLUMNS = [*schema.ROLLUP_KEYS, *schema.ROLLUP_SUMS, "latency_ms"]


def test_the_rollup_column_constants_match_the_schema() -> None:
    """The reconciler builds its SQL from schema.ROLLUP_KEYS/ROLLUP_SUMS: they must be the MV's columns, in order."""
    assert _columns(schema.USAGE_MINUTE_SELECT) == ["minute", *ROLLUP_COLUMNS]
    assert f"quantilesState({schema.LATENCY_QUANTILES})" in schema.USAGE_MINUTE_SELECT
    assert schema.USAGE_MINUTE_GROUP == f"GROUP BY minute, {', '.join(schema.ROLLUP_KEYS)}"
    assert _columns(rollup_sql.HOUR.rebuild) == ["hour", *ROLLUP_COLUMNS]
    assert _columns(rollup_sql.DAY.rebuild) == ["day", *ROLLUP_COLUMNS]


def test_the_minute_rebuild_is_the_materialized_views_own_select_over_traces_final() -> None:
    sql, params = rollup_sql.insert_sql(rollup_sql.MINUTE, [("org_b", MIN + 60), ("org_a", MIN)])
    assert sql.startswith(f"INSERT INTO usage_minute ({rollup_sql.MINUTE.columns}) {schema.USAGE_MINUTE_SELECT} "
                          "FROM traces FINAL WHERE ")
    assert sql.endswith(schema.USAGE_MINUTE_GROUP)
    assert "ts >= toDateTime64({lo:Int64}, 3, 'UTC') AND ts < toDateTime64({hi:Int64}, 3, 'UTC')" in sql
    assert params == {"orgs": ["org_a", "org_b"], "lo": MIN, "hi": MIN + 120,
                      "pairs": [("org_a", MIN), ("org_b", MIN + 60)]}


@pytest.mark.parametrize("grain, source", [(rollup_sql.HOUR, "FROM usage_minute"), (rollup_sql.DAY, "FROM usage_hour")])
def test_hours_and_days_are_rebuilt_from_the_finer_rollup(grain: rollup_sql.Grain, source: str) -> None:
    sql, params = rollup_sql.insert_sql(grain, [("org_a", MIN - MIN % grain.width_s)])
    assert sql.startswith(f"INSERT INTO {grain.table} ({grain.columns}) SELECT ") and source in sql
    assert f"quantilesMergeState({schema.LATENCY_QUANTILES})(latency_ms) AS latency_ms" in sql
    assert params["hi"] - params["lo"] == grain.width_s


def _table_columns(statement: str) -> list[str]:
    body = statement.split("(", 1)[1].rsplit(") ENGINE", 1)[0]
    return [line.split()[0] for line in body.strip().splitlines()]


def test_rebuilds_name_the_rollups_columns_in_table_order() -> None:
    created = {table: _table_columns(sql) for _, sql in schema.MIGRATIONS if isinstance(sql, str)
               for table in ("usage_minute", "usage_hour", "usage_day")
               if sql.lstrip().startswith(f"CREATE TABLE IF NOT EXISTS {table} ")}
    created |= {table: _table_columns(schema._rollup_table(table, column))
                for table, column in (("usage_hour", "hour"), ("usage_day", "day"))}
    for grain in rollup_sql.GRAINS:
        assert grain.columns.split(", ") == created[grain.table]
        sql, _ = rollup_sql.insert_sql(grain, [("o", MIN - MIN % grain.width_s)])
        assert sql.startswith(f"INSERT INTO {grain.table} ({grain.columns}) SELECT")


def test_the_journal_statements() -> None:
    sql, params = rollup_sql.journal_sql([B, A], done=False, version=7)
    assert sql.startswith("INSERT INTO rollup_repairs (organization_id, minute, version, done) SELECT ")
    assert params == {"pairs": [A, B], "version": 7, "done": 0}
    assert rollup_sql.journal_sql([A], done=True, version=8)[1]["done"] == 1
    journal = next(sql for version, sql in schema.MIGRATIONS if version == 12)
    assert isinstance(journal, str) and "ReplacingMergeTree(version)" in journal
    assert _table_columns(journal) == ["organization_id", "minute", "version", "done", "written_at"]
    assert "FROM rollup_repairs FINAL WHERE done = 0" in rollup_sql.UNFINISHED_SQL


def test_organization_ids_only_ever_travel_as_parameters() -> None:
    hostile = "x' OR 1=1 --"
    for grain in rollup_sql.GRAINS:
        for build in (rollup_sql.delete_sql, rollup_sql.insert_sql, rollup_sql.source_sums_sql,
                      rollup_sql.rollup_sums_sql):
            sql, params = build(grain, [(hostile, MIN - MIN % grain.width_s)])
            assert hostile not in sql and params["orgs"] == [hostile]
    delete, _ = rollup_sql.delete_sql(rollup_sql.MINUTE, [A])
    assert delete.startswith("DELETE FROM usage_minute WHERE organization_id IN {orgs:Array(String)}")
    assert rollup_sql.INSERT_SETTINGS == {"insert_deduplicate": 0}


# ------------------------------------------------------------------------------------------ comparison


def _rows(bucket: int, org: str, *groups: tuple[str, int, str]) -> list[tuple[Any, ...]]:
    return [(bucket, org, key, "m", "p", requests, 0, 1, 2, 3, Decimal(cost), 0, 0) for key, requests, cost in groups]


def test_a_bucket_drifts_when_any_group_or_sum_differs() -> None:
    source = drift.by_bucket(_rows(MIN, "org_a", ("k1", 3, "0.1"), ("k2", 1, "0.2"))
                                 + _rows(MIN, "org_b", ("k1", 2, "0.3")) + _rows(MIN + 60, "org_b", ("k1", 1, "1")))
    same = drift.by_bucket(_rows(MIN, "org_a", ("k2", 1, "0.20"), ("k1", 3, "0.1000"))  # Decimal scale aside
                               + _rows(MIN + 60, "org_b", ("k1", 1, "1")))
    pairs = [("org_a", MIN), ("org_b", MIN), ("org_b", MIN + 60)]
    assert drift.drifts(pairs, source, same) == [Drift(("org_b", MIN), before=0, after=2)]
    over = drift.by_bucket(_rows(MIN, "org_a", ("k1", 6, "0.2"), ("k2", 1, "0.2")))
    assert drift.drifts([("org_a", MIN)], source, over) == [Drift(("org_a", MIN), before=7, after=4)]
    cost_only = drift.by_bucket(_rows(MIN, "org_a", ("k1", 3, "0.1"), ("k2", 1, "0.21")))
    assert drift.drifts([("org_a", MIN)], source, cost_only) == [Drift(("org_a", MIN), before=4, after=4)]
    moved = drift.by_bucket(_rows(MIN, "org_a", ("k1", 4, "0.3")))  # same totals, other groups
    assert drift.drifts([("org_a", MIN)], source, moved) == [Drift(("org_a", MIN), before=4, after=4)]
    ghost = drift.by_bucket(_rows(MIN + 120, "org_a", ("k1", 1, "0.1")))  # in the rollup, not in the source
    assert drift.drifts([("org_a", MIN + 120)], source, ghost) == [Drift(("org_a", MIN + 120), before=1, after=0)]


# ------------------------------------------------------------------------------------------ when the tracer marks


class FakeStore:
    """existing_ids answers from `stored`; insert stores, or raises while `failing`."""

    def __init__(self) -> None:
        self.stored: set[str] = set()
        self.failing = False
        self.checked = 0

    async def existing_ids(self, keys: list[tuple[str, int, str]]) -> set[str]:
        self.checked += 1
        return {k[2] for k in keys} & self.stored

    async def insert(self, columns: list[list[Any]], *, dedup_token: str | None = None) -> None:
        if self.failing:
            raise ConnectionError("ClickHouse cannot write")
        self.stored.update(columns[0])


def _tracer() -> tuple[Tracer, FakeStore]:
    store = FakeStore()
    return Tracer(None, None, None, store), store  # type: ignore[arg-type]


async def test_the_normal_path_marks_nothing() -> None:
    tracer, store = _tracer()
    assert await tracer.store_events([trace(i, "a", MIN * 1000 + i) for i in range(10)], redelivered=False) == 10
    assert len(tracer.suspects) == 0 and store.checked == 0


async def test_a_batch_holding_redeliveries_marks_all_its_minutes() -> None:
    """Rows found stored may be in `traces` without their rollup rows; rows not found may have reached the rollups
    without their `traces` row (the reverse half): both kinds of minute are checked."""
    tracer, store = _tracer()
    old = [trace(i, "a", MIN * 1000 + i) for i in range(3)]
    await tracer.store_events(old, redelivered=False)
    fresh = [trace(10 + i, "b", (MIN + 600) * 1000) for i in range(3)]
    assert await tracer.store_events(old + fresh, redelivered=True) == 3
    assert store.stored == {e.request_id for e in old + fresh}
    assert tracer.suspects.waiting() == {("a", MIN), ("b", MIN + 600)}


async def test_a_failed_insert_marks_its_minutes_and_opens_the_suspect_window() -> None:
    tracer, store = _tracer()
    store.failing = True
    with pytest.raises(ConnectionError):
        await tracer.store_events([trace(0, "a", MIN * 1000)], redelivered=False)
    assert tracer.suspects.waiting() == {("a", MIN)}
    store.failing = False
    later = [trace(1, "c", (MIN + 3600) * 1000)]
    await tracer.store_events(later, redelivered=False)  # inserted in the window: suspect too
    assert tracer.suspects.waiting() == {("a", MIN), ("c", MIN + 3600)}


def _reply(delivered: int, seq: int, pending: int = 0) -> str:
    return f"$JS.ACK.ROUTEUR_TRACES.tracer.{delivered}.{seq}.{seq}.1763900000123456789.{pending}"


class FakeMsg:
    def __init__(self, event: TraceEvent, reply: str) -> None:
        self.data = codec.encode(event)
        self.reply = reply
        self.acked = False

    async def ack(self) -> None:
        self.acked = True

    async def nak(self, delay: float | None = None) -> None:
        return None

    async def term(self) -> None:
        return None


async def test_a_first_delivery_below_the_stored_sequence_is_a_replay_and_is_checked() -> None:
    """nats-server killed: messages stored and acked come back with delivery count 1. Their stream sequence is at or
    below the highest one already stored, so the batch goes through the already-stored check."""
    tracer, store = _tracer()
    first = [FakeMsg(trace(i, "a", MIN * 1000 + i), _reply(1, 100 + i)) for i in range(5)]
    await tracer._write(first)  # type: ignore[arg-type]
    assert store.checked == 0 and all(m.acked for m in first) and tracer.cursor.stored_seq == 104
    fresh = [FakeMsg(trace(5 + i, "a", MIN * 1000 + 5 + i), _reply(1, 105 + i)) for i in range(3)]
    await tracer._write(fresh)  # type: ignore[arg-type]
    assert store.checked == 0 and len(store.stored) == 8
    replayed = [FakeMsg(trace(3 + i, "a", MIN * 1000 + 3 + i), _reply(1, 103 + i)) for i in range(4)]
    replayed.append(FakeMsg(trace(50, "a", MIN * 1000 + 50), _reply(1, 108)))
    await tracer._write(replayed)  # type: ignore[arg-type]
    assert store.checked == 1 and len(store.stored) == 9  # only the new one inserted
    assert all(m.acked for m in replayed) and tracer.suspects.waiting() == {("a", MIN)}


def test_ack_info_reads_the_stream_sequence() -> None:
    assert ack_info("$JS.ACK.ROUTEUR_TRACES.tracer.1.120.118.1763900000123456789.42") == (1, 120, 42)
    assert ack_info("$JS.ACK.hub.ACCHASH.ROUTEUR_TRACES.tracer.3.121.118.1763900000123456789.0.tok") == (3, 121, 0)


async def test_the_stored_sequence_is_the_highest_of_the_batch_not_its_last() -> None:
    """A redelivery (higher count, lower sequence) can come last in a batch: what was stored is still up to the
    highest sequence, so a later first delivery below it is a replay."""
    tracer, store = _tracer()
    first = [FakeMsg(trace(0, "a", MIN * 1000), _reply(1, 110)), FakeMsg(trace(1, "a", MIN * 1000 + 1), _reply(2, 105))]
    await tracer._write(first)  # type: ignore[arg-type]
    assert tracer.cursor.stored_seq == 110 and store.checked == 1  # the redelivery made it a checked batch
    await tracer._write([FakeMsg(trace(0, "a", MIN * 1000), _reply(1, 108))])  # type: ignore[arg-type]
    assert store.checked == 2 and len(store.stored) == 2


# ------------------------------------------------------------------------------------------ the reconciler's steps


class ScriptedStore:
    """The reconciler's view of ClickHouse: per grain, the (bucket, keys…, sums…) rows the source and the rollup
    hold; every statement executed, in order; `crash_at`: the statement that raises (the process dies there)."""

    def __init__(self) -> None:
        self.source: dict[str, list[tuple[Any, ...]]] = {grain.name: [] for grain in rollup_sql.GRAINS}
        self.rollup: dict[str, list[tuple[Any, ...]]] = {grain.name: [] for grain in rollup_sql.GRAINS}
        self.recent: list[tuple[str, int]] = []
        self.unfinished: list[tuple[str, int]] = []
        self.statements: list[tuple[Any, ...]] = []
        self.crash_at: tuple[Any, ...] | None = None
        self.down = False
        self.mutations: list[str] = []  # tables with a DELETE not applied yet
        self.stuck = False  # mutations never apply (merges stopped, read-only disk)

    async def select(self, sql: str, params: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        if self.down:
            raise ConnectionError("ClickHouse is not answering")
        for grain in rollup_sql.GRAINS:
            if sql == rollup_sql.source_sums_sql(grain, [A])[0]:
                return [], self.source[grain.name]
            if sql == rollup_sql.rollup_sums_sql(grain, [A])[0]:
                return [], self.rollup[grain.name]
        if sql == rollup_sql.RECENT_SQL:
            return [], list(self.recent)
        if sql == rollup_sql.UNFINISHED_SQL:
            return [], list(self.unfinished)
        if sql == rollup_sql.PENDING_MUTATIONS_SQL:
            pending = [table for table in self.mutations if table in params["tables"]]
            if not self.stuck:
                self.mutations.clear()  # applied by the time anybody looks again
            return [], [(len(pending),)]
        raise AssertionError(f"unexpected query: {sql[:80]}")

    async def execute(self, sql: str, params: dict[str, Any], *, settings: dict[str, Any] | None = None) -> None:
        if sql.startswith("INSERT INTO rollup_repairs"):
            step: tuple[Any, ...] = ("close" if params["done"] else "open", tuple(params["pairs"]))
            assert settings == rollup_sql.INSERT_SETTINGS
        else:
            verb, _, table = sql.split(" ")[:3]
            step = (verb.lower(), table, tuple(params["pairs"]))
            assert settings == (rollup_sql.DELETE_SETTINGS if verb == "DELETE" else rollup_sql.INSERT_SETTINGS)
        if step == self.crash_at:
            raise ConnectionError("killed")
        if step[0] == "delete":
            self.mutations.append(step[1])
        self.statements.append(step)


def _reconciler(store: ScriptedStore, *, delay_s: float = 10) -> reconcile.Reconciler:
    return reconcile.Reconciler(store, TracerMetrics(), Suspects(delay_s=delay_s, window_s=0),  # type: ignore[arg-type]
                                ttl_days=90, mutation_wait_s=0.2)


NOW_S = MIN + 86_400  # wall clock for the TTL guard


async def test_a_check_journals_its_minutes_around_the_rebuilds_and_rebuilds_only_what_differs() -> None:
    store = ScriptedStore()
    store.source["minute"] = _rows(MIN, "org_a", ("k1", 3, "0.3"))
    store.rollup["minute"] = _rows(MIN, "org_a", ("k1", 6, "0.6"))  # counted twice
    hour = MIN - MIN % 3600
    store.source["hour"] = _rows(hour, "org_a", ("k1", 3, "0.3"))
    store.rollup["hour"] = _rows(hour, "org_a", ("k1", 6, "0.6"))
    day = MIN - MIN % 86_400
    store.source["day"] = store.rollup["day"] = _rows(day, "org_a", ("k1", 9, "1"))  # right already
    minutes = [("org_a", MIN), ("org_a", MIN + 60)]
    repaired = await _reconciler(store).check(minutes, wall_s=NOW_S)
    assert repaired == {"minute": {("org_a", MIN)}, "hour": {("org_a", hour)}, "day": set()}
    assert store.statements == [
        ("open", tuple(minutes)),
        ("delete", "usage_minute", (("org_a", MIN),)), ("insert", "usage_minute", (("org_a", MIN),)),
        ("delete", "usage_hour", (("org_a", hour),)), ("insert", "usage_hour", (("org_a", hour),)),
        ("close", tuple(minutes)),
    ]


async def test_a_check_that_finds_nothing_writes_nothing() -> None:
    store = ScriptedStore()
    store.source["minute"] = store.rollup["minute"] = _rows(MIN, "org_a", ("k1", 3, "0.300"))
    assert await _reconciler(store).check([("org_a", MIN)], wall_s=NOW_S) == {"minute": set(), "hour": set(),
                                                                              "day": set()}
    assert store.statements == []


async def test_a_process_killed_between_delete_and_insert_leaves_an_open_entry_the_next_one_repairs() -> None:
    store = ScriptedStore()
    store.source["minute"] = _rows(MIN, "org_a", ("k1", 3, "0.3"))
    store.rollup["minute"] = _rows(MIN, "org_a", ("k1", 6, "0.6"))
    first = _reconciler(store)
    first.suspects.mark([("org_a", MIN)], now=0.0)
    store.crash_at = ("insert", "usage_minute", (("org_a", MIN),))
    assert await first.round(10.0, wall_s=NOW_S) == 0  # failed: marked again, but this process dies here
    assert store.statements == [("open", (("org_a", MIN),)), ("delete", "usage_minute", (("org_a", MIN),))]

    store.crash_at = None
    store.rollup["minute"] = []  # what the DELETE left
    store.unfinished = [("org_a", MIN)]  # the journal: opened, never closed
    store.statements.clear()
    second = _reconciler(store)  # the restarted process
    assert await second.recover(now=100.0) == (0, 1)
    assert second.suspects.waiting() == {("org_a", MIN)}
    assert await second.round(110.0, wall_s=NOW_S) == 0  # the dead process's DELETE is still being applied
    assert store.statements == []
    assert await second.round(120.0, wall_s=NOW_S) == 1
    assert store.statements == [
        ("open", (("org_a", MIN),)),
        ("delete", "usage_minute", (("org_a", MIN),)), ("insert", "usage_minute", (("org_a", MIN),)),
        ("close", (("org_a", MIN),)),  # the check's own entry
        ("close", (("org_a", MIN),)),  # the one the dead process left open
    ]
    assert second.suspects.waiting() == {("org_a", MIN)}  # verified once more later

    store.rollup["minute"] = store.source["minute"]  # the rebuild held
    store.statements.clear()
    assert await second.round(200.0, wall_s=NOW_S) == 1
    assert store.statements == [] and len(second.suspects) == 0  # nothing written, nothing left open


async def test_an_unfinished_entry_found_right_is_closed_without_a_rebuild() -> None:
    """Killed after the INSERT, before the journal was closed: the check finds the bucket right and closes it."""
    store = ScriptedStore()
    store.source["minute"] = store.rollup["minute"] = _rows(MIN, "org_a", ("k1", 3, "0.3"))
    store.unfinished = [("org_a", MIN)]
    reconciler = _reconciler(store, delay_s=0)
    await reconciler.recover(now=0.0)
    assert await reconciler.round(0.0, wall_s=NOW_S) == 1
    assert store.statements == [("close", (("org_a", MIN),))]
    assert await reconciler.round(1.0, wall_s=NOW_S) == 0 and store.statements == [("close", (("org_a", MIN),))]


async def test_a_failed_round_marks_its_buckets_again_and_never_raises() -> None:
    store = ScriptedStore()
    reconciler = _reconciler(store)
    reconciler.suspects.mark([A, B], now=0.0)
    store.down = True
    assert await reconciler.round(10.0, wall_s=NOW_S) == 0
    assert reconciler.suspects.waiting() == {A, B} and not reconciler.suspects.due(19.9)
    assert reconciler.metrics.registry.get_sample_value("routeur_tracer_reconcile_failures_total") == 1
    store.down = False
    assert await reconciler.round(20.0, wall_s=NOW_S) == 2 and len(reconciler.suspects) == 0


async def test_a_round_waits_while_a_rollup_delete_is_still_being_applied() -> None:
    """A pending DELETE (an earlier rebuild's, or a dead process's) means the rollup is not what it will be:
    nothing is compared or written until it is applied."""
    store = ScriptedStore()
    store.source["minute"] = _rows(MIN, "org_a", ("k1", 3, "0.3"))
    reconciler = _reconciler(store)
    reconciler.suspects.mark([("org_a", MIN)], now=0.0)
    store.mutations, store.stuck = ["usage_hour"], True
    assert await reconciler.round(10.0, wall_s=NOW_S) == 0
    assert store.statements == [] and reconciler.suspects.waiting() == {("org_a", MIN)}
    assert not reconciler.suspects.due(19.9)
    store.stuck = False
    assert await reconciler.round(20.0, wall_s=NOW_S) == 0  # this look sees it pending; it is applied after
    assert await reconciler.round(30.0, wall_s=NOW_S) == 1
    assert [step[:2] for step in store.statements] == [("open", (("org_a", MIN),)), ("delete", "usage_minute"),
                                                       ("insert", "usage_minute"), ("close", (("org_a", MIN),))]


async def test_a_delete_that_is_never_applied_fails_the_round_before_the_next_grain_reads_it() -> None:
    store = ScriptedStore()
    store.source["minute"] = _rows(MIN, "org_a", ("k1", 3, "0.3"))
    store.stuck = True
    reconciler = _reconciler(store)
    reconciler.suspects.mark([("org_a", MIN)], now=0.0)
    assert await reconciler.round(10.0, wall_s=NOW_S) == 0
    assert [step[:2] for step in store.statements] == [("open", (("org_a", MIN),)), ("delete", "usage_minute"),
                                                       ("insert", "usage_minute")]  # no hour compare, not closed
    assert reconciler.metrics.registry.get_sample_value("routeur_tracer_reconcile_failures_total") == 1
    assert reconciler.suspects.waiting() == {("org_a", MIN)}


async def test_at_start_the_recent_and_unfinished_minutes_are_marked() -> None:
    store = ScriptedStore()
    store.recent = [("org_a", MIN), ("org_b", MIN + 60)]
    store.unfinished = [("org_c", MIN - 3600)]
    reconciler = _reconciler(store)
    assert await reconciler.recover(now=0.0) == (2, 1)
    assert reconciler.suspects.waiting() == {("org_a", MIN), ("org_b", MIN + 60), ("org_c", MIN - 3600)}


async def test_minutes_older_than_the_trace_ttl_are_not_compared() -> None:
    store = ScriptedStore()
    store.rollup["minute"] = _rows(MIN, "org_a", ("k1", 6, "0.6"))  # would be a drift
    late = MIN + 90 * 86_400
    assert await _reconciler(store).check([("org_a", MIN)], wall_s=late) == {"minute": set(), "hour": set(),
                                                                             "day": set()}
    assert store.statements == []


class FakeNc:
    def __init__(self) -> None:
        self.stats = {"reconnects": 0}


async def test_the_consumer_loop_opens_the_window_on_reconnect_and_retries_the_startup_scan() -> None:
    store = ScriptedStore()
    nc = FakeNc()
    tracer = Tracer(None, nc, None, store)  # type: ignore[arg-type]
    store.down = True
    await tracer._recover()
    assert tracer._recover_at is not None and tracer._recover_at > time.monotonic()  # retried later
    await tracer._maintain()
    assert not tracer.suspects.in_window(time.monotonic())
    nc.stats["reconnects"] = 1  # the client reconnected: the server may have lost acks
    await tracer._maintain()
    assert tracer.suspects.in_window(time.monotonic())
    store.down = False
    store.recent = [("org_a", MIN)]
    tracer._recover_at = time.monotonic()  # the retry is due
    await tracer._maintain()
    assert tracer._recover_at is None and tracer.suspects.waiting() == {("org_a", MIN)}


# ------------------------------------------------------------------------------------------ settings


def test_reconciler_settings_from_the_environment() -> None:
    base = {"ROUTEUR_ADMIN_TOKEN": "t"}
    loaded = settings_module.load(base)
    assert (loaded.reconcile_delay_s, loaded.reconcile_suspect_s) == (60.0, 120.0)
    short = settings_module.load(base | {"TRACER_RECONCILE_DELAY_S": "2", "TRACER_RECONCILE_SUSPECT_S": "0.5"})
    assert (short.reconcile_delay_s, short.reconcile_suspect_s) == (2.0, 0.5)
    for bad in ("-1", "nan", "soon"):
        with pytest.raises(SettingsError, match="TRACER_RECONCILE_DELAY_S"):
            settings_module.load(base | {"TRACER_RECONCILE_DELAY_S": bad})
