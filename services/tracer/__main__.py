"""Wiring for `python -m services.tracer`: connect, migrate, consume, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os

from proto import subjects
from services.common import bus
from services.common.health import serve
from services.common.lifecycle import run_service
from services.common.logs import configure_logging, get_logger
from services.tracer import settings as settings_module
from services.tracer.service import Tracer, make_app
from services.tracer.store import TraceStore


async def main(stop: asyncio.Event) -> None:
    settings = settings_module.load(os.environ)
    configure_logging("tracer", settings.log_level)
    log = get_logger()
    store = TraceStore(settings.clickhouse_url)
    await store.open(ttl_days=settings.ttl_days)
    nc = await bus.connect(settings.nats_url, name="tracer")
    js = nc.jetstream()
    await bus.ensure_streams(js, (subjects.TRACE_STREAM,), replicas=settings.stream_replicas)
    tracer = Tracer(settings, nc, js, store)
    await tracer.start()
    runner = await serve(make_app(settings, tracer, store, nc), host=settings.host, port=settings.port)
    log.info("tracer_started", port=settings.port)
    await stop.wait()
    log.info("tracer_stopping")
    await tracer.stop()
    await runner.cleanup()
    await nc.drain()
    await store.close()
    log.info("tracer_stopped", inserted=tracer.inserted)


if __name__ == "__main__":
    run_service(main)
