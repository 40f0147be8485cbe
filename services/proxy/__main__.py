"""Wiring for `python -m services.proxy`: connect NATS, start the publisher, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import os

from proto import subjects
from services.common import bus
from services.common.health import serve
from services.common.lifecycle import run_service
from services.common.logs import configure_logging, get_logger
from services.proxy import chat, providers
from services.proxy import settings as settings_module
from services.proxy.billing_client import BillingClient
from services.proxy.metrics import ProxyMetrics
from services.proxy.payloads import PayloadPublisher
from services.proxy.publisher import TracePublisher
from services.proxy.service import ProxyState, client_session, make_app
from services.router.client import RoutingView


async def main(stop: asyncio.Event) -> None:
    settings = settings_module.load(os.environ)
    configure_logging("proxy", settings.log_level)
    log = get_logger()
    nc = await bus.connect(settings.nats_url, name="proxy")
    js = nc.jetstream()
    await bus.ensure_streams(js, (subjects.TRACE_STREAM, subjects.PAYLOAD_STREAM), replicas=settings.stream_replicas)
    publisher = TracePublisher(js)
    publisher.start()
    metrics = ProxyMetrics()
    payloads = PayloadPublisher(js, buffer_bytes=settings.payload_buffer_bytes, dropped=metrics.payloads_dropped)
    payloads.start()
    metrics.payload_backlog.set_function(lambda: payloads.buffered_bytes)
    session = client_session()
    targets = providers.resolve_targets(settings.catalog, settings.provider_keys, settings.emulator_url,
                                        base_urls=settings.provider_urls, aws=settings.aws)
    billing = BillingClient(nc, timeout_s=settings.billing_timeout_s, fail_open_s=settings.billing_fail_open_s)
    billing.start()
    routing = RoutingView(nc, catalog=settings.catalog, providers=targets)
    await routing.start()
    state = ProxyState(
        keys=settings.key_ring(), billing=billing, routing=routing, catalog=settings.catalog, targets=targets,
        upstream=chat.Upstream(session, connect_timeout_s=settings.connect_timeout_s,
                               read_timeout_s=settings.read_timeout_s),
        publisher=publisher, nc=nc, query_timeout_s=settings.query_timeout_s, max_body_bytes=settings.max_body_bytes,
        metrics=metrics, payloads=payloads, dlp_policies=settings.dlp_policies, public_url=settings.public_url,
        payload_max_bytes=settings.payload_max_bytes)
    runner = await serve(make_app(state), host=settings.host,
                         port=settings.port, shutdown_timeout=settings.drain_timeout_s)
    log.info("proxy_started", port=settings.port, providers=sorted(targets),
             emulated=sorted(name for name, t in targets.items() if t.emulated))
    await stop.wait()
    log.info("proxy_stopping")
    await runner.cleanup()
    await publisher.close(timeout=10.0)
    await payloads.close(timeout=10.0)
    await billing.close(timeout=10.0)
    await routing.stop()
    await session.close()
    await nc.drain()
    log.info("proxy_stopped", published=publisher.published)


if __name__ == "__main__":
    run_service(main)
