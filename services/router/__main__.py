"""Wiring for `python -m services.router`: settings, NATS, the KV snapshot, rules, serve, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack

from services.common import bus
from services.common.health import serve
from services.common.lifecycle import run_service
from services.common.logs import configure_logging, get_logger
from services.router import settings as settings_module
from services.router.service import Router, make_app
from services.router.store import SnapshotStore


async def main(stop: asyncio.Event) -> None:
    settings = settings_module.load(os.environ)
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


if __name__ == "__main__":
    run_service(main)
