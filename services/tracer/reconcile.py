"""Rollup reconciler: makes `usage_minute`, `usage_hour` and `usage_day` equal to `traces FINAL` again wherever a
fault may have skewed them.

An insert writes the `traces` part and one part per rollup (the materialized views); these writes are not one
transaction. `traces` stays exact whatever happens (ReplacingMergeTree by request id, read with FINAL), but the
rollups are sums: a batch stored twice (nats-server lost the acks and delivers it again as new) counts twice, and a
batch whose `traces` part landed but whose rollup parts did not (the tracer killed mid-insert, or the insert
failing half way) is dropped as a duplicate, or filtered as already stored, when it comes back: never counted. The
reverse (rollup parts committed, `traces` part not) makes the retry count twice.

So the tracer keeps a set of *suspect* buckets, (organization, minute) pairs (`Suspects`, pure bookkeeping):
- the minutes of every batch holding redelivered messages (a redelivery of something stored, perhaps half-stored);
- the minutes of a batch whose insert failed;
- the minutes of every batch inserted during a suspect window: `window_s` after the process starts, after a
  failed insert, after a NATS reconnect;
- at start (`Reconciler.recover`), the minutes of the rows ingested last (the previous process may have died
  mid-insert) and those of a repair the previous process did not finish (the journal, below).
`delay_s` after a bucket was first marked, the tracer's own loop (so never concurrently with its own inserts)
runs `Reconciler.round`: per (organization, bucket) and per (api key, model, provider) it compares the counts and
sums of `traces FINAL` in that minute with `usage_minute`, then `usage_hour` with the sum of that hour's minutes and
`usage_day` with the sum of that day's hours. A bucket that differs is rebuilt: a lightweight DELETE of that
organization's rows in that bucket, then INSERT … SELECT from the finer source with `insert_deduplicate = 0` (so
the rebuild is never dropped as a copy of an earlier block). The DELETE is a mutation queued without waiting: it
applies to the parts that exist when it is queued, never to the rebuilt part inserted after it, so the pair ends
exact however long the mutation takes; the reconciler then waits (bounded) for it before it reads that rollup
again, and postpones a round while any rollup mutation is still pending (an earlier rebuild's, or a dead
process's), so it never compares half-applied deletes. Hours and days are rebuilt from the finer rollup:
exact sums (Decimal for `cost_usd`) from at most 60 or 24 rows per group instead of an hour or a day of raw traces,
and the latency state merged from the finer states, as the rollups merge block states anyway. A rebuild writes the
whole bucket from its source, so running it again (or a check finding nothing) changes nothing: idempotent.

Dying mid-correction (after a DELETE, before its INSERT) would leave a bucket short, so before its first DELETE a
check writes its minutes to the `rollup_repairs` journal as open, and closes them once every grain is done. The
next process marks the open ones again at start (`recover`); a check of them closes them.

A rebuilt bucket is checked once more `delay_s` later: another tracer replica inserting into the same minute during
the rebuild could have raced it. Buckets older than the traces' TTL are never compared (their raw rows may be gone).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from proto.trace import TraceEvent
from services.common.logs import get_logger
from services.tracer import schema
from services.tracer.metrics import TracerMetrics
from services.tracer.store import TraceStore

log = get_logger()

Bucket = tuple[str, int]  # (organization_id, start of the bucket in Unix seconds, UTC)
MINUTE_S, HOUR_S, DAY_S = 60, 3_600, 86_400
MAX_PENDING = 100_000  # suspect buckets remembered at most (a 7-day stream replay of a lost consumer is ~10k per org)
MAX_HOURS_PER_ROUND = 8  # a round checks the due buckets of at most this many distinct hours (one query pair each)
RECOVER_LIMIT = 10_000  # at most this many (organization, minute) marked by each startup scan
MUTATION_WAIT_S = 10.0  # a rebuild's DELETE not applied within this long fails the round (tried again later)
MUTATION_POLL_S = 0.05


def minutes_of(events: Iterable[TraceEvent]) -> set[Bucket]:
    """The (organization, minute) buckets these traces fall in."""
    return {(event.organization_id, event.timestamp_ms // 60_000 * MINUTE_S) for event in events}


class Suspects:
    """Suspect (organization, minute) buckets and when each is due for a check, plus the suspect window.

    A bucket is due `delay_s` after it was first marked; marking it again while it waits does not postpone it (a
    check is exact whenever it runs, since it runs between this tracer's inserts, and a later fault marks the
    bucket again after the check). Pure: the caller passes `now` (monotonic seconds).
    """

    def __init__(self, *, delay_s: float, window_s: float, limit: int = MAX_PENDING) -> None:
        if not (delay_s >= 0 and window_s >= 0 and limit > 0):
            raise ValueError("delay_s and window_s must be ≥ 0 and limit positive")
        self.delay_s = delay_s
        self.window_s = window_s
        self.limit = limit
        self.dropped = 0  # marks refused because `limit` buckets were already waiting
        self._due: dict[Bucket, float] = {}
        self._verifying: set[Bucket] = set()  # marked only to confirm a rebuild held
        self._next_due = math.inf
        self._window_until = -math.inf

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, bucket: object) -> bool:
        return bucket in self._due

    def waiting(self) -> set[Bucket]:
        """The buckets waiting for a check (a copy)."""
        return set(self._due)

    def open_window(self, now: float) -> None:
        """Every batch inserted from now until `now + window_s` marks its buckets."""
        self._window_until = max(self._window_until, now + self.window_s)

    def in_window(self, now: float) -> bool:
        return now < self._window_until

    def mark(self, buckets: Iterable[Bucket], now: float, *, verify: bool = False) -> None:
        """Check these buckets `delay_s` from now (or when already due, if they wait already). `verify`: only to
        confirm a rebuild, so a drift found then is repaired without scheduling yet another check."""
        due = now + self.delay_s
        waiting = self._due
        added = False
        for bucket in buckets:
            if bucket in waiting:
                if not verify:
                    self._verifying.discard(bucket)
                continue
            if len(waiting) >= self.limit:
                self.dropped += 1
                continue
            waiting[bucket] = due
            added = True
            if verify:
                self._verifying.add(bucket)
        if added and due < self._next_due:
            self._next_due = due

    def due(self, now: float) -> bool:
        """Whether a check is due: O(1), called on every turn of the consumer loop."""
        return now >= self._next_due

    def take_due(self, now: float, *, max_hours: int = MAX_HOURS_PER_ROUND,
                 everything: bool = False) -> list[tuple[Bucket, bool]]:
        """Remove and return the due buckets of at most `max_hours` distinct hours (all due buckets of an hour go
        together), each with whether it is only a verification. `everything`: waiting ones too, due or not."""
        if not everything and now < self._next_due:
            return []
        hours: set[int] = set()
        taken: list[Bucket] = []
        next_due = math.inf
        for bucket, due in self._due.items():
            hour = bucket[1] // HOUR_S
            if (everything or due <= now) and (hour in hours or len(hours) < max_hours):
                hours.add(hour)
                taken.append(bucket)
            elif due < next_due:
                next_due = due
        out = []
        for bucket in taken:
            del self._due[bucket]
            verifying = bucket in self._verifying
            self._verifying.discard(bucket)
            out.append((bucket, verifying))
        self._next_due = next_due
        return out


# ------------------------------------------------------------------------------------------ SQL (pure builders)

_KEYS = ", ".join(schema.ROLLUP_KEYS)
_SUM_NAMES = ", ".join(schema.ROLLUP_SUMS)
_SUMS = ", ".join(f"sum({column}) AS {column}" for column in schema.ROLLUP_SUMS)


@dataclass(frozen=True)
class Grain:
    """One rollup, and how its buckets are rebuilt from the finer source."""

    name: str  # "minute", "hour", "day"
    table: str
    column: str  # the rollup's time column
    width_s: int
    span_s: int  # the buckets to check are grouped into one query per span (bounds the rows read)
    rebuild: str  # SELECT … FROM source, ready for ` WHERE …` then `group`: the rollup's columns in table order
    group: str
    source_time: str  # the source's time column (in the primary key: bounds the scan)
    source_bucket: str  # the expression that maps a source row to this grain's bucket

    @property
    def columns(self) -> str:
        """The rollup's columns in table order (what `rebuild` selects), for an explicit INSERT column list."""
        return f"{self.column}, {_KEYS}, {_SUM_NAMES}, latency_ms"


