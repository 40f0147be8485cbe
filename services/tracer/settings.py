"""Tracer settings, read from the environment in this one place."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from services.common.settings import Secret, SettingsError, env_float, env_int, env_secret, env_str
from services.common.usage import REQUIRED, Variable
from services.tracer.limits import Limits

VARIABLES = (
    Variable("NATS_URL", "nats://127.0.0.1:4222", "the NATS server (JetStream)"),
    Variable("NATS_STREAM_REPLICAS", "1", "replicas of the streams this service creates"),
    Variable("CLICKHOUSE_URL", "chdb:///./.data/clickhouse", "http(s)://user:password@host:port/database, or "
             "chdb://<dir> for the embedded engine"),
    Variable("CLICKHOUSE_ANALYTICS_URL", "", "the read-only identity of /v1/sql (a server user whose "
             "profile holds readonly, limits and quotas); unset: CLICKHOUSE_URL on sessions the tracer makes "
             "read-only with the TRACER_SQL_* limits"),
    Variable("TRACER_HOST", "127.0.0.1", "address of the /healthz, /readyz and query API"),
    Variable("TRACER_PORT", "8083", "its port"),
    Variable("ROUTEUR_ADMIN_TOKEN", REQUIRED, "bearer token of the admin queries"),
    Variable("TRACER_BATCH_SIZE", "10000", "insert when this many traces wait…"),
    Variable("TRACER_FLUSH_INTERVAL_S", "1.0", "…or when the oldest has waited this long"),
    Variable("TRACE_TTL_DAYS", "90", "days a trace is kept"),
    Variable("TRACER_RECONCILE_DELAY_S", "60.0", "a possibly skewed rollup minute is compared with the traces "
             "this long after it was marked"),
    Variable("TRACER_RECONCILE_SUSPECT_S", "120.0", "after a start, failed insert or reconnect, inserted minutes "
             "are suspect this long"),
    Variable("TRACER_ANALYTICS_WORKERS", "2", "read-only sessions (threads) for /v1/sql, and as many again for the "
             "NATS lookups"),
    Variable("TRACER_ANALYTICS_QUEUE_S", "2.0", "a query waits this long for a free session, then 503 analytics_busy"),
    Variable("TRACER_SQL_MAX_EXECUTION_S", "30.0", "an analytics query ends with query_limit_exceeded after this "
             "long (max_execution_time)"),
    Variable("TRACER_SQL_MAX_ROWS_TO_READ", "1000000000", "…or once it would read this many rows (max_rows_to_read)"),
    Variable("TRACER_SQL_MAX_BYTES_TO_READ", "21474836480", "…or bytes (max_bytes_to_read)"),
    Variable("TRACER_SQL_MAX_RESULT_ROWS", "100000", "…or answer this many rows (max_result_rows)"),
    Variable("TRACER_SQL_MAX_RESULT_BYTES", "67108864", "…or bytes (max_result_bytes)"),
    Variable("TRACER_SQL_MAX_MEMORY_BYTES", "2147483648", "…or use this much memory (max_memory_usage)"),
    Variable("TRACER_INGEST_EXIT_S", "300.0", "inserts failing this long even after fresh ClickHouse clients: exit 1 "
             "to be restarted (0 = never)"),
    Variable("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
)



class Settings(msgspec.Struct, frozen=True):
    nats_url: str
    stream_replicas: int
    clickhouse_url: str
    host: str
    port: int
    admin_token: Secret
    batch_size: int
    flush_interval_s: float
    ttl_days: int
    log_level: str
    # Rollup reconciler (services/tracer/reconcile.py): a suspect bucket is compared with `traces FINAL` this
    # long after it was first marked; after start, a failed insert or a NATS reconnect, every inserted batch's
    # buckets are suspect for `reconcile_suspect_s`.
    reconcile_delay_s: float = 60.0
    reconcile_suspect_s: float = 120.0
    # Analytics (limits.py, store.AnalyticsPool): "" = the ingest URL, on sessions made read-only with `limits`.
    clickhouse_analytics_url: str = ""
    analytics_workers: int = 2
    analytics_queue_s: float = 2.0
    limits: Limits = Limits()
    # Inserts failing this long although the ingest client was opened afresh: exit to be restarted (0 = never).
    ingest_exit_s: float = 300.0


def load(environ: Mapping[str, str]) -> Settings:
    return Settings(
        nats_url=env_str(environ, "NATS_URL", "nats://127.0.0.1:4222"),
        stream_replicas=env_int(environ, "NATS_STREAM_REPLICAS", 1),
        clickhouse_url=env_str(environ, "CLICKHOUSE_URL", "chdb:///./.data/clickhouse"),
        host=env_str(environ, "TRACER_HOST", "127.0.0.1"),
        port=env_int(environ, "TRACER_PORT", 8083),
        admin_token=env_secret(environ, "ROUTEUR_ADMIN_TOKEN"),
        # Insert when this many traces wait or the oldest has waited this long: ClickHouse pays per insert.
        batch_size=env_int(environ, "TRACER_BATCH_SIZE", 10_000),
        flush_interval_s=env_float(environ, "TRACER_FLUSH_INTERVAL_S", 1.0),
        ttl_days=env_int(environ, "TRACE_TTL_DAYS", 90),
        log_level=env_str(environ, "LOG_LEVEL", "INFO"),
        reconcile_delay_s=_non_negative(environ, "TRACER_RECONCILE_DELAY_S", 60.0),
        reconcile_suspect_s=_non_negative(environ, "TRACER_RECONCILE_SUSPECT_S", 120.0),
        clickhouse_analytics_url=env_str(environ, "CLICKHOUSE_ANALYTICS_URL", ""),
        analytics_workers=_at_least_1(environ, "TRACER_ANALYTICS_WORKERS", 2),
        analytics_queue_s=_non_negative(environ, "TRACER_ANALYTICS_QUEUE_S", 2.0),
        limits=Limits(
            max_execution_s=_non_negative(environ, "TRACER_SQL_MAX_EXECUTION_S", 30.0),
            max_rows_to_read=_at_least_0(environ, "TRACER_SQL_MAX_ROWS_TO_READ", 1_000_000_000),
            max_bytes_to_read=_at_least_0(environ, "TRACER_SQL_MAX_BYTES_TO_READ", 20 * 1024**3),
            max_result_rows=_at_least_0(environ, "TRACER_SQL_MAX_RESULT_ROWS", 100_000),
            max_result_bytes=_at_least_0(environ, "TRACER_SQL_MAX_RESULT_BYTES", 64 * 1024**2),
            max_memory_bytes=_at_least_0(environ, "TRACER_SQL_MAX_MEMORY_BYTES", 2 * 1024**3),
        ),
        ingest_exit_s=_non_negative(environ, "TRACER_INGEST_EXIT_S", 300.0),
    )


def _at_least_0(environ: Mapping[str, str], name: str, default: int) -> int:
    value = env_int(environ, name, default)
    if value < 0:
        raise SettingsError(f"environment variable {name} must be an integer ≥ 0 (0 = no limit), got {value}")
    return value


def _at_least_1(environ: Mapping[str, str], name: str, default: int) -> int:
    value = env_int(environ, name, default)
    if value < 1:
        raise SettingsError(f"environment variable {name} must be an integer ≥ 1, got {value}")
    return value


def _non_negative(environ: Mapping[str, str], name: str, default: float) -> float:
    value = env_float(environ, name, default)
    if not value >= 0:  # NaN included
        raise SettingsError(f"environment variable {name} must be a number of seconds ≥ 0, got {value!r}")
    return value
