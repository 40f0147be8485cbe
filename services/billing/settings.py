"""Billing settings (service and CLI), read from the environment in this one place."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

import msgspec

from services.common.settings import Secret, SettingsError, env_float, env_int, env_secret, env_str
from services.common.usage import REQUIRED, Variable

_MIN_KEY_SECRET_CHARS = 32
_DERIVATION_LABEL = b"routeur billing key secret v1"

VARIABLES = (
    Variable("NATS_URL", "nats://127.0.0.1:4222", "the NATS server (JetStream)"),
    Variable("NATS_STREAM_REPLICAS", "1", "replicas of the ledger stream"),
    Variable("BILLING_HOST", "127.0.0.1", "address of the admin API and /healthz, /readyz"),
    Variable("BILLING_PORT", "8082", "its port"),
    Variable("ROUTEUR_ADMIN_TOKEN", REQUIRED, "bearer token of the admin API"),
    Variable("BILLING_KEY_SECRET", "", "≥ 32 characters: HMAC key API-key secrets are stored under (unset: "
             "derived from ROUTEUR_ADMIN_TOKEN, so rotating that token invalidates every key)"),
    Variable("BILLING_RESERVATION_TTL_S", "900.0", "an admitted request's reservation expires after this"),
    Variable("BILLING_LEASE_S", "1.0", "spend leases granted to proxies (0 = none)"),
    Variable("BILLING_SETTLED_RETENTION_S", "86400.0", "settled request ids remembered (≥ 600)"),
    Variable("BILLING_PUBLISH_TIMEOUT_S", "2.0", "wait for a ledger event's JetStream ack"),
    Variable("BILLING_DATA_DIR", "", "directory for ledger snapshots (unset: replay the whole stream)"),
    Variable("BILLING_SNAPSHOT_EVERY", "10000", "write a snapshot every this many events"),
    Variable("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
)



class Settings(msgspec.Struct, frozen=True):
    nats_url: str
    stream_replicas: int
    host: str
    port: int
    admin_token: Secret
    key_secret: Secret
    key_secret_derived: bool
    reservation_ttl_s: float
    lease_s: float
    settled_retention_s: float
    publish_timeout_s: float
    data_dir: Path | None
    snapshot_every: int
    log_level: str


def load(environ: Mapping[str, str]) -> Settings:
    """The billing service's settings.

    BILLING_KEY_SECRET (≥ 32 characters) is the HMAC key under which API-key secrets are stored.
    When it is unset, it is derived from ROUTEUR_ADMIN_TOKEN as HMAC-SHA256(token, label): convenient
    for `make run`, but rotating the admin token then invalidates every API key, so set it in production.
    """
    admin_token = env_secret(environ, "ROUTEUR_ADMIN_TOKEN")
    raw_secret = env_str(environ, "BILLING_KEY_SECRET", "")
    if raw_secret and len(raw_secret) < _MIN_KEY_SECRET_CHARS:
        raise SettingsError(f"environment variable BILLING_KEY_SECRET must be at least {_MIN_KEY_SECRET_CHARS} "
                            "characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    derived = not raw_secret
    if derived:
        raw_secret = hmac.new(admin_token.reveal().encode(), _DERIVATION_LABEL, hashlib.sha256).hexdigest()
    data_dir = env_str(environ, "BILLING_DATA_DIR", "")
    settings = Settings(
        nats_url=env_str(environ, "NATS_URL", "nats://127.0.0.1:4222"),
        stream_replicas=env_int(environ, "NATS_STREAM_REPLICAS", 1),
        host=env_str(environ, "BILLING_HOST", "127.0.0.1"),
        port=env_int(environ, "BILLING_PORT", 8082),
        admin_token=admin_token,
        key_secret=Secret(raw_secret),
        key_secret_derived=derived,
        reservation_ttl_s=env_float(environ, "BILLING_RESERVATION_TTL_S", 900.0),
        lease_s=env_float(environ, "BILLING_LEASE_S", 1.0),
        settled_retention_s=env_float(environ, "BILLING_SETTLED_RETENTION_S", 86_400.0),
        publish_timeout_s=env_float(environ, "BILLING_PUBLISH_TIMEOUT_S", 2.0),
        data_dir=Path(data_dir) if data_dir else None,
        snapshot_every=env_int(environ, "BILLING_SNAPSHOT_EVERY", 10_000),
        log_level=env_str(environ, "LOG_LEVEL", "INFO"),
    )
    if settings.reservation_ttl_s <= 0 or settings.publish_timeout_s <= 0:
        raise SettingsError("BILLING_RESERVATION_TTL_S and BILLING_PUBLISH_TIMEOUT_S must be positive")
    if not 0 <= settings.lease_s <= 60:
        raise SettingsError("BILLING_LEASE_S must be between 0 (no spend leases) and 60 seconds")
    if settings.settled_retention_s < 600:
        raise SettingsError("BILLING_SETTLED_RETENTION_S must be at least 600 (the stream's duplicate window)")
    return settings


class CliSettings(msgspec.Struct, frozen=True):
    url: str
    admin_token: Secret


def load_cli(environ: Mapping[str, str], *, env_file: Path, url: str | None = None,
             token: str | None = None) -> CliSettings:
    """Billing URL and admin token: flags, then the environment, then `env_file` (`make up` writes it)."""
    file_values: dict[str, str] = {}
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not name.startswith("#"):
                file_values[name.strip()] = value.strip()
    merged = {**file_values, **{k: v for k, v in environ.items() if v}}
    resolved_url = url or merged.get("ROUTEUR_BILLING_URL")
    resolved_token = token or merged.get("ROUTEUR_ADMIN_TOKEN")
    if not resolved_url:
        raise SettingsError(f"ROUTEUR_BILLING_URL is not set (environment, --url, or {env_file}: run `make up`)")
    if not resolved_token:
        raise SettingsError(f"ROUTEUR_ADMIN_TOKEN is not set (environment, --token, or {env_file})")
    return CliSettings(url=resolved_url.rstrip("/"), admin_token=Secret(resolved_token))
