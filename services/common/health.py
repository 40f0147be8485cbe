"""`/healthz` (alive) and `/readyz` (dependencies reachable, with JSON detail) for any aiohttp app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from services.common.logs import ProtocolLog

ReadyCheck = Callable[[], Awaitable[dict[str, object]]]


def add_health_routes(app: web.Application, ready_check: ReadyCheck) -> None:
    """Add the two probes; `ready_check` returns a detail dict whose `ready` key decides 200 or 503."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        detail = await ready_check()
        return web.json_response(detail, status=200 if detail.get("ready") else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


async def serve(app: web.Application, *, host: str, port: int, shutdown_timeout: float = 10.0,
                reuse_port: bool = False) -> web.AppRunner:
    """Start `app` on host:port and return its runner; call `await runner.cleanup()` to stop it.

    No access log, and aiohttp's protocol errors go through ProtocolLog, which never quotes the request.
    `reuse_port` sets SO_REUSEPORT: several processes listen on the same port and the kernel spreads new
    connections among them."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout, access_log=None, logger=ProtocolLog())
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port)
    await site.start()
    return runner
