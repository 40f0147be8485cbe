"""Pure builders for usage queries over the rollups (`usage_minute`, `usage_hour`, `usage_day`: the one whose
grain is the bucket); never raw traces."""

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
    """Validate the query and return its [since, until) range widened to whole buckets (the reply says so):
    every bucket is complete, and each bucket width reads its own rollup."""
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
    width = BUCKETS_S[query.bucket] * 1000
    since, until = max(since, 0) // width * width, -(-until // width) * width
    if (until - since) // (BUCKETS_S[query.bucket] * 1000) > MAX_BUCKETS:
        raise QueryError(f"the range spans more than {MAX_BUCKETS} '{query.bucket}' buckets; "
                         "narrow it or use a coarser bucket")
    return since, until


# Each bucket width reads the rollup of that grain: a 30-day range by day is 30 rows per group.
ROLLUPS = {"minute": ("usage_minute", "minute"), "hour": ("usage_hour", "hour"), "day": ("usage_day", "day")}


def _source(query: UsageQuery, since: int, until: int) -> tuple[str, dict[str, Any]]:
    """The bucket's rollup rows in [since, until) (whole buckets) with the filters, as a relation whose time
    column is called `minute`."""
    table, column = ROLLUPS[query.bucket]
    where = [f"{column} >= toDateTime({{since_s:Int64}}, 'UTC')", f"{column} < toDateTime({{until_s:Int64}}, 'UTC')"]
    params: dict[str, Any] = {"since_s": since // 1000, "until_s": until // 1000}
    for name in ("organization_id", "api_key_id", "model", "provider"):
        value = getattr(query, name)
        if value is not None:
            where.append(f"{name} = {{{name}:String}}")
            params[name] = value
    return (f"(SELECT {column} AS minute, organization_id, api_key_id, model, provider, requests, errors, "
            f"prompt_tokens, completion_tokens, total_tokens, cost_usd, fallbacks, redactions, latency_ms "
            f"FROM {table} WHERE {' AND '.join(where)})"), params


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
