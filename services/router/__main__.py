"""Wiring for `python -m services.router`: settings, NATS, the KV snapshot, rules, serve, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack

from services.common import bus
from services.common.health import serve
from services.common.lifecycle import load_settings, run_service
from services.common.logs import configure_logging, get_logger
from services.common.usage import parse_args
from services.router import settings as settings_module
from services.router.service import Router, make_app
from services.router.store import SnapshotStore

ABOUT = ("Routeur's router: keeps every route's health (circuit breakers fed by the proxies' attempt reports) "
         "and the routing rules, and publishes the routing snapshot the proxies route by, on change and every "
         "second (also kept in a JetStream KV bucket).")


async def main(stop: asyncio.Event, settings: settings_module.Settings) -> None:
    configure_logging("router", settings.log_level)
    log = get_logger()
    async with AsyncExitStack() as stack:
        nc = await bus.connect(settings.nats_url, name="router")
        stack.push_async_callback(nc.drain)
        store = SnapshotStore(nc.jetstream(), replicas=settings.stream_replicas)
        previous = await store.start()
        router = Router(nc, store, settings=settings, previous=previous)
        await router.start()
        stack.push_async_callback(router.stop)
        runner = await serve(make_app(router), host=settings.host, port=settings.port)
        stack.push_async_callback(runner.cleanup)
        log.info("router_started", port=settings.port, version=router.version, rules=router.rules_digest or None,
                 restored_routes=len(previous.routes) if previous else 0)
        await stop.wait()
        log.info("router_stopping")
    log.info("router_stopped", version=router.version)


def entry() -> None:
    parse_args(sys.argv[1:], service="router", about=ABOUT, variables=settings_module.VARIABLES)
    settings = load_settings(settings_module.load)
    run_service(lambda stop: main(stop, settings))


if __name__ == "__main__":
    entry()
