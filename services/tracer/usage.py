"""Pure builders for usage queries over the rollups (`usage_day`, `usage_hour`, `usage_minute`: whole days,
whole hours, then minutes); never raw traces."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from proto.trace import UsageQuery, UsageRow
from services.tracer.rows import QueryError, check_range, check_text

# Fixed SQL fragments chosen by enum value: user input only ever selects one of these.
GROUP_COLUMNS = {"model": "model", "key": "api_key_id", "provider": "provider"}
BUCKETS_S = {"minute": 60, "hour": 3600, "day": 86_400}
BUCKET_SQL = {"minute": "toStartOfMinute(minute)", "hour": "toStartOfHour(minute)",
              "day": "toStartOfDay(minute)"}
DEFAULT_RANGE_MS = 24 * 3600 * 1000
MAX_BUCKETS = 10_080  # a week of minutes, 27 years of days
MAX_ROWS = 50_000

METRICS = """sum(requests) AS requests, sum(errors) AS errors, sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(total_tokens) AS total_tokens,
    sum(cost_usd) AS cost_usd, sum(fallbacks) AS fallbacks, sum(redactions) AS redactions,
    quantilesMerge(0.5, 0.95)(latency_ms) AS latency"""


def resolve(query: UsageQuery, now_ms: int) -> tuple[int, int]:
    """Validate the query and return its [since, until) range, both floored to whole minutes."""
    if query.group_by not in GROUP_COLUMNS:
        raise QueryError(f"'group_by' must be one of {', '.join(GROUP_COLUMNS)}")
    if query.bucket not in BUCKETS_S:
        raise QueryError(f"'bucket' must be one of {', '.join(BUCKETS_S)}")
    for name in ("organization_id", "api_key_id", "model", "provider"):
        check_text(name, getattr(query, name))
    check_range(query.since_ms, query.until_ms)
    until = query.until_ms if query.until_ms is not None else now_ms
    since = query.since_ms if query.since_ms is not None else until - DEFAULT_RANGE_MS
    check_range(max(since, 0), until)
    since, until = max(since, 0) // 60_000 * 60_000, -(-until // 60_000) * 60_000
    if (until - since) // (BUCKETS_S[query.bucket] * 1000) > MAX_BUCKETS:
        raise QueryError(f"the range spans more than {MAX_BUCKETS} '{query.bucket}' buckets; "
                         "narrow it or use a coarser bucket")
    return since, until


# The rollups, coarsest first: (table, its time column, its grain in ms). A bucket reads only rollups whose
# grain fits in it; a range is split into whole days, whole hours and the minutes left at its ends.
ROLLUPS = (("usage_day", "day", 86_400_000), ("usage_hour", "hour", 3_600_000), ("usage_minute", "minute", 60_000))
_COLUMNS = ("organization_id, api_key_id, model, provider, requests, errors, prompt_tokens, completion_tokens, "
            "total_tokens, cost_usd, fallbacks, redactions, latency_ms")


def _filters(query: UsageQuery) -> tuple[list[str], dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {}
    for column in ("organization_id", "api_key_id", "model", "provider"):
        value = getattr(query, column)
        if value is not None:
            where.append(f"{column} = {{{column}:String}}")
            params[column] = value
    return where, params


def segments(bucket: str, since: int, until: int) -> list[tuple[str, str, int, int]]:
    """[since, until) as (table, time column, from, to) pieces, each piece from the coarsest rollup whose
    grain divides it and fits in the bucket (`since`/`until` are whole minutes)."""
    levels = [level for level in ROLLUPS if level[2] <= BUCKETS_S[bucket] * 1000]

    def split(start: int, end: int, depth: int) -> list[tuple[str, str, int, int]]:
        if start >= end:
            return []
        table, column, grain = levels[depth]
        if depth == len(levels) - 1:
            return [(table, column, start, end)]
        inner_start, inner_end = -(-start // grain) * grain, end // grain * grain
        if inner_start >= inner_end:
            return split(start, end, depth + 1)
        return [*split(start, inner_start, depth + 1), (table, column, inner_start, inner_end),
                *split(inner_end, end, depth + 1)]

    return split(since, until, 0)


def _source(query: UsageQuery, since: int, until: int) -> tuple[str, dict[str, Any]]:
    """The rollup rows of [since, until) as one relation with a `minute` column (the same sums and quantile
    states in every rollup, so UNION ALL then merge is exact)."""
    filters, params = _filters(query)
    parts = []
    for index, (table, column, start, end) in enumerate(segments(query.bucket, since, until)):
        params[f"from_{index}"], params[f"to_{index}"] = start // 1000, end // 1000
        where = " AND ".join([f"{column} >= toDateTime({{from_{index}:Int64}}, 'UTC')",
                              f"{column} < toDateTime({{to_{index}:Int64}}, 'UTC')", *filters])
        parts.append(f"SELECT {column} AS minute, {_COLUMNS} FROM {table} WHERE {where}")
    if not parts:  # an empty range
        parts.append(f"SELECT minute, {_COLUMNS} FROM usage_minute WHERE 0")
    return "(" + " UNION ALL ".join(parts) + ")", params


def usage_query(query: UsageQuery, since: int, until: int) -> tuple[str, dict[str, Any]]:
    """Rows per bucket × group, oldest bucket first. Call `resolve` first."""
    source, params = _source(query, since, until)
    sql = (f"SELECT toUnixTimestamp({BUCKET_SQL[query.bucket]}) AS bucket, "
           f"toString({GROUP_COLUMNS[query.group_by]}) AS grp, {METRICS} "
           f"FROM {source} GROUP BY bucket, grp ORDER BY bucket, grp LIMIT {MAX_ROWS}")
    return sql, params


def totals_query(query: UsageQuery, since: int, until: int) -> tuple[str, dict[str, Any]]:
    """One row over the whole range and filters (quantiles merged, not averaged)."""
    source, params = _source(query, since, until)
    return f"SELECT {METRICS} FROM {source}", params


def to_usage_row(bucket_ms: int, group: str, values: Sequence[Any]) -> UsageRow:
    """Map the METRICS columns (in order) to a UsageRow."""
    requests, errors, prompt, completion, total, cost, fallbacks, redactions, latency = values
    p50, p95 = (latency or [0.0, 0.0]) if requests else (0.0, 0.0)
    return UsageRow(bucket_ms=bucket_ms, group=group, requests=int(requests), errors=int(errors),
                    prompt_tokens=int(prompt), completion_tokens=int(completion), total_tokens=int(total),
                    cost_usd=Decimal(cost or 0), error_rate=errors / requests if requests else 0.0,
                    p50_latency_ms=_finite(p50), p95_latency_ms=_finite(p95),
                    fallbacks=int(fallbacks), redactions=int(redactions))


def _finite(value: float) -> float:
    return float(value) if value == value and value not in (float("inf"), float("-inf")) else 0.0


def bucket_ms(value: int | datetime) -> int:
    if isinstance(value, datetime):
        return round((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp() * 1000)
    return int(value) * 1000
