"""Rollup reconciler: makes `usage_minute`, `usage_hour` and `usage_day` equal to `traces FINAL` again wherever a
fault may have skewed them.

An insert writes the `traces` part and one part per rollup (the materialized views); these writes are not one
transaction. `traces` stays exact whatever happens (ReplacingMergeTree by request id, read with FINAL), but the
rollups are sums: a batch stored twice (nats-server lost the acks and delivers it again as new) counts twice, and a
batch whose `traces` part landed but whose rollup parts did not (the tracer killed mid-insert, or the insert
failing half way) is dropped as a duplicate, or filtered as already stored, when it comes back: never counted. The
reverse (rollup parts committed, `traces` part not) makes the retry count twice.

So the tracer keeps a set of *suspect* buckets, (organization, minute) pairs (`suspects.Suspects`):
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

The pure parts live apart and are tested without ClickHouse: the bookkeeping in suspects.py, the SQL in
rollup_sql.py, the comparison in drift.py; this module runs them against the store (queries, DELETE/INSERT, journal).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from services.common.logs import get_logger
from services.tracer.drift import Drift, by_bucket, coarser, drifts, spans
from services.tracer.metrics import TracerMetrics
from services.tracer.rollup_sql import (
    DAY,
    DELETE_SETTINGS,
    GRAINS,
    HOUR,
    INSERT_SETTINGS,
    MINUTE,
    PENDING_MUTATIONS_SQL,
    RECENT_SQL,
    ROLLUP_TABLES,
    UNFINISHED_SQL,
    Grain,
    delete_sql,
    insert_sql,
    journal_sql,
    rollup_sums_sql,
    source_sums_sql,
)
from services.tracer.store import TraceStore
from services.tracer.suspects import DAY_S, HOUR_S, Bucket, Suspects

log = get_logger()

MUTATION_WAIT_S = 10.0  # a rebuild's DELETE not applied within this long fails the round (tried again later)
MUTATION_POLL_S = 0.05


def _iso(start: int) -> str:
    return datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z")


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
