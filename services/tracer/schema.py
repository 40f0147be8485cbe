"""ClickHouse schema as ordered, idempotent migrations; the tables are a public interface."""

from __future__ import annotations

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree ORDER BY version
"""

# How many recent insert blocks each table remembers for insert deduplication.
DEDUP_WINDOW = 10_000

# One row per request into the per-minute rollup; shared by the materialized view and the backfill.
USAGE_MINUTE_SELECT = """SELECT
    toStartOfMinute(ts) AS minute, organization_id, api_key_id, model, provider,
    toUInt64(count()) AS requests,
    toUInt64(countIf(status_code >= 400)) AS errors,
    sum(toUInt64(prompt_tokens)) AS prompt_tokens,
    sum(toUInt64(completion_tokens)) AS completion_tokens,
    sum(toUInt64(total_tokens)) AS total_tokens,
    sum(cost_usd) AS cost_usd,
    toUInt64(countIf(fallback IS NOT NULL)) AS fallbacks,
    sum(toUInt64(redactions)) AS redactions,
    quantilesState(0.5, 0.95)(latency_ms) AS latency_ms"""
USAGE_MINUTE_GROUP = "GROUP BY minute, organization_id, api_key_id, model, provider"
# The same per hour and per day: what hour and day buckets read for the whole hours and days of a range.
USAGE_HOUR_SELECT = USAGE_MINUTE_SELECT.replace("toStartOfMinute(ts) AS minute", "toStartOfHour(ts) AS hour")
USAGE_HOUR_GROUP = "GROUP BY hour, organization_id, api_key_id, model, provider"
USAGE_DAY_SELECT = USAGE_MINUTE_SELECT.replace("toStartOfMinute(ts) AS minute", "toStartOfDay(ts) AS day")
USAGE_DAY_GROUP = "GROUP BY day, organization_id, api_key_id, model, provider"

# The rollups' columns after the time bucket, in table order: the grouping keys, the summed counters (exact), then
# `latency_ms`, a quantiles(LATENCY_QUANTILES) state. The reconciler (reconcile.py) builds its SQL from these.
ROLLUP_KEYS = ("organization_id", "api_key_id", "model", "provider")
ROLLUP_SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "fallbacks",
               "redactions")
LATENCY_QUANTILES = "0.5, 0.95"


def _rollup_table(name: str, time_column: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {name} (
    {time_column} DateTime('UTC'),
    organization_id LowCardinality(String),
    api_key_id LowCardinality(String),
    model LowCardinality(String),
    provider LowCardinality(String),
    requests SimpleAggregateFunction(sum, UInt64),
    errors SimpleAggregateFunction(sum, UInt64),
    prompt_tokens SimpleAggregateFunction(sum, UInt64),
    completion_tokens SimpleAggregateFunction(sum, UInt64),
    total_tokens SimpleAggregateFunction(sum, UInt64),
    cost_usd SimpleAggregateFunction(sum, Decimal(38, 12)),
    fallbacks SimpleAggregateFunction(sum, UInt64),
    redactions SimpleAggregateFunction(sum, UInt64),
    latency_ms AggregateFunction(quantiles(0.5, 0.95), Float64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM({time_column})
ORDER BY (organization_id, {time_column}, api_key_id, model, provider)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
"""


# (version, statement or statements). Append only; never edit an applied migration.
MIGRATIONS: tuple[tuple[int, str | tuple[str, ...]], ...] = (
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
    # Insert deduplication for a non-replicated table: a retried batch carrying the same
    # insert_deduplication_token is dropped, and (with deduplicate_blocks_in_dependent_materialized_views)
    # so is its contribution to the rollups.
    (2, f"ALTER TABLE traces MODIFY SETTING non_replicated_deduplication_window = {DEDUP_WINDOW}"),
    (3, f"""
CREATE TABLE IF NOT EXISTS usage_minute (
    minute DateTime('UTC'),
    organization_id LowCardinality(String),
    api_key_id LowCardinality(String),
    model LowCardinality(String),
    provider LowCardinality(String),
    requests SimpleAggregateFunction(sum, UInt64),
    errors SimpleAggregateFunction(sum, UInt64),
    prompt_tokens SimpleAggregateFunction(sum, UInt64),
    completion_tokens SimpleAggregateFunction(sum, UInt64),
    total_tokens SimpleAggregateFunction(sum, UInt64),
    cost_usd SimpleAggregateFunction(sum, Decimal(38, 12)),
    fallbacks SimpleAggregateFunction(sum, UInt64),
    redactions SimpleAggregateFunction(sum, UInt64),
    latency_ms AggregateFunction(quantiles(0.5, 0.95), Float64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (organization_id, minute, api_key_id, model, provider)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
"""),
    (4, f"CREATE MATERIALIZED VIEW IF NOT EXISTS usage_minute_mv TO usage_minute AS {USAGE_MINUTE_SELECT} FROM traces"
        f" {USAGE_MINUTE_GROUP}"),
    # Backfill what `traces` held before the rollup existed (runs before the consumer starts; the
    # truncate makes a retried migration exact).
    (5, ("TRUNCATE TABLE IF EXISTS usage_minute",
         f"INSERT INTO usage_minute {USAGE_MINUTE_SELECT} FROM traces FINAL {USAGE_MINUTE_GROUP}")),
    (6, _rollup_table("usage_hour", "hour")),
    (7, f"CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hour_mv TO usage_hour AS {USAGE_HOUR_SELECT} FROM traces"
        f" {USAGE_HOUR_GROUP}"),
    (8, ("TRUNCATE TABLE IF EXISTS usage_hour",
         f"INSERT INTO usage_hour {USAGE_HOUR_SELECT} FROM traces FINAL {USAGE_HOUR_GROUP}")),
    (9, _rollup_table("usage_day", "day")),
    (10, f"CREATE MATERIALIZED VIEW IF NOT EXISTS usage_day_mv TO usage_day AS {USAGE_DAY_SELECT} FROM traces"
         f" {USAGE_DAY_GROUP}"),
    (11, ("TRUNCATE TABLE IF EXISTS usage_day",
          f"INSERT INTO usage_day {USAGE_DAY_SELECT} FROM traces FINAL {USAGE_DAY_GROUP}")),
    # The rollup reconciler's journal (reconcile.py): the newest row of an (organization, minute) says whether a
    # rebuild of its rollup buckets, once started, finished; a process that died in between leaves `done = 0`.
    (12, """
CREATE TABLE IF NOT EXISTS rollup_repairs (
    organization_id String,
    minute DateTime('UTC'),
    version UInt64,
    done UInt8,
    written_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree(version)
ORDER BY (organization_id, minute)
TTL written_at + INTERVAL 30 DAY
"""),
    # Prompt-cache writes (Claude routes), apart from cache reads (`cached_tokens`): 5-minute and 1-hour TTL. Rows
    # written before read 0; the rollups need nothing, as both are parts of prompt_tokens, which they sum.
    (13, ("ALTER TABLE traces ADD COLUMN IF NOT EXISTS cache_write_tokens UInt32 DEFAULT 0",
          "ALTER TABLE traces ADD COLUMN IF NOT EXISTS cache_write_1h_tokens UInt32 DEFAULT 0")),
)


def ttl_statement(days: int) -> str:
    """The statement that sets the raw-trace retention; applied at every start (idempotent)."""
    return f"ALTER TABLE traces MODIFY TTL toDateTime(ts) + INTERVAL {int(days)} DAY"
