"""Prometheus exposition: each service owns a registry (no globals) and serves it on /metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

# Latency buckets in seconds, fine enough to see a gateway's sub-millisecond overhead.
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
SLOW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def add_metrics_route(app: web.Application, registry: CollectorRegistry) -> None:
    """Serve `registry` in the Prometheus text format on GET /metrics."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", metrics)


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """An application serving only /metrics: for an internal listener apart from a public API."""
    app = web.Application()
    add_metrics_route(app, registry)
    return app
