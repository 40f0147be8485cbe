"""The shared shape of a NATS-connected service: connect, ensure streams, answer pings, serve probes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import msgspec
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg

from proto import subjects
from services.common import bus
from services.common.health import add_health_routes, serve
from services.common.logs import configure_logging, get_logger
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


ExtraCheck = Callable[[], Awaitable[dict[str, object]]]


async def run_skeleton(stop: asyncio.Event, *, name: str, settings: BaseSettings,
                       extra_check: ExtraCheck | None = None,
                       setup: Callable[[Client], Awaitable[None]] | None = None) -> None:
    """Run a service until `stop` is set: NATS, a ping responder, /healthz and /readyz."""
    configure_logging(name, settings.log_level)
    log = get_logger()
    nc = await bus.connect(settings.nats_url, name=name)

    async def pong(msg: Msg) -> None:
        await msg.respond(b"pong")

    await nc.subscribe(subjects.ping_subject(name), cb=pong)
    if setup is not None:
        await setup(nc)

    async def ready() -> dict[str, object]:
        detail: dict[str, object] = {"nats": nc.is_connected}
        if extra_check is not None:
            detail.update(await extra_check())
        detail["ready"] = all(value for key, value in detail.items() if isinstance(value, bool))
        return detail

    app = web.Application()
    add_health_routes(app, ready)
    runner = await serve(app, host=settings.host, port=settings.port)
    log.info(f"{name}_started", port=settings.port)
    await stop.wait()
    log.info(f"{name}_stopping")
    await runner.cleanup()
    await nc.drain()
    log.info(f"{name}_stopped")
