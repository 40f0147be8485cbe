"""Wiring for `python -m services.proxy`: connect NATS, start the publisher, serve, drain on SIGTERM.

With PROXY_WORKERS > 1 this process only supervises: it starts that many workers (this same module, each a
full proxy with its own NATS connection) that all listen on PROXY_HOST:PROXY_PORT with SO_REUSEPORT."""

from __future__ import annotations

import asyncio
import os
import sys
from contextlib import AsyncExitStack

import structlog

from proto import subjects
from services.common import bus
from services.common.health import serve
from services.common.lifecycle import load_settings, run_service, whole_line_stderr
from services.common.logs import configure_logging, get_logger
from services.common.metrics import metrics_app
from services.common.settings import check_admin_token
from services.common.usage import parse_args
from services.common.workers import WorkerSupervisor, notify_ready, port_taken
from services.proxy import chat, providers
from services.proxy import settings as settings_module
from services.proxy.billing_client import BillingClient
from services.proxy.dashboard.session import TTL_S as SESSION_TTL_S
from services.proxy.metrics import ProxyMetrics
from services.proxy.payloads import PayloadPublisher
from services.proxy.publisher import TracePublisher
from services.proxy.service import ProxyState, client_session, make_app
from services.proxy.session_revocations import SessionRevocations
from services.router.client import RoutingView

ABOUT = ("Routeur's proxy: the OpenAI-compatible API (and Anthropic's) clients call. It authenticates the key, "
         "admits the request against billing, routes it by the router's snapshot to a provider (with fallback), "
         "applies DLP, and publishes traces, payloads and settlements off the response path. With PROXY_WORKERS "
         "> 1 this process supervises that many workers sharing the port.")
# After SIGTERM a worker drains HTTP for PROXY_DRAIN_TIMEOUT_S, then flushes traces, payloads and settlements,
# one after another, FLUSH_TIMEOUT_S each at most; the supervisor kills a worker still running after that and
# a margin (deploy/k8s gives the pod's grace period the same budget).
FLUSH_TIMEOUT_S = 10.0
FLUSHES = 3
STOP_MARGIN_S = FLUSHES * FLUSH_TIMEOUT_S + 10.0


def supervise(settings: settings_module.Settings) -> int:
    """Start PROXY_WORKERS workers on one port and watch them until SIGTERM (see WorkerSupervisor)."""
    whole_line_stderr()
    configure_logging("proxy", settings.log_level)  # its lines: workers_*, worker_* (with the worker's index)
    for host, port in ((settings.host, settings.port), (settings.metrics_host, settings.metrics_port)):
        if port_taken(host, port):
            get_logger().error("proxy_port_in_use", host=host, port=port)
            return 1
    return WorkerSupervisor("services.proxy", count=settings.workers, environ=os.environ,
                            index_var=settings_module.WORKER_INDEX_VAR, ready_var=settings_module.READY_FD_VAR,
                            ready_fd=settings.ready_fd,
                            stop_timeout_s=settings.drain_timeout_s + STOP_MARGIN_S).run()


async def main(stop: asyncio.Event, settings: settings_module.Settings) -> None:
    configure_logging("proxy", settings.log_level)
    if settings.worker_index is not None:
        whole_line_stderr()
        structlog.contextvars.bind_contextvars(worker=settings.worker_index)  # on every log line of this worker
    log = get_logger()
    targets = providers.resolve_targets(settings.catalog, settings.provider_keys, settings.emulator_url,
                                        base_urls=settings.provider_urls, aws=settings.aws)
    # Stopped in reverse: HTTP drained first, then traces, payloads and settlements flushed, NATS drained last.
    async with AsyncExitStack() as stack:
        nc = await bus.connect(settings.nats_url, name="proxy")
        stack.push_async_callback(nc.drain)
        js = nc.jetstream()
        await bus.ensure_streams(js, (subjects.TRACE_STREAM, subjects.PAYLOAD_STREAM),
                                 replicas=settings.stream_replicas)
        session = client_session()
        stack.push_async_callback(session.close)
        routing = RoutingView(nc, catalog=settings.catalog, providers=targets)
        await routing.start()
        stack.push_async_callback(routing.stop)
        billing = BillingClient(nc, timeout_s=settings.billing_timeout_s, fail_open_s=settings.billing_fail_open_s)
        billing.start()
        stack.push_async_callback(billing.close, timeout=FLUSH_TIMEOUT_S)
        metrics = ProxyMetrics()
        payloads = PayloadPublisher(js, buffer_bytes=settings.payload_buffer_bytes, dropped=metrics.payloads_dropped,
                                    seal_to=settings.archive_public_key)
        payloads.start()
        stack.push_async_callback(payloads.close, timeout=FLUSH_TIMEOUT_S)
        metrics.payload_backlog.set_function(lambda: payloads.buffered_bytes)
        revocations = SessionRevocations(js, ttl_s=SESSION_TTL_S, replicas=settings.stream_replicas)
        await revocations.start()
        stack.push_async_callback(revocations.stop)
        publisher = TracePublisher(js)
        publisher.start()
        stack.push_async_callback(publisher.close, timeout=FLUSH_TIMEOUT_S)
        state = ProxyState(
            keys=settings.key_ring(), billing=billing, routing=routing, catalog=settings.catalog, targets=targets,
            upstream=chat.Upstream(session, connect_timeout_s=settings.connect_timeout_s,
                                   read_timeout_s=settings.read_timeout_s),
            publisher=publisher, nc=nc, query_timeout_s=settings.query_timeout_s,
            max_body_bytes=settings.max_body_bytes, metrics=metrics, payloads=payloads,
            dlp_policies=settings.dlp_policies, public_url=settings.public_url,
            payload_max_bytes=settings.payload_max_bytes, revocations=revocations)
        runner = await serve(make_app(state), host=settings.host, port=settings.port,
                             shutdown_timeout=settings.drain_timeout_s, reuse_port=settings.workers > 1)
        stack.push_async_callback(runner.cleanup)  # first: requests in flight finish (PROXY_DRAIN_TIMEOUT_S)
        metrics_runner = await serve(metrics_app(metrics.registry), host=settings.metrics_host,
                                     port=settings.metrics_port, reuse_port=settings.workers > 1)
        stack.push_async_callback(metrics_runner.cleanup)  # scraped until the API has drained
        log.info("proxy_started", port=settings.port, metrics_port=settings.metrics_port, pid=os.getpid(),
                 providers=sorted(targets),
                 emulated=sorted(name for name, t in targets.items() if t.emulated))
        notify_ready(settings.ready_fd)
        await stop.wait()
        log.info("proxy_stopping")
    log.info("proxy_stopped", published=publisher.published)


def entry() -> None:
    parse_args(sys.argv[1:], service="proxy", about=ABOUT, variables=settings_module.VARIABLES)
    settings = load_settings(settings_module.load, check=lambda loaded: check_admin_token(loaded.admin_token))
    if settings.supervises:
        sys.exit(supervise(settings))
    run_service(lambda stop: main(stop, settings))


if __name__ == "__main__":
    entry()
