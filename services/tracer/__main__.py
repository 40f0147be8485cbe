"""Wiring for `python -m services.tracer`: connect, migrate, consume, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack

from proto import subjects
from services.common import bus
from services.common.health import serve
from services.common.lifecycle import load_settings, run_service
from services.common.logs import configure_logging, get_logger
from services.common.settings import check_admin_token
from services.common.usage import parse_args
from services.tracer import settings as settings_module
from services.tracer.service import Tracer, make_app
from services.tracer.store import TraceStore

ABOUT = ("Routeur's tracer: consumes the proxies' trace events from JetStream, stores them in ClickHouse (with "
         "per-minute usage rollups) and answers the logs, trace and usage queries.")


async def main(stop: asyncio.Event, settings: settings_module.Settings) -> None:
    configure_logging("tracer", settings.log_level)
    log = get_logger()
    async with AsyncExitStack() as stack:
        store = TraceStore(settings.clickhouse_url, analytics_url=settings.clickhouse_analytics_url,
                           limits=settings.limits, workers=settings.analytics_workers,
                           queue_s=settings.analytics_queue_s)
        await store.open(ttl_days=settings.ttl_days)
        stack.push_async_callback(store.close)  # last: after the final batch is written
        nc = await bus.connect(settings.nats_url, name="tracer")
        stack.push_async_callback(nc.drain)  # after tracer.stop: flushes the last acks
        js = nc.jetstream()
        await bus.ensure_streams(js, (subjects.TRACE_STREAM,), replicas=settings.stream_replicas)
        tracer = Tracer(settings, nc, js, store)
        await tracer.start()
        stack.push_async_callback(tracer.stop)  # writes and acks the batch in hand
        runner = await serve(make_app(settings, tracer, store, nc), host=settings.host, port=settings.port)
        stack.push_async_callback(runner.cleanup)
        log.info("tracer_started", port=settings.port)
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(tracer.gave_up.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        log.info("tracer_stopping", gave_up=tracer.gave_up.is_set())
    log.info("tracer_stopped", inserted=tracer.inserted)
    if tracer.gave_up.is_set():  # inserts kept failing despite fresh clients: a new process may fare better
        sys.exit(1)


def entry() -> None:
    parse_args(sys.argv[1:], service="tracer", about=ABOUT, variables=settings_module.VARIABLES)
    settings = load_settings(settings_module.load, check=lambda loaded: check_admin_token(loaded.admin_token))
    run_service(lambda stop: main(stop, settings))


if __name__ == "__main__":
    entry()
