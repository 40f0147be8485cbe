"""The settings every NATS-connected service shares: NATS_URL, <PREFIX>_HOST, <PREFIX>_PORT and LOG_LEVEL."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from services.common.settings import env_int, env_str


class BaseSettings(msgspec.Struct, frozen=True):
    nats_url: str
    host: str
    port: int
    log_level: str


def load_base(environ: Mapping[str, str], *, prefix: str, default_port: int) -> BaseSettings:
    """NATS_URL, <PREFIX>_HOST, <PREFIX>_PORT and LOG_LEVEL."""
    return BaseSettings(
        nats_url=env_str(environ, "NATS_URL", "nats://127.0.0.1:4222"),
        host=env_str(environ, f"{prefix}_HOST", "127.0.0.1"),
        port=env_int(environ, f"{prefix}_PORT", default_port),
        log_level=env_str(environ, "LOG_LEVEL", "INFO"),
    )
