"""The trace record: one per request, published by the proxy, stored by the tracer."""

from __future__ import annotations

from decimal import Decimal

import msgspec


class Attempt(msgspec.Struct, frozen=True):
    """One upstream attempt made while serving a request."""

    provider: str
    upstream_model: str
    status_code: int
    latency_ms: float
    error_type: str | None = None


class TraceEvent(msgspec.Struct, frozen=True):
    """Everything Routeur records about one request (metadata only, never bodies).

    New fields must get defaults so that yesterday's messages still decode.
    """

    request_id: str
    timestamp_ms: int
    organization_id: str
    api_key_id: str
    endpoint: str
    requested_model: str
    model: str
    provider: str
    upstream_model: str
    route_reason: str
    status_code: int
    stream: bool
    latency_ms: float
    upstream_latency_ms: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    ttft_ms: float | None = None
    error_type: str | None = None
    error_code: str | None = None
    route: str | None = None
    fallback: str | None = None
    attempts: tuple[Attempt, ...] = ()
    redactions: int = 0
    usage_estimated: bool = False
    payload_url: str | None = None
    # Prompt-cache writes (Claude routes): 5-minute TTL and 1-hour TTL. With cached_tokens (cache reads) they are
    # disjoint parts of prompt_tokens, each priced by its own catalog price.
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0


class TraceQuery(msgspec.Struct, frozen=True):
    """Ask the tracer for one trace; `organization_id` None means any organization (admin)."""

    request_id: str
    organization_id: str | None = None


class LogsQuery(msgspec.Struct, frozen=True):
    """A page of traces, newest first; `cursor` is the last request_id of the previous page."""

    organization_id: str | None = None
    api_key_id: str | None = None
    model: str | None = None
    provider: str | None = None
    status_code: int | None = None
    limit: int = 50
    cursor: str | None = None
    route_reason: str | None = None
    has_fallback: bool | None = None
    since_ms: int | None = None  # inclusive, Unix milliseconds
    until_ms: int | None = None  # exclusive


# Reply `code` values: why a tracer query failed. The proxy maps them to HTTP statuses and never reads `error`
# (a human message) to decide anything. A reply from a tracer older than `code` decodes with the default.
REPLY_BAD_QUERY = "bad_query"  # the caller's query cannot be answered as asked (400, `error` says why)
REPLY_FAILED = "failed"  # the store failed (500)


class TraceReply(msgspec.Struct, frozen=True):
    trace: TraceEvent | None = None
    error: str | None = None
    code: str = REPLY_FAILED  # meaningful only when `error` is set


class LogsReply(msgspec.Struct, frozen=True):
    traces: tuple[TraceEvent, ...] = ()
    next_cursor: str | None = None
    error: str | None = None
    code: str = REPLY_FAILED  # meaningful only when `error` is set


class UsageQuery(msgspec.Struct, frozen=True):
    """Usage over time from the per-minute rollup; `organization_id` None means every organization (admin).

    `group_by` is "model" | "key" | "provider"; `bucket` is "minute" | "hour" | "day"; the range is
    [since_ms, until_ms) in Unix milliseconds, minute-granular (defaults: the last 24 hours).
    """

    organization_id: str | None = None
    group_by: str = "model"
    bucket: str = "hour"
    since_ms: int | None = None
    until_ms: int | None = None
    api_key_id: str | None = None
    model: str | None = None
    provider: str | None = None


class UsageRow(msgspec.Struct, frozen=True):
    """One bucket × group; in `UsageReply.totals` the bucket is the range start and the group is ""."""

    bucket_ms: int
    group: str
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    error_rate: float = 0.0
    p50_latency_ms: float = 0.0
    p95_latency_ms: float = 0.0
    fallbacks: int = 0
    redactions: int = 0


class UsageReply(msgspec.Struct, frozen=True):
    rows: tuple[UsageRow, ...] = ()
    totals: UsageRow | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    error: str | None = None
    code: str = REPLY_FAILED  # meaningful only when `error` is set
