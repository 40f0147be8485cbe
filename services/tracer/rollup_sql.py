"""The rollup reconciler's SQL (reconcile.py), built from the schema: per grain, the source and rollup sums of a set
of buckets, their rebuild (DELETE, INSERT … SELECT), the startup scans and the repair journal. Pure builders."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from services.tracer import schema
from services.tracer.suspects import DAY_S, HOUR_S, MINUTE_S, Bucket

RECOVER_LIMIT = 10_000  # at most this many (organization, minute) marked by each startup scan

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
