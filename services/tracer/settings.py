"""Tracer settings, read from the environment in this one place."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from services.common.settings import Secret, SettingsError, env_float, env_int, env_secret, env_str
from services.common.usage import REQUIRED, Variable

VARIABLES = (
    Variable("NATS_URL", "nats://127.0.0.1:4222", "the NATS server (JetStream)"),
    Variable("NATS_STREAM_REPLICAS", "1", "replicas of the streams this service creates"),
    Variable("CLICKHOUSE_URL", "chdb:///./.data/clickhouse", "http(s)://user:password@host:port/database, or "
             "chdb://<dir> for the embedded engine"),
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
    )


def _non_negative(environ: Mapping[str, str], name: str, default: float) -> float:
    value = env_float(environ, name, default)
    if not value >= 0:  # NaN included
        raise SettingsError(f"environment variable {name} must be a number of seconds ≥ 0, got {value!r}")
    return value
