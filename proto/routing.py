"""Router messages: attempt outcomes reported by proxies and the health snapshot they route by."""

from __future__ import annotations

import msgspec


class AttemptReport(msgspec.Struct, frozen=True):
    provider: str
    upstream_model: str
    status_code: int
    latency_ms: float
    ttft_ms: float | None = None
    error_type: str | None = None


class RouteHealth(msgspec.Struct, frozen=True):
    route: str
    state: str = "closed"


class HealthSnapshot(msgspec.Struct, frozen=True):
    version: int
    routes: tuple[RouteHealth, ...] = ()
