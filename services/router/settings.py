"""Router settings, read from the environment in this one place."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from catalog import loader
from catalog.schema import Catalog
from services.common.settings import SettingsError, env_float, env_int, env_str
from services.common.usage import Variable
from services.router.health import BreakerConfig

_BREAKER_FLOATS = {"window_s": "ROUTER_BREAKER_WINDOW_S", "error_ratio": "ROUTER_BREAKER_ERROR_RATIO",
                   "slow_ms": "ROUTER_BREAKER_SLOW_MS", "ewma_alpha": "ROUTER_BREAKER_EWMA_ALPHA",
                   "cooldown_s": "ROUTER_BREAKER_COOLDOWN_S", "cooldown_factor": "ROUTER_BREAKER_COOLDOWN_FACTOR",
                   "max_cooldown_s": "ROUTER_BREAKER_MAX_COOLDOWN_S",
                   "probe_timeout_s": "ROUTER_BREAKER_PROBE_TIMEOUT_S"}
_BREAKER_INTS = {"window_max": "ROUTER_BREAKER_WINDOW_MAX", "min_requests": "ROUTER_BREAKER_MIN_REQUESTS",
                 "consecutive_failures": "ROUTER_BREAKER_CONSECUTIVE_FAILURES"}

VARIABLES = (
    Variable("NATS_URL", "nats://127.0.0.1:4222", "the NATS server (JetStream)"),
    Variable("NATS_STREAM_REPLICAS", "1", "replicas of the routing KV bucket"),
    Variable("ROUTER_HOST", "127.0.0.1", "address of /healthz, /readyz and /v1/routing"),
    Variable("ROUTER_PORT", "8081", "its port"),
    Variable("ROUTEUR_CATALOG", "", "models and routes TOML (unset: the bundled catalog/models.toml)"),
    Variable("ROUTER_RULES", "", "routing rules TOML, reloaded on change (unset: no rules); see "
             "catalog/rules.example.toml"),
    Variable("ROUTER_RELOAD_INTERVAL_S", "1.0", "how often the rules file is checked"),
    Variable("ROUTER_PUBLISH_INTERVAL_S", "1.0", "how often the routing snapshot is published"),
    *(Variable(name, str(getattr(BreakerConfig(), field)), f"circuit breaker: {field} (services/router/health.py)")
      for field, name in {**_BREAKER_FLOATS, **_BREAKER_INTS}.items()),
    Variable("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
)


class Settings(msgspec.Struct, frozen=True):
    nats_url: str
    stream_replicas: int
    host: str
    port: int
    log_level: str
    catalog: Catalog
    rules_path: Path | None
    reload_interval_s: float
    publish_interval_s: float
    breaker: BreakerConfig


def load(environ: Mapping[str, str]) -> Settings:
    """ROUTER_RULES (optional path of the rules file), ROUTEUR_CATALOG, the publish/reload periods and the
    ROUTER_BREAKER_* overrides of BreakerConfig's defaults."""
    catalog_path = env_str(environ, "ROUTEUR_CATALOG", "")
    try:
        catalog = loader.load(Path(catalog_path) if catalog_path else None)
    except loader.CatalogError as exc:
        raise SettingsError(f"ROUTEUR_CATALOG: {exc}") from None
    defaults = BreakerConfig()
    values: dict[str, float | int] = {}
    for field, name in _BREAKER_FLOATS.items():
        values[field] = env_float(environ, name, getattr(defaults, field))
    for field, name in _BREAKER_INTS.items():
        values[field] = env_int(environ, name, getattr(defaults, field))
    breaker = BreakerConfig(**values)  # type: ignore[arg-type]
    _check_breaker(breaker)
    rules_path = env_str(environ, "ROUTER_RULES", "")
    settings = Settings(
        nats_url=env_str(environ, "NATS_URL", "nats://127.0.0.1:4222"),
        stream_replicas=env_int(environ, "NATS_STREAM_REPLICAS", 1),
        host=env_str(environ, "ROUTER_HOST", "127.0.0.1"),
        port=env_int(environ, "ROUTER_PORT", 8081),
        log_level=env_str(environ, "LOG_LEVEL", "INFO"),
        catalog=catalog,
        rules_path=Path(rules_path) if rules_path else None,
        reload_interval_s=env_float(environ, "ROUTER_RELOAD_INTERVAL_S", 1.0),
        publish_interval_s=env_float(environ, "ROUTER_PUBLISH_INTERVAL_S", 1.0),
        breaker=breaker,
    )
    if settings.reload_interval_s <= 0 or settings.publish_interval_s <= 0:
        raise SettingsError("ROUTER_RELOAD_INTERVAL_S and ROUTER_PUBLISH_INTERVAL_S must be positive")
    return settings


def _check_breaker(config: BreakerConfig) -> None:
    if not 0 < config.error_ratio <= 1:
        raise SettingsError("ROUTER_BREAKER_ERROR_RATIO must be in (0, 1]")
    if not 0 < config.ewma_alpha <= 1:
        raise SettingsError("ROUTER_BREAKER_EWMA_ALPHA must be in (0, 1]")
    if config.window_s <= 0 or config.window_max < 1 or config.min_requests < 1:
        raise SettingsError("ROUTER_BREAKER_WINDOW_S, _WINDOW_MAX and _MIN_REQUESTS must be positive")
    if config.cooldown_s <= 0 or config.cooldown_factor < 1 or config.max_cooldown_s < config.cooldown_s:
        raise SettingsError("ROUTER_BREAKER_COOLDOWN_S must be positive, _COOLDOWN_FACTOR ≥ 1 and "
                            "_MAX_COOLDOWN_S ≥ _COOLDOWN_S")
    if config.slow_ms < 0 or config.consecutive_failures < 0 or config.probe_timeout_s <= 0:
        raise SettingsError("ROUTER_BREAKER_SLOW_MS and _CONSECUTIVE_FAILURES must not be negative, "
                            "_PROBE_TIMEOUT_S must be positive")