def _reaggregate(time_expr: str, alias: str, table: str) -> tuple[str, str]:
    """Rows of a coarser rollup from a finer one: the sums summed, the latency states merged."""
    return (f"SELECT {time_expr} AS {alias}, {_KEYS}, {_SUMS}, "
            f"quantilesMergeState({schema.LATENCY_QUANTILES})(latency_ms) AS latency_ms FROM {table}",
            f"GROUP BY {alias}, {_KEYS}")


MINUTE = Grain("minute", "usage_minute", "minute", MINUTE_S, HOUR_S,
               f"{schema.USAGE_MINUTE_SELECT} FROM traces FINAL", schema.USAGE_MINUTE_GROUP,
               "ts", "toStartOfMinute(ts)")
HOUR = Grain("hour", "usage_hour", "hour", HOUR_S, DAY_S,
             *_reaggregate("toStartOfHour(minute)", "hour", "usage_minute"), "minute", "toStartOfHour(minute)")
DAY = Grain("day", "usage_day", "day", DAY_S, 32 * DAY_S,
            *_reaggregate("toStartOfDay(hour)", "day", "usage_hour"), "hour", "toStartOfDay(hour)")
GRAINS = (MINUTE, HOUR, DAY)  # in this order: each is rebuilt from the one before


def _where(time_column: str, bucket_expr: str) -> str:
    """Rows of the listed (organization, bucket) pairs; the organization and time range use the primary key."""
    # DateTime64 bounds: `ts` (DateTime64(3)) compared with a DateTime is rounded to the second, so a trace at
    # 12:00:59.8 would fall outside [12:00, 12:01) and a rebuild would drop it.
    return (f"organization_id IN {{orgs:Array(String)}} AND {time_column} >= toDateTime64({{lo:Int64}}, 3, 'UTC') "
            f"AND {time_column} < toDateTime64({{hi:Int64}}, 3, 'UTC') "
            f"AND (organization_id, toUnixTimestamp({bucket_expr})) IN {{pairs:Array(Tuple(String, Int64))}}")


