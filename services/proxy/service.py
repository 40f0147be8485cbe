"""Proxy HTTP edge: the middleware (request id, errors in the endpoint's format, overhead header, payload
archive) and the app's wiring. The metered pipeline is pipeline.py; the read routes are reads.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from aiohttp import web

from services.common.health import add_health_routes
from services.common.ids import new_ulid
from services.common.logs import ProtocolLog, get_logger
from services.proxy import pipeline, reads
from services.proxy.call import OVERHEAD_HEADER, overhead_header
from services.proxy.chat import CHAT
from services.proxy.dashboard import add_dashboard
from services.proxy.embeddings import EMBEDDINGS
from services.proxy.endpoint import Endpoint
from services.proxy.errors import MethodNotAllowed, NotFound, ProxyError, error_response
from services.proxy.messages import MESSAGES
from services.proxy.messages_count import MESSAGES_COUNT
from services.proxy.responses import RESPONSES
from services.proxy.state import CALL, RENDER_ERROR, REQUEST_ID, STARTED, STATE, TRACE, ProxyState
from services.proxy.upstream import client_session

__all__ = ["ENDPOINTS", "ProxyState", "client_session", "edge", "make_app"]

ENDPOINTS: tuple[Endpoint, ...] = (CHAT, EMBEDDINGS, MESSAGES, MESSAGES_COUNT, RESPONSES)
"""The metered endpoints, each served by the pipeline with its own parse and renderers."""

log = get_logger()


@web.middleware
async def edge(request: web.Request, handler: Any) -> web.StreamResponse:
    """Give every request an id, bind it for logs, turn every failure into the endpoint's error JSON, state
    Routeur's own share of the time, and hand a captured request to the payload archive."""
    started = time.perf_counter()
    request_id = new_ulid()
    request[REQUEST_ID], request[STARTED] = request_id, started
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await _respond(request, handler, request_id)
        call = request.get(CALL)
        if not response.prepared:  # a stream stated its overhead when it sent its headers
            response.headers[OVERHEAD_HEADER] = (call.overhead_header(time.perf_counter()) if call is not None
                                                 else overhead_header(started, 0.0, time.perf_counter()))
        if call is not None and call.capture is not None and TRACE in request:
            _archive(request, response)
        return response
    finally:
        structlog.contextvars.unbind_contextvars("request_id")


async def _respond(request: web.Request, handler: Any, request_id: str) -> web.StreamResponse:
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except ProxyError as error:
        failure = error
    except web.HTTPRequestEntityTooLarge:
        failure = pipeline.too_large(request.app[STATE])
    except web.HTTPMethodNotAllowed:
        failure = MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
    except web.HTTPNotFound:
        failure = NotFound(f"no route for {request.method} {request.path}", code="unknown_url")
    except web.HTTPException as exc:
        failure = ProxyError(exc.reason, status=exc.status, code="http_error")
        failure.type = "invalid_request_error" if exc.status < 500 else "server_error"
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled_error", path=request.path)
        failure = ProxyError("internal error; the request id identifies it in the logs")
    # an endpoint's handler names its error format first thing; everything else answers OpenAI's
    return request.get(RENDER_ERROR, error_response)(failure, request_id)


def _archive(request: web.Request, response: web.StreamResponse) -> None:
    """Hand the four layers to the payload publisher once the caller's response is final (never raises)."""
    state = request.app[STATE]
    capture = request[CALL].capture
    if state.payloads is None or capture is None:
        return
    try:
        state.payloads.submit(capture.archive(request[TRACE], response, max_bytes=state.payload_max_bytes))
    except Exception as exc:  # archiving must never fail the request
        log.error("payload_capture_failed", error=type(exc).__name__)


def make_app(state: ProxyState) -> web.Application:
    app = web.Application(middlewares=[edge], client_max_size=state.max_body_bytes,
                          handler_args={"logger": ProtocolLog()})
    app[STATE] = state

    async def ready() -> dict[str, object]:
        connected = state.nc.is_connected
        detail: dict[str, object] = {"ready": connected and bool(state.targets), "nats": connected,
                                     "providers": sorted(state.targets), "trace_backlog": state.publisher.backlog}
        detail.update(state.routing.status())
        return detail

    add_health_routes(app, ready)
    state.metrics.trace_backlog.set_function(lambda: state.publisher.backlog)  # /metrics: PROXY_METRICS_PORT
    for endpoint in ENDPOINTS:
        app.router.add_route("*", endpoint.path, pipeline.handler(endpoint))
    for path, read in reads.ROUTES:
        app.router.add_get(path, read)
    add_dashboard(app, state)
    return app
