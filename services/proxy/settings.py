"""Proxy settings, read from the environment in this one place."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from catalog import loader
from catalog.schema import Catalog
from services.common.sealing import InvalidSealKey, PublicSealKey, parse_public_key
from services.common.settings import Secret, SettingsError, env_float, env_int, env_secret, env_str
from services.common.usage import REQUIRED, Variable
from services.proxy import dlp
from services.proxy.auth import KeyRing
from services.proxy.providers import AwsSigning

# Set by the worker supervisor for each worker it starts (not meant to be set by hand).
WORKER_INDEX_VAR = "PROXY_WORKER_INDEX"
READY_FD_VAR = "PROXY_READY_FD"
MAX_WORKERS = 256
ARCHIVE_PUBLIC_KEY_VARIABLE = "PROXY_ARCHIVE_PUBLIC_KEY"
DEFAULT_METRICS_PORT = 8085  # beside the services' own 8080-8084 (the emulator is 8090)

VARIABLES = (
    Variable("PROXY_HOST", "127.0.0.1", "address of the OpenAI-compatible API"),
    Variable("PROXY_PORT", "8080", "its port"),
    Variable("PROXY_WORKERS", "1", f"processes serving the port (SO_REUSEPORT), 1–{MAX_WORKERS}; > 1 needs a "
             "fixed PROXY_PORT"),
    Variable("PROXY_METRICS_HOST", "127.0.0.1", "address of /metrics (an internal listener, never the API's)"),
    Variable("PROXY_METRICS_PORT", str(DEFAULT_METRICS_PORT), "port of /metrics; must differ from PROXY_PORT "
             "(> 1 PROXY_WORKERS: fixed, shared like the API port)"),
    Variable("NATS_URL", "nats://127.0.0.1:4222", "the NATS server (JetStream)"),
    Variable("NATS_STREAM_REPLICAS", "1", "replicas of the streams this service creates"),
    Variable("ROUTEUR_ADMIN_TOKEN", REQUIRED, "bearer token of the admin endpoints"),
    Variable("ROUTEUR_CATALOG", "", "models and routes TOML (unset: the bundled catalog/models.toml)"),
    Variable("<PROVIDER>_API_KEY", "", "each provider's key, named by its api_key_env in the catalog (bundled: "
             "OPENAI_API_KEY, AZURE_OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, DEEPSEEK_API_KEY, "
             "MISTRAL_API_KEY, GROQ_API_KEY, TOGETHER_API_KEY); a provider without one is served by the emulator"),
    Variable("<PROVIDER>_ENDPOINT", "", "a provider's endpoint, named by its base_url_env in the catalog (bundled: "
             "AZURE_OPENAI_ENDPOINT, BEDROCK_ENDPOINT)"),
    Variable("AWS_ACCESS_KEY_ID", "", "Bedrock routes (SigV4), with AWS_SECRET_ACCESS_KEY"),
    Variable("AWS_SECRET_ACCESS_KEY", "", "required when AWS_ACCESS_KEY_ID is set"),
    Variable("AWS_SESSION_TOKEN", "", "temporary AWS credentials"),
    Variable("AWS_REGION", "", "Bedrock region (unset: AWS_DEFAULT_REGION)"),
    Variable("AWS_DEFAULT_REGION", "us-east-1", "Bedrock region when AWS_REGION is unset"),
    Variable("ROUTEUR_EMULATOR_URL", "", "the provider emulator, for providers without a key"),
    Variable("PROXY_MAX_BODY_BYTES", str(8 * 1024 * 1024), "largest request body"),
    Variable("UPSTREAM_CONNECT_TIMEOUT_S", "5.0", "connecting to a provider"),
    Variable("UPSTREAM_READ_TIMEOUT_S", "120.0", "between bytes from a provider"),
    Variable("PROXY_QUERY_TIMEOUT_S", "5.0", "logs/usage queries to the tracer"),
    Variable("PROXY_BILLING_TIMEOUT_S", "2.0", "admission requests to billing"),
    Variable("PROXY_BILLING_FAIL_OPEN_S", "0.0", "serve this long without billing before refusing (0 = never)"),
    Variable("PROXY_DRAIN_TIMEOUT_S", "20.0", "after SIGTERM, requests in flight get this long"),
    Variable("PROXY_DLP_POLICIES", "", "TOML file of named DLP policies (added to the built-in ones)"),
    Variable("PROXY_PUBLIC_URL", "", "the proxy's URL as clients see it (payload links)"),
    Variable("PROXY_PAYLOAD_MAX_BYTES", str(8 * 1024 * 1024), "largest archived payload"),
    Variable(ARCHIVE_PUBLIC_KEY_VARIABLE, "", "kid:base64 of the archiver's X25519 public key: payload archives "
             "are sealed to it before they reach JetStream (unset: archives are dropped and counted, never sent "
             "in clear)"),
    Variable("PROXY_PAYLOAD_BUFFER_BYTES", str(256 * 1024 * 1024), "payloads buffered while JetStream is slow"),
    Variable(WORKER_INDEX_VAR, "", "set by the worker supervisor for each worker; leave unset"),
    Variable(READY_FD_VAR, "", "a pipe to write one byte to once serving; set by whoever starts the proxy"),
    Variable("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
)


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
    workers: int = 1  # PROXY_WORKERS: processes sharing host:port (SO_REUSEPORT) when > 1
    worker_index: int | None = None  # this process's index among the workers; None = not started as a worker
    ready_fd: int = -1  # a pipe to write one byte to once serving (the supervisor's or the launcher's)
    archive_public_key: PublicSealKey | None = None  # PROXY_ARCHIVE_PUBLIC_KEY; None: archives are not sent
    metrics_host: str = "127.0.0.1"  # /metrics listens here, apart from the public API
    metrics_port: int = DEFAULT_METRICS_PORT

    @property
    def supervises(self) -> bool:
        """True for the process that starts and watches the workers instead of serving."""
        return self.workers > 1 and self.worker_index is None

    def key_ring(self) -> KeyRing:
        """Only the admin token: API keys belong to billing."""
        return KeyRing({}, admin_token=self.admin_token.reveal())


def _dlp_policies(path: str) -> dict[str, dlp.Policy]:
    """The built-in DLP policies plus the named ones in the TOML file at PROXY_DLP_POLICIES."""
    try:
        return dlp.load_policies(Path(path) if path else None)
    except (dlp.DlpConfigError, OSError) as exc:
        raise SettingsError(f"PROXY_DLP_POLICIES: {exc}") from None


def _workers(environ: Mapping[str, str], port: int) -> tuple[int, int | None, int]:
    """PROXY_WORKERS, and the worker index and ready pipe the supervisor hands each worker."""
    workers = env_int(environ, "PROXY_WORKERS", 1)
    if not 1 <= workers <= MAX_WORKERS:
        raise SettingsError(f"environment variable PROXY_WORKERS must be between 1 and {MAX_WORKERS} (processes "
                            f"serving the proxy port), got {workers}")
    if workers > 1 and port == 0:
        raise SettingsError("PROXY_WORKERS > 1 needs a fixed PROXY_PORT: with port 0 every worker would listen on "
                            "a different port")
    index = env_int(environ, WORKER_INDEX_VAR, -1)
    if index != -1 and not 0 <= index < workers:
        raise SettingsError(f"environment variable {WORKER_INDEX_VAR} must be between 0 and PROXY_WORKERS - 1 "
                            f"({workers - 1}), got {index}; it is set by the worker supervisor, leave it unset")
    return workers, None if index == -1 else index, env_int(environ, READY_FD_VAR, -1)


def _archive_public_key(environ: Mapping[str, str]) -> PublicSealKey | None:
    raw = environ.get(ARCHIVE_PUBLIC_KEY_VARIABLE, "")
    if not raw:
        return None
    try:
        return parse_public_key(raw, variable=ARCHIVE_PUBLIC_KEY_VARIABLE)
    except InvalidSealKey as exc:
        raise SettingsError(str(exc)) from None


def _metrics_port(environ: Mapping[str, str], port: int, workers: int) -> int:
    metrics_port = env_int(environ, "PROXY_METRICS_PORT", DEFAULT_METRICS_PORT)
    if metrics_port == port and port != 0:
        raise SettingsError(f"PROXY_METRICS_PORT must differ from PROXY_PORT ({port}): /metrics is served on an "
                            "internal listener, not on the public API's port")
    if workers > 1 and metrics_port == 0:
        raise SettingsError("PROXY_WORKERS > 1 needs a fixed PROXY_METRICS_PORT: with port 0 every worker would "
                            "serve /metrics on a different port")
    return metrics_port


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
    port = env_int(environ, "PROXY_PORT", 8080)
    workers, worker_index, ready_fd = _workers(environ, port)
    settings = Settings(
        host=env_str(environ, "PROXY_HOST", "127.0.0.1"),
        port=port,
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
        workers=workers,
        worker_index=worker_index,
        ready_fd=ready_fd,
        archive_public_key=_archive_public_key(environ),
        metrics_host=env_str(environ, "PROXY_METRICS_HOST", "127.0.0.1"),
        metrics_port=_metrics_port(environ, port, workers),
    )
    return settings