def _params(grain: Grain, pairs: Sequence[Bucket]) -> dict[str, Any]:
    return {"orgs": sorted({org for org, _ in pairs}), "lo": min(start for _, start in pairs),
            "hi": max(start for _, start in pairs) + grain.width_s, "pairs": sorted(pairs)}


def rebuild_sql(grain: Grain, pairs: Sequence[Bucket]) -> tuple[str, dict[str, Any]]:
    """The rollup rows of these buckets, computed from the source (the body of the repair's INSERT)."""
    where = _where(grain.source_time, grain.source_bucket)
    return f"{grain.rebuild} WHERE {where} {grain.group}", _params(grain, pairs)


def source_sums_sql(grain: Grain, pairs: Sequence[Bucket]) -> tuple[str, dict[str, Any]]:
    """(bucket, keys…, sums…) per group as the source says they should be."""
    rebuild, params = rebuild_sql(grain, pairs)
    return f"SELECT toUnixTimestamp({grain.column}) AS bucket, {_KEYS}, {_SUM_NAMES} FROM ({rebuild})", params


def rollup_sums_sql(grain: Grain, pairs: Sequence[Bucket]) -> tuple[str, dict[str, Any]]:
    """(bucket, keys…, sums…) per group as the rollup holds them (its rows summed: parts not merged yet)."""
    return (f"SELECT toUnixTimestamp({grain.column}) AS bucket, {_KEYS}, {_SUMS} FROM {grain.table} "
            f"WHERE {_where(grain.column, grain.column)} GROUP BY bucket, {_KEYS}", _params(grain, pairs))


