"""Pure mapping between TraceEvent messages and `traces` rows, and the logs query builder."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from proto.trace import Attempt, LogsQuery, TraceEvent

COLUMNS: tuple[str, ...] = (
    "request_id", "ts", "organization_id", "api_key_id", "endpoint", "requested_model", "model",
    "provider", "upstream_model", "route_reason", "route", "fallback", "attempts", "status_code",
    "stream", "latency_ms", "upstream_latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens",
    "total_tokens", "cached_tokens", "reasoning_tokens", "cost_usd", "error_type", "error_code",
    "redactions", "usage_estimated",
)
SELECT_LIST = ", ".join(COLUMNS)
MAX_PAGE = 500


def to_row(event: TraceEvent) -> list[Any]:
    """One insertable row in COLUMNS order. `payload_url` is never stored."""
    return [
        event.request_id,
        datetime.fromtimestamp(event.timestamp_ms / 1000, UTC),
        event.organization_id,
        event.api_key_id,
        event.endpoint,
        event.requested_model,
        event.model,
        event.provider,
        event.upstream_model,
        event.route_reason,
        event.route or "",
        event.fallback,
        [(a.provider, a.upstream_model, a.status_code, a.latency_ms, a.error_type) for a in event.attempts],
        event.status_code,
        event.stream,
        event.latency_ms,
        event.upstream_latency_ms,
        event.ttft_ms,
        event.prompt_tokens,
        event.completion_tokens,
        event.total_tokens,
        event.cached_tokens,
        event.reasoning_tokens,
        event.cost_usd,
        event.error_type,
        event.error_code,
        event.redactions,
        event.usage_estimated,
    ]


def unique_rows(events: Iterable[TraceEvent]) -> list[list[Any]]:
    """Rows for a batch with repeated request ids dropped (the table dedups across batches)."""
    seen: set[str] = set()
    rows = []
    for event in events:
        if event.request_id not in seen:
            seen.add(event.request_id)
            rows.append(to_row(event))
    return rows


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


def logs_query(query: LogsQuery) -> tuple[str, dict[str, Any]]:
    """Parameterized SQL for a page of traces, newest first. User values only ever go in parameters."""
    where = ["1 = 1"]
    params: dict[str, Any] = {"limit": max(1, min(query.limit, MAX_PAGE))}
    filters = (
        ("organization_id", "String", query.organization_id),
        ("api_key_id", "String", query.api_key_id),
        ("model", "String", query.model),
        ("provider", "String", query.provider),
        ("status_code", "UInt16", query.status_code),
    )
    for column, kind, value in filters:
        if value is not None:
            where.append(f"{column} = {{{column}:{kind}}}")
            params[column] = value
    if query.cursor:
        cursor_ms, _, cursor_id = query.cursor.partition(":")
        where.append("(ts, request_id) < (fromUnixTimestamp64Milli({cursor_ms:Int64}, 'UTC'), {cursor_id:String})")
        params["cursor_ms"] = int(cursor_ms)
        params["cursor_id"] = cursor_id
    sql = (f"SELECT {SELECT_LIST} FROM traces FINAL WHERE {' AND '.join(where)} "
           "ORDER BY ts DESC, request_id DESC LIMIT {limit:UInt32}")
    return sql, params


def cursor_of(event: TraceEvent) -> str:
    """The cursor that continues a page after `event`."""
    return f"{event.timestamp_ms}:{event.request_id}"
