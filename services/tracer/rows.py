"""Pure mapping between TraceEvent messages and `traces` rows, and the logs query builder."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

from proto.trace import Attempt, LogsQuery, TraceEvent

COLUMNS: tuple[str, ...] = (
    "request_id", "ts", "organization_id", "api_key_id", "endpoint", "requested_model", "model",
    "provider", "upstream_model", "route_reason", "route", "fallback", "attempts", "status_code",
    "stream", "latency_ms", "upstream_latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens",
    "total_tokens", "cached_tokens", "reasoning_tokens", "cost_usd", "error_type", "error_code",
    "redactions", "usage_estimated", "cache_write_tokens", "cache_write_1h_tokens",
)
SELECT_LIST = ", ".join(COLUMNS)
MAX_PAGE = 500


# The TraceEvent attribute behind each column; `ts` is written as its DateTime64(3) ticks (Unix milliseconds).
_GETTERS = tuple(attrgetter("timestamp_ms" if column == "ts" else column) for column in COLUMNS)
_ROUTE = COLUMNS.index("route")
_ATTEMPTS = COLUMNS.index("attempts")
_ATTEMPT = attrgetter("provider", "upstream_model", "status_code", "latency_ms", "error_type")  # the Tuple's order


def unique(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    """A batch's events with repeated request ids dropped, the first kept (the table dedups across batches)."""
    seen: set[str] = set()
    out = []
    for event in events:
        if event.request_id not in seen:
            seen.add(event.request_id)
            out.append(event)
    return out


def to_columns(events: Sequence[TraceEvent]) -> list[list[Any]]:
    """Column-oriented insert data, one list per column in COLUMNS order: `ts` as Unix milliseconds, `route`
    None as "", attempts as tuples. `payload_url` is never stored."""
    columns = [list(map(getter, events)) for getter in _GETTERS]
    columns[_ROUTE] = [route or "" for route in columns[_ROUTE]]
    columns[_ATTEMPTS] = [list(map(_ATTEMPT, attempts)) for attempts in columns[_ATTEMPTS]]
    return columns


def from_row(row: Sequence[Any]) -> TraceEvent:
    """Rebuild a TraceEvent from a row selected with SELECT_LIST."""
    values = dict(zip(COLUMNS, row, strict=True))
    ts: datetime = values.pop("ts")
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    attempts = tuple(Attempt(**a) if isinstance(a, dict) else Attempt(*a) for a in values.pop("attempts"))
    route = values.pop("route") or None
    cost = Decimal(values.pop("cost_usd")).normalize()
    return TraceEvent(timestamp_ms=round(ts.timestamp() * 1000), attempts=attempts, route=route,
                      cost_usd=cost, **values)


class QueryError(ValueError):
    """A query the tracer refuses; the message is safe to show to the caller."""


MAX_FILTER_LENGTH = 256
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def check_text(name: str, value: str | None) -> None:
    if value is not None and (len(value) > MAX_FILTER_LENGTH or "\x00" in value):
        raise QueryError(f"'{name}' must be at most {MAX_FILTER_LENGTH} characters without NUL")


def check_range(since_ms: int | None, until_ms: int | None) -> None:
    for name, value in (("since_ms", since_ms), ("until_ms", until_ms)):
        if value is not None and not 0 <= value <= MAX_TIME_MS:
            raise QueryError(f"'{name}' must be Unix milliseconds between 0 and {MAX_TIME_MS}")
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise QueryError("'since_ms' must be before 'until_ms'")


def logs_query(query: LogsQuery) -> tuple[str, dict[str, Any]]:
    """Parameterized SQL for a page of traces, newest first. User values only ever go in parameters.

    Raises QueryError for out-of-range or malformed filters.
    """
    where = ["1 = 1"]
    params: dict[str, Any] = {"limit": max(1, min(query.limit, MAX_PAGE))}
    filters = (
        ("organization_id", "String", query.organization_id),
        ("api_key_id", "String", query.api_key_id),
        ("model", "String", query.model),
        ("provider", "String", query.provider),
        ("route_reason", "String", query.route_reason),
        ("status_code", "UInt16", query.status_code),
    )
    for column, kind, value in filters:
        if value is None:
            continue
        if isinstance(value, str):
            check_text(column, value)
        elif not 0 <= value <= 65_535:
            raise QueryError(f"'{column}' must be between 0 and 65535")
        where.append(f"{column} = {{{column}:{kind}}}")
        params[column] = value
    if query.has_fallback is not None:
        where.append("fallback IS NOT NULL" if query.has_fallback else "fallback IS NULL")
    check_range(query.since_ms, query.until_ms)
    if query.since_ms is not None:
        where.append("ts >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')")
        params["since_ms"] = query.since_ms
    if query.until_ms is not None:
        where.append("ts < fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')")
        params["until_ms"] = query.until_ms
    if query.cursor:
        cursor_ms, _, cursor_id = query.cursor.partition(":")
        if not cursor_ms.isdigit() or len(cursor_ms) > 15 or not cursor_id:
            raise QueryError("'cursor' must be a next_cursor value from a previous page")
        check_text("cursor", cursor_id)
        where.append("(ts, request_id) < (fromUnixTimestamp64Milli({cursor_ms:Int64}, 'UTC'), {cursor_id:String})")
        params["cursor_ms"] = int(cursor_ms)
        params["cursor_id"] = cursor_id
    sql = (f"SELECT {SELECT_LIST} FROM traces FINAL WHERE {' AND '.join(where)} "
           "ORDER BY ts DESC, request_id DESC LIMIT {limit:UInt32}")
    return sql, params


def dedup_token(request_ids: Iterable[str]) -> str:
    """The insert_deduplication_token of a batch: a hash of its request ids, in order."""
    digest = hashlib.sha256()
    for request_id in request_ids:
        digest.update(request_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def cursor_of(event: TraceEvent) -> str:
    """The cursor that continues a page after `event`."""
    return f"{event.timestamp_ms}:{event.request_id}"