def delete_sql(grain: Grain, pairs: Sequence[Bucket]) -> tuple[str, dict[str, Any]]:
    return f"DELETE FROM {grain.table} WHERE {_where(grain.column, grain.column)}", _params(grain, pairs)


def insert_sql(grain: Grain, pairs: Sequence[Bucket]) -> tuple[str, dict[str, Any]]:
    rebuild, params = rebuild_sql(grain, pairs)
    return f"INSERT INTO {grain.table} ({grain.columns}) {rebuild}", params


# Rebuilds must never be dropped as a copy of an earlier block. The DELETE is queued without waiting (a synchronous
# one would hold the store's only thread for as long as mutations cannot run: merges stopped, a full or read-only
# disk); `Reconciler._applied` waits for it with a bound instead.
INSERT_SETTINGS = {"insert_deduplicate": 0}
DELETE_SETTINGS = {"lightweight_deletes_sync": 0, "mutations_sync": 0}
ROLLUP_TABLES = ("usage_minute", "usage_hour", "usage_day")
PENDING_MUTATIONS_SQL = ("SELECT count() FROM system.mutations WHERE database = currentDatabase() "
                         "AND table IN {tables:Array(String)} AND NOT is_done")

# The (organization, minute) buckets of the rows ingested within {window_ms} of the newest one, among the rows of
# the last hour (a bounded scan; older half-stored rows come back as redeliveries and are marked then): at start,
# what the previous process inserted last, perhaps only half.
RECENT_SQL = ("SELECT organization_id, toUnixTimestamp(toStartOfMinute(ts)) AS minute FROM traces "
              "WHERE ts >= now() - INTERVAL 1 HOUR AND ingested_at >= (SELECT max(ingested_at) FROM traces "
              "WHERE ts >= now() - INTERVAL 1 HOUR) - toIntervalMillisecond({window_ms:Int64}) "
              f"GROUP BY organization_id, minute LIMIT {RECOVER_LIMIT}")

# The journal (schema migration 12): the newest row of an (organization, minute) says whether a check that started
# rebuilding it finished.
UNFINISHED_SQL = ("SELECT organization_id, toUnixTimestamp(minute) FROM rollup_repairs FINAL WHERE done = 0 "
                  f"LIMIT {RECOVER_LIMIT}")


def journal_sql(pairs: Iterable[Bucket], *, done: bool, version: int) -> tuple[str, dict[str, Any]]:
    """Open (`done` False) or close the journal entries of these (organization, minute) buckets."""
    return ("INSERT INTO rollup_repairs (organization_id, minute, version, done) "
            "SELECT pair.1, toDateTime(pair.2, 'UTC'), {version:UInt64}, {done:UInt8} "
            "FROM (SELECT arrayJoin({pairs:Array(Tuple(String, Int64))}) AS pair)",
            {"pairs": sorted(pairs), "version": version, "done": int(done)})


# ------------------------------------------------------------------------------------------ comparison (pure)

Group = tuple[str, str, str]  # api_key_id, model, provider
Sums = tuple[Any, ...]


@dataclass(frozen=True)
class Drift:
    bucket: Bucket
    before: int  # requests the rollup counted
    after: int  # requests the source counts (what the rebuild writes)


def by_bucket(found: Iterable[Sequence[Any]]) -> dict[Bucket, dict[Group, Sums]]:
    """Rows of (bucket, organization, api key, model, provider, sums…) by (organization, bucket), then group."""
    out: dict[Bucket, dict[Group, Sums]] = {}
    for bucket, org, key, model, provider, *sums in found:
        out.setdefault((org, int(bucket)), {})[(key, model, provider)] = tuple(sums)
    return out


