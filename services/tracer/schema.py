"""ClickHouse schema as ordered, idempotent migrations; the tables are a public interface."""

from __future__ import annotations

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree ORDER BY version
"""

# (version, statement). Append only; never edit an applied migration.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
CREATE TABLE IF NOT EXISTS traces (
    request_id String,
    ts DateTime64(3, 'UTC'),
    organization_id LowCardinality(String),
    api_key_id LowCardinality(String),
    endpoint LowCardinality(String),
    requested_model LowCardinality(String),
    model LowCardinality(String),
    provider LowCardinality(String),
    upstream_model LowCardinality(String),
    route_reason LowCardinality(String),
    route LowCardinality(String),
    fallback Nullable(String),
    attempts Array(Tuple(provider String, upstream_model String, status_code UInt16,
                         latency_ms Float64, error_type Nullable(String))),
    status_code UInt16,
    stream Bool,
    latency_ms Float64,
    upstream_latency_ms Float64,
    ttft_ms Nullable(Float64),
    prompt_tokens UInt32,
    completion_tokens UInt32,
    total_tokens UInt32,
    cached_tokens UInt32,
    reasoning_tokens UInt32,
    cost_usd Decimal(38, 12),
    error_type LowCardinality(Nullable(String)),
    error_code LowCardinality(Nullable(String)),
    redactions UInt32,
    usage_estimated Bool,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (organization_id, ts, request_id)
"""),
)


def ttl_statement(days: int) -> str:
    """The statement that sets the raw-trace retention; applied at every start (idempotent)."""
    return f"ALTER TABLE traces MODIFY TTL toDateTime(ts) + INTERVAL {int(days)} DAY"
