"""Proxy settings, read from the environment in this one place."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from catalog import loader
from catalog.schema import Catalog
from services.common.settings import Secret, SettingsError, env_float, env_int, env_secret, env_str
from services.proxy import dlp
from services.proxy.auth import KeyRing
from services.proxy.providers import AwsSigning


class Settings(msgspec.Struct, frozen=True):
    host: str
    port: int
    nats_url: str
    stream_replicas: int
    admin_token: Secret
    catalog: Catalog
    provider_keys: dict[str, Secret]
    provider_urls: dict[str, str]
    aws: AwsSigning
    emulator_url: str
    max_body_bytes: int
    connect_timeout_s: float
    read_timeout_s: float
    query_timeout_s: float
    billing_timeout_s: float
    billing_fail_open_s: float
    drain_timeout_s: float
    log_level: str
    dlp_policies: dict[str, dlp.Policy]
    public_url: str
    payload_max_bytes: int
    payload_buffer_bytes: int

    def key_ring(self) -> KeyRing:
        """Only the admin token: API keys belong to billing."""
        return KeyRing({}, admin_token=self.admin_token.reveal())


def _dlp_policies(path: str) -> dict[str, dlp.Policy]:
    """The built-in DLP policies plus the named ones in the TOML file at PROXY_DLP_POLICIES."""
    try:
        return dlp.load_policies(Path(path) if path else None)
    except (dlp.DlpConfigError, OSError) as exc:
        raise SettingsError(f"PROXY_DLP_POLICIES: {exc}") from None


def load(environ: Mapping[str, str]) -> Settings:
    catalog_path = env_str(environ, "ROUTEUR_CATALOG", "")
    try:
        catalog = loader.load(Path(catalog_path) if catalog_path else None)
    except loader.CatalogError as exc:
        raise SettingsError(f"ROUTEUR_CATALOG: {exc}") from None
    provider_keys = {name: Secret(environ[p.api_key_env]) for name, p in catalog.providers.items()
                     if environ.get(p.api_key_env)}
    provider_urls = {name: environ[p.base_url_env] for name, p in catalog.providers.items()
                     if p.base_url_env and environ.get(p.base_url_env)}
    if environ.get("AWS_ACCESS_KEY_ID") and not environ.get("AWS_SECRET_ACCESS_KEY"):
        raise SettingsError("AWS_SECRET_ACCESS_KEY is required when AWS_ACCESS_KEY_ID is set (Bedrock routes)")
    region = env_str(environ, "AWS_REGION", "") or env_str(environ, "AWS_DEFAULT_REGION", "us-east-1")
    if "bedrock" in catalog.providers and not provider_urls.get("bedrock") and environ.get("AWS_ACCESS_KEY_ID"):
        provider_urls["bedrock"] = f"https://bedrock-runtime.{region}.amazonaws.com"
    settings = Settings(
        host=env_str(environ, "PROXY_HOST", "127.0.0.1"),
        port=env_int(environ, "PROXY_PORT", 8080),
        nats_url=env_str(environ, "NATS_URL", "nats://127.0.0.1:4222"),
        stream_replicas=env_int(environ, "NATS_STREAM_REPLICAS", 1),
        admin_token=env_secret(environ, "ROUTEUR_ADMIN_TOKEN"),
        catalog=catalog,
        provider_keys=provider_keys,
        provider_urls=provider_urls,
        aws=AwsSigning(secret_key=env_secret(environ, "AWS_SECRET_ACCESS_KEY", ""), region=region,
                       session_token=env_secret(environ, "AWS_SESSION_TOKEN", "")),
        emulator_url=env_str(environ, "ROUTEUR_EMULATOR_URL", ""),
        max_body_bytes=env_int(environ, "PROXY_MAX_BODY_BYTES", 8 * 1024 * 1024),
        connect_timeout_s=env_float(environ, "UPSTREAM_CONNECT_TIMEOUT_S", 5.0),
        read_timeout_s=env_float(environ, "UPSTREAM_READ_TIMEOUT_S", 120.0),
        query_timeout_s=env_float(environ, "PROXY_QUERY_TIMEOUT_S", 5.0),
        billing_timeout_s=env_float(environ, "PROXY_BILLING_TIMEOUT_S", 2.0),
        billing_fail_open_s=env_float(environ, "PROXY_BILLING_FAIL_OPEN_S", 0.0),
        drain_timeout_s=env_float(environ, "PROXY_DRAIN_TIMEOUT_S", 20.0),
        log_level=env_str(environ, "LOG_LEVEL", "INFO"),
        dlp_policies=_dlp_policies(env_str(environ, "PROXY_DLP_POLICIES", "")),
        public_url=env_str(environ, "PROXY_PUBLIC_URL", ""),
        payload_max_bytes=env_int(environ, "PROXY_PAYLOAD_MAX_BYTES", 8 * 1024 * 1024),
        payload_buffer_bytes=env_int(environ, "PROXY_PAYLOAD_BUFFER_BYTES", 256 * 1024 * 1024),
    )
    return settings