def drifts(pairs: Iterable[Bucket], source: dict[Bucket, dict[Group, Sums]],
           rollup: dict[Bucket, dict[Group, Sums]]) -> list[Drift]:
    """The buckets whose rollup groups differ from the source's (any group, any sum), sorted."""
    requests = schema.ROLLUP_SUMS.index("requests")
    out = []
    for pair in sorted(set(pairs)):
        want, have = source.get(pair, {}), rollup.get(pair, {})
        if want != have:
            out.append(Drift(pair, before=sum(int(s[requests]) for s in have.values()),
                             after=sum(int(s[requests]) for s in want.values())))
    return out


def spans(pairs: Iterable[Bucket], span_s: int) -> list[list[Bucket]]:
    """The buckets grouped by `span_s`-wide time spans, oldest first."""
    grouped: dict[int, list[Bucket]] = {}
    for pair in pairs:
        grouped.setdefault(pair[1] // span_s, []).append(pair)
    return [sorted(grouped[key]) for key in sorted(grouped)]


def coarser(pairs: Iterable[Bucket], width_s: int) -> set[Bucket]:
    return {(org, start - start % width_s) for org, start in pairs}


def _iso(start: int) -> str:
    return datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------ the runner


class Reconciler:
    """Runs checks and rebuilds on the store; the tracer calls `round` from its consumer loop."""

    def __init__(self, store: TraceStore, metrics: TracerMetrics, suspects: Suspects, *, ttl_days: int,
                 mutation_wait_s: float = MUTATION_WAIT_S) -> None:
        self.store = store
        self.metrics = metrics
        self.suspects = suspects
        self.ttl_s = ttl_days * DAY_S
        self.mutation_wait_s = mutation_wait_s
        self._version = 0
        self._reopened: set[Bucket] = set()  # journal entries an earlier process left open, marked again
        self._dropped_seen = 0

    def _next_version(self) -> int:
        """Journal row versions: nanoseconds of wall time, strictly increasing within this process."""
        self._version = max(self._version + 1, time.time_ns())
        return self._version

    async def recover(self, now: float) -> tuple[int, int]:
        """At start: mark the minutes of the rows ingested last before this process, and those of repairs an earlier
        process left unfinished; (recent, unfinished) buckets marked. Raises when ClickHouse does not answer."""
        _, recent = await self.store.select(RECENT_SQL, {"window_ms": int(max(self.suspects.window_s, 1.0) * 1000)})
        _, unfinished = await self.store.select(UNFINISHED_SQL, {})
        reopened = {(str(org), int(minute)) for org, minute in unfinished}
        self.suspects.mark([(str(org), int(minute)) for org, minute in recent], now)
        self.suspects.mark(sorted(reopened), now)
        self._reopened |= reopened
        self.metrics.reconcile_pending.set(len(self.suspects))
        return len(recent), len(reopened)

    async def round(self, now: float, *, wall_s: float, everything: bool = False) -> int:
        """Check the due buckets (all waiting ones with `everything`); how many were checked. A failure marks them
        again (checked `delay_s` later) and is logged, never raised."""
        if self.suspects.dropped > self._dropped_seen:  # never silently: these buckets will not be checked
            log.error("rollup_suspects_dropped", buckets=self.suspects.dropped - self._dropped_seen,
                      limit=self.suspects.limit)
            self._dropped_seen = self.suspects.dropped
        taken = self.suspects.take_due(now, everything=everything)
        if not taken:
            return 0
        buckets = [bucket for bucket, _ in taken]
        try:
            pending = await self._pending_mutations(ROLLUP_TABLES)
            if pending:  # a DELETE still being applied: the rollup is not what it will be, compare later
                self.suspects.mark(buckets, now)
                log.info("rollup_reconcile_postponed", pending_mutations=pending, buckets=len(buckets))
                return 0
            repaired = await self.check(buckets, wall_s=wall_s)
            closing = self._reopened.intersection(buckets)
            if closing:  # an earlier process's unfinished repair: checked (and rebuilt if needed) now
                await self.store.execute(*journal_sql(closing, done=True, version=self._next_version()),
                                         settings=INSERT_SETTINGS)
                self._reopened -= closing
        except Exception as exc:  # ClickHouse unavailable or refusing writes: try again later
            self.suspects.mark(buckets, now)
            self.metrics.reconcile_failures.inc()
            self.metrics.reconcile_pending.set(len(self.suspects))
            log.warning("rollup_reconcile_failed", error=type(exc).__name__, buckets=len(taken))
            return 0
        again = [bucket for bucket, verifying in taken if not verifying and (
            bucket in repaired[MINUTE.name] or coarser([bucket], HOUR_S) <= repaired[HOUR.name]
            or coarser([bucket], DAY_S) <= repaired[DAY.name])]
        self.suspects.mark(again, now, verify=True)
        self.metrics.reconcile_pending.set(len(self.suspects))
        return len(taken)

    async def check(self, minutes: Iterable[Bucket], *, wall_s: float) -> dict[str, set[Bucket]]:
        """Compare these (organization, minute) buckets, their hours and their days with their sources and rebuild
        those that differ; the rebuilt (organization, bucket) pairs per grain.

        Before the first DELETE the minutes are written to the journal as open; they are closed once every grain
        is done, so a process dying in between leaves them for the next one (`recover`)."""
        oldest = wall_s - self.ttl_s + HOUR_S  # older minutes may have lost raw traces to the TTL already
        pairs = {bucket for bucket in minutes if bucket[1] >= oldest}
        self.metrics.reconcile_checked.inc(len(pairs))
        repaired: dict[str, set[Bucket]] = {grain.name: set() for grain in GRAINS}
        journaled = False
        for grain in GRAINS:
            for span in spans(coarser(pairs, grain.width_s), grain.span_s):
                found = await self._compare(grain, span)
                if not found:
                    continue
                if not journaled:
                    await self.store.execute(*journal_sql(pairs, done=False, version=self._next_version()),
                                             settings=INSERT_SETTINGS)
                    journaled = True
                await self._rebuild(grain, found)
                repaired[grain.name].update(drift.bucket for drift in found)
        if journaled:
            await self.store.execute(*journal_sql(pairs, done=True, version=self._next_version()),
                                     settings=INSERT_SETTINGS)
        return repaired

    async def _compare(self, grain: Grain, pairs: list[Bucket]) -> list[Drift]:
        _, source = await self.store.select(*source_sums_sql(grain, pairs))
        _, rollup = await self.store.select(*rollup_sums_sql(grain, pairs))
        return drifts(pairs, by_bucket(source), by_bucket(rollup))

    async def _rebuild(self, grain: Grain, found: list[Drift]) -> None:
        """DELETE the buckets' rows (queued), INSERT them rebuilt (a new part the DELETE never touches), then wait
        until the DELETE is applied: the next grain reads this rollup."""
        bad = [drift.bucket for drift in found]
        sql, params = delete_sql(grain, bad)
        await self.store.execute(sql, params, settings=DELETE_SETTINGS)
        sql, params = insert_sql(grain, bad)
        await self.store.execute(sql, params, settings=INSERT_SETTINGS)
        await self._applied(grain.table)
        for drift in found:
            self.metrics.rollup_repairs.labels(grain.name).inc()
            log.warning("rollup_repaired", organization_id=drift.bucket[0], grain=grain.name,
                        bucket=_iso(drift.bucket[1]), requests_before=drift.before, requests_after=drift.after)

    async def _pending_mutations(self, tables: Sequence[str]) -> int:
        _, found = await self.store.select(PENDING_MUTATIONS_SQL, {"tables": list(tables)})
        return int(found[0][0]) if found else 0

    async def _applied(self, table: str) -> None:
        """Wait until no mutation of `table` is pending; TimeoutError after `mutation_wait_s`."""
        deadline = time.monotonic() + self.mutation_wait_s
        while await self._pending_mutations((table,)):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the DELETE on {table} was not applied within {self.mutation_wait_s} s")
            await asyncio.sleep(MUTATION_POLL_S)
