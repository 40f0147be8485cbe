"""Archiver settings, read from the environment in this one place."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from services.archiver.envelope import MASTER_KEY_VARIABLE, KeyRing, parse_master_keys
from services.archiver.errors import InvalidMasterKey
from services.common.sealing import InvalidSealKey, SealKeyRing, parse_private_keys
from services.common.settings import Secret, SettingsError, env_float, env_int, env_secret, env_str
from services.common.skeleton import BaseSettings, load_base
from services.common.usage import REQUIRED, Variable

LINK_KEY_VARIABLE = "ROUTEUR_PAYLOAD_LINK_KEY"
SEAL_KEY_VARIABLE = "ARCHIVER_SEAL_KEY"
MIN_LINK_KEY_CHARS = 32
MAX_URL_TTL_S = 7 * 86_400
PLACEHOLDER = "CHANGE_ME"  # deploy/k8s ships a format-valid placeholder key containing this

VARIABLES = (
    Variable("NATS_URL", "nats://127.0.0.1:4222", "the NATS server (JetStream)"),
    Variable("NATS_STREAM_REPLICAS", "1", "replicas of the payload stream"),
    Variable("ARCHIVER_HOST", "127.0.0.1", "address of /healthz and /readyz"),
    Variable("ARCHIVER_PORT", "8084", "its port"),
    Variable("ROUTEUR_MASTER_KEY", REQUIRED, "kid:base64 of 32 random bytes (e.g. "
             "k1:$(openssl rand -base64 32)); older keys after the active one, comma-separated"),
    Variable(SEAL_KEY_VARIABLE, REQUIRED, "kid:base64 of the archiver's 32-byte X25519 private key: proxies seal "
             "payloads to its public key (PROXY_ARCHIVE_PUBLIC_KEY); older keys after the active one, comma-separated"),
    Variable("ROUTEUR_PAYLOAD_LINK_KEY", "", "≥ 32 characters: signs payload links (unset: derived from the "
             "master key)"),
    Variable("OBJECT_STORE_URL", "file://./.data/objects", "file://<dir> or s3://<bucket>[/prefix]"),
    Variable("S3_ENDPOINT_URL", "", "S3-compatible endpoint (unset: AWS)"),
    Variable("S3_ACCESS_KEY", "", "S3 access key"),
    Variable("S3_SECRET_KEY", "", "S3 secret key"),
    Variable("S3_REGION", "us-east-1", "S3 region"),
    Variable("PAYLOAD_URL_TTL_S", "900", "lifetime of a payload link (1 s – 7 days)"),
    Variable("ARCHIVER_RETENTION_DAYS", "30", "days a payload is kept (0 = forever)"),
    Variable("ARCHIVER_SWEEP_INTERVAL_S", "3600.0", "how often expired payloads are deleted"),
    Variable("ARCHIVER_BATCH", "64", "payloads fetched from the stream at once (1–1024)"),
    Variable("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
)


class Settings(msgspec.Struct, frozen=True):
    base: BaseSettings
    stream_replicas: int
    object_store_url: str
    s3_endpoint_url: str
    s3_access_key: Secret
    s3_secret_key: Secret
    s3_region: str
    # None only when ROUTEUR_MASTER_KEY is unset: the migrate Job loads these settings for the object
    # store alone; the archiver itself calls require_master_keys() before it starts.
    master_keys: KeyRing | None
    master_key_placeholder: bool
    seal_keys: SealKeyRing | None  # None only when unset (the migrate Job); require_seal_keys() at start
    link_key: Secret
    url_ttl_s: int
    retention_days: int
    sweep_interval_s: float
    batch: int
    seal_key_placeholder: bool = False  # ARCHIVER_SEAL_KEY is deploy/k8s's published placeholder


def _bounded(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise SettingsError(f"environment variable {name} must be between {low:g} and {high:g}, got {value:g}")


def _master_keys(environ: Mapping[str, str]) -> KeyRing | None:
    raw = environ.get("ROUTEUR_MASTER_KEY", "")
    if not raw:
        return None
    try:
        return parse_master_keys(raw, variable="ROUTEUR_MASTER_KEY")
    except InvalidMasterKey as exc:
        raise SettingsError(str(exc)) from None


def _seal_keys(environ: Mapping[str, str]) -> SealKeyRing | None:
    raw = environ.get(SEAL_KEY_VARIABLE, "")
    if not raw:
        return None
    try:
        return parse_private_keys(raw, variable=SEAL_KEY_VARIABLE)
    except InvalidSealKey as exc:
        raise SettingsError(str(exc)) from None


def load(environ: Mapping[str, str]) -> Settings:
    link_key = env_secret(environ, "ROUTEUR_PAYLOAD_LINK_KEY", "")
    if link_key and len(link_key.reveal()) < MIN_LINK_KEY_CHARS:
        raise SettingsError(f"environment variable {LINK_KEY_VARIABLE} must be at least {MIN_LINK_KEY_CHARS} "
                            "characters (e.g. openssl rand -base64 32), or unset to derive it from "
                            f"{MASTER_KEY_VARIABLE}")
    settings = Settings(
        base=load_base(environ, prefix="ARCHIVER", default_port=8084),
        stream_replicas=env_int(environ, "NATS_STREAM_REPLICAS", 1),
        object_store_url=env_str(environ, "OBJECT_STORE_URL", "file://./.data/objects"),
        s3_endpoint_url=env_str(environ, "S3_ENDPOINT_URL", ""),
        s3_access_key=env_secret(environ, "S3_ACCESS_KEY", ""),
        s3_secret_key=env_secret(environ, "S3_SECRET_KEY", ""),
        s3_region=env_str(environ, "S3_REGION", "us-east-1"),
        master_keys=_master_keys(environ),
        master_key_placeholder=PLACEHOLDER in environ.get("ROUTEUR_MASTER_KEY", ""),
        seal_keys=_seal_keys(environ),
        link_key=link_key,
        url_ttl_s=env_int(environ, "PAYLOAD_URL_TTL_S", 900),
        retention_days=env_int(environ, "ARCHIVER_RETENTION_DAYS", 30),
        sweep_interval_s=env_float(environ, "ARCHIVER_SWEEP_INTERVAL_S", 3600.0),
        batch=env_int(environ, "ARCHIVER_BATCH", 64),
        seal_key_placeholder=PLACEHOLDER in environ.get(SEAL_KEY_VARIABLE, ""),
    )
    _bounded("PAYLOAD_URL_TTL_S", settings.url_ttl_s, 1, MAX_URL_TTL_S)
    _bounded("ARCHIVER_RETENTION_DAYS", settings.retention_days, 0, 36_500)
    _bounded("ARCHIVER_SWEEP_INTERVAL_S", settings.sweep_interval_s, 1, 7 * 86_400)
    _bounded("ARCHIVER_BATCH", settings.batch, 1, 1024)
    return settings


def require_master_keys(settings: Settings) -> KeyRing:
    """The master keys, or a SettingsError saying how to set them (the archiver cannot run without)."""
    if settings.master_keys is None:
        raise SettingsError(f"environment variable {MASTER_KEY_VARIABLE} is required by the archiver: "
                            "'kid:base64 of 32 random bytes' (e.g. k1:$(openssl rand -base64 32)); list older "
                            "keys after the active one, comma-separated, to keep reading objects they sealed")
    return settings.master_keys


def require_seal_keys(settings: Settings) -> SealKeyRing:
    """The archiver's X25519 keys, or a SettingsError saying how to set them (sealed payloads cannot open
    without)."""
    if settings.seal_keys is None:
        raise SettingsError(f"environment variable {SEAL_KEY_VARIABLE} is required by the archiver: 'kid:base64 of a "
                            "32-byte X25519 private key' (make run writes one to .data/secrets.env; in Kubernetes "
                            "the routeur-secrets Secret); give the proxies its public key as PROXY_ARCHIVE_PUBLIC_KEY")
    return settings.seal_keys
