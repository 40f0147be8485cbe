"""Proxy HTTP edge: middleware (request id, errors, log line) and the public /v1 routes."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec
import structlog
from aiohttp import web
from nats.aio.client import Client
from nats.errors import Error as NatsError

from catalog.schema import Catalog, Model, Route
from proto import codec, subjects
from proto.billing import AdmitReply, AdmitRequest, KeySettings, Settle
from proto.payload import PayloadFetchReply, PayloadFetchRequest, PayloadLinkReply, PayloadLinkRequest
from proto.routing import AttemptReport
from proto.trace import LogsQuery, LogsReply, TraceEvent, TraceQuery, TraceReply, UsageQuery, UsageReply
from services.common.health import add_health_routes
from services.common.ids import is_ulid, new_ulid
from services.common.logs import ProtocolLog, get_logger
from services.common.metrics import add_metrics_route
from services.proxy import chat, dlp, embeddings, messages, providers, screening
from services.proxy import openai_wire as wire
from services.proxy.auth import ADMIN, KeyRing, Principal, well_formed
from services.proxy.billing_client import BillingClient, reservation
from services.proxy.dashboard import add_dashboard, session_credential
from services.proxy.errors import (
    AuthError,
    BodyTooLarge,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    ProxyError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamUnavailable,
    error_response,
)
from services.proxy.metrics import ProxyMetrics
from services.proxy.payloads import Capture, PayloadPublisher
from services.proxy.providers import Target
from services.proxy.publisher import TracePublisher
from services.router.client import RoutingView
from services.router.errors import RoutingError
from services.router.outcomes import backoff_s, retry_reason
from services.router.policy import Decision
from services.router.rules import TAGS_HEADER, request_facts

# Upstream attempts per request (the first choice plus same-family fallbacks), all before the first byte.
MAX_ATTEMPTS = 3

log = get_logger()


@dataclass(frozen=True)
class ProxyState:
    keys: KeyRing
    billing: BillingClient
    routing: RoutingView
    catalog: Catalog
    targets: dict[str, Target]
    upstream: chat.Upstream
    publisher: TracePublisher
    nc: Client
    query_timeout_s: float
    max_body_bytes: int
    metrics: ProxyMetrics
    payloads: PayloadPublisher | None = None
    dlp_policies: Mapping[str, dlp.Policy] = field(default_factory=lambda: dlp.load_policies(None))
    public_url: str = ""  # the base of minted payload links; empty = the request's own scheme and host
    payload_max_bytes: int = 8 * 1024 * 1024


STATE = web.AppKey("state", ProxyState)
REQUEST_ID = "request_id"
UPSTREAM_S = "upstream_s"
ARCHIVE = "archive"  # (Capture, TraceEvent) of a request whose key archives payloads
OVERHEAD_HEADER = chat.OVERHEAD_HEADER


@web.middleware
async def edge(request: web.Request, handler: Any) -> web.StreamResponse:
    """Give every request an id, bind it for logs, and turn every failure into OpenAI-style JSON."""
    started = time.perf_counter()
    request_id = new_ulid()
    request[REQUEST_ID] = request_id
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await _respond(request, handler, request_id)
        if not response.prepared and OVERHEAD_HEADER not in response.headers:
            overhead = time.perf_counter() - started - request.get(UPSTREAM_S, 0.0)
            response.headers[OVERHEAD_HEADER] = f"{overhead * 1000:.3f}"
        if ARCHIVE in request:
            _archive(request, response)
        return response
    finally:
        structlog.contextvars.unbind_contextvars("request_id")


async def _respond(request: web.Request, handler: Any, request_id: str) -> web.StreamResponse:
    # /v1/messages callers get Anthropic's error shape even from the router (405) or an unexpected failure
    render = messages.error_response if request.path == messages.ENDPOINT else error_response
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except ProxyError as error:
        return render(error, request_id)
    except web.HTTPRequestEntityTooLarge:
        return render(_too_large(request), request_id)
    except web.HTTPMethodNotAllowed:
        return render(MethodNotAllowed(f"{request.method} is not allowed on {request.path}"), request_id)
    except web.HTTPNotFound:
        return render(NotFound(f"no route for {request.method} {request.path}", code="unknown_url"), request_id)
    except web.HTTPException as exc:
        failure = ProxyError(exc.reason, status=exc.status, code="http_error")
        failure.type = "invalid_request_error" if exc.status < 500 else "server_error"
        return render(failure, request_id)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled_error", path=request.path)
        return render(ProxyError("internal error; the request id identifies it in the logs"), request_id)


def _archive(request: web.Request, response: web.StreamResponse) -> None:
    """Hand the four layers to the payload publisher once the caller's response is final (never raises)."""
    state = request.app[STATE]
    capture, trace = request[ARCHIVE]
    if state.payloads is None:
        return
    try:
        state.payloads.submit(capture.archive(trace, response, max_bytes=state.payload_max_bytes))
    except Exception as exc:  # archiving must never fail the request
        log.error("payload_capture_failed", error=type(exc).__name__)


def _too_large(request: web.Request) -> BodyTooLarge:
    limit = request.app[STATE].max_body_bytes
    return BodyTooLarge(f"request body is larger than the limit of {limit} bytes (PROXY_MAX_BODY_BYTES)")


def _api_key(request: web.Request) -> str:
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        return authorization[7:].strip()
    return request.headers.get("x-api-key", "").strip()


async def _principal(request: web.Request, *, allow_admin: bool = False) -> Principal:
    """The admin (when allowed and the admin token is presented) or the key's owner, as billing says."""
    state = request.app[STATE]
    key = _api_key(request) or session_credential(request)  # the dashboard's cookie, on GET/HEAD only
    if not key:
        raise AuthError("No API key provided. Send it as 'Authorization: Bearer <key>'.")
    if not well_formed(key):
        raise AuthError("Incorrect API key provided: keys are printable ASCII.")
    if allow_admin and state.keys.authenticate(f"Bearer {key}", allow_admin=True) is not None:
        return ADMIN
    reply = await state.billing.authenticate(key)
    return Principal(organization_id=reply.organization_id, api_key_id=reply.api_key_id or "")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await serve_chat(request, parse=wire.parse_body, endpoint=chat.ENDPOINT)


async def serve_chat(request: web.Request, *, parse: Callable[[bytes], dict[str, Any]], endpoint: str,
                     stream_class: type[chat.CallerStream] = chat.CallerStream) -> web.StreamResponse:
    """The chat pipeline for any inbound format whose `parse` yields an OpenAI chat body. Non-streaming
    answers are OpenAI JSON; streams are written as OpenAI SSE events through `stream_class`."""

    async def run(call: chat.Call, state: ProxyState, target: Target, body: dict[str, Any],
                  inline_trace: bool) -> tuple[web.StreamResponse, TraceEvent]:
        if call.stream:
            return await chat.stream(call, state.upstream, target, body, request, inline_trace=inline_trace,
                                     stream_class=stream_class)
        return await chat.complete(call, state.upstream, target, body, inline_trace=inline_trace)

    return await serve(request, parse=parse, endpoint=endpoint, reserve=reservation, run=run)


async def create_embeddings(request: web.Request) -> web.StreamResponse:
    async def run(call: chat.Call, state: ProxyState, target: Target, body: dict[str, Any],
                  inline_trace: bool) -> tuple[web.StreamResponse, TraceEvent]:
        return await embeddings.run(call, state.upstream, target, body, inline_trace=inline_trace)

    return await serve(request, parse=embeddings.parse_body, endpoint=embeddings.ENDPOINT, kind="embedding",
                       reserve=embeddings.reservation, run=run)


Reserve = Callable[[dict[str, Any], int, Model, Route], tuple[Decimal, int]]
Run = Callable[[chat.Call, "ProxyState", Target, dict[str, Any], bool],
               Awaitable[tuple[web.StreamResponse, TraceEvent]]]


async def serve(request: web.Request, *, parse: Callable[[bytes], dict[str, Any]], endpoint: str, reserve: Reserve,
                run: Run, kind: str = "chat") -> web.StreamResponse:
    """One metered request: auth, validation, routing, admission, the upstream call (`run`), trace, settlement."""
    state = request.app[STATE]
    principal = await _principal(request)
    call = chat.Call(request_id=request[REQUEST_ID], principal=principal, started=time.perf_counter(),
                     started_ms=int(time.time() * 1000), endpoint=endpoint)
    inline_trace = request.headers.get("Routeur-Trace", "").lower() == "true"
    admitted: AdmitReply | None = None
    state.metrics.in_flight.inc()
    try:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _too_large(request) from None
        body = parse(raw)
        call.prompt_bytes = len(raw)
        decision = _decide(state, request, call, body, len(raw), kind)
        candidates = decision.candidates[:MAX_ATTEMPTS]
        reserve_usd, reserve_tokens = max(reserve(body, len(raw), c.model, c.route) for c in candidates)
        try:
            admitted = await state.billing.admit(AdmitRequest(
                request_id=call.request_id, reserve_usd=reserve_usd, reserve_tokens=reserve_tokens,
                api_key=_api_key(request), model=call.requested_model))
        except ProxyError:
            state.routing.release(decision)
            raise
        call.response_headers.update(admitted.rate_limits.headers())
        call.fallback_reason = decision.fallback_reason
        body = _protect(state, call, admitted.settings or KeySettings(), body, raw)
        for index, candidate in enumerate(candidates):
            call.model, call.route = candidate.model, candidate.route
            try:
                response, trace = await run(call, state, state.targets[candidate.route.provider], body, inline_trace)
                break
            except (UpstreamError, UpstreamUnavailable):
                last = call.attempts[-1] if call.attempts else None
                reason = retry_reason(last.status_code, last.error_type) if last else None
                if reason is None or index == len(candidates) - 1:
                    raise
                call.fallback_reason = reason
                await asyncio.sleep(backoff_s(index + 1))
    except ProxyError as error:
        call.fail(error)
        if call.upstream_ended:
            request[UPSTREAM_S] = call.upstream_ended - call.upstream_started
        _finish(state, call.trace(), admitted=admitted, request=request, call=call)
        raise
    finally:
        state.metrics.in_flight.dec()
    _finish(state, trace, admitted=admitted, request=request, call=call)
    return response


def _protect(state: ProxyState, call: chat.Call, settings: KeySettings, body: dict[str, Any],
             raw: bytes) -> dict[str, Any]:
    """The key's DLP policy on the body (fails closed), and payload capture when the key archives."""
    if settings.archive_payloads:
        call.capture = Capture(caller_request=raw)
    redaction = screening.screen(state.dlp_policies, settings.dlp_policy, body)
    call.redactions = redaction.count
    if redaction.restore and redaction.mapping:
        call.restore = redaction.mapping
    return redaction.body


def _decide(state: ProxyState, request: web.Request, call: chat.Call, body: dict[str, Any], raw_size: int,
            kind: str) -> Decision:
    """Routing, decided locally from the router's latest snapshot: rule or default, healthy routes first."""
    call.requested_model = body["model"]
    call.stream = bool(body.get("stream"))
    facts = request_facts(body, prompt_tokens=math.ceil(raw_size / 4), api_key_id=call.principal.api_key_id,
                          organization_id=call.principal.organization_id or "",
                          tags_header=request.headers.get(TAGS_HEADER))
    try:
        decision = state.routing.decide(facts)
    except RoutingError as exc:
        problem = ("does not exist or you do not have access to it" if exc.code == "model_not_found"
                   else "has no provider with credentials configured")
        raise NotFound(f"The model '{body['model']}' {problem}.", param="model", code=exc.code) from None
    refusal = _unservable(body, decision.model, call.endpoint, kind)
    if refusal is not None:
        state.routing.release(decision)
        raise refusal
    call.model, call.route = decision.model, decision.candidates[0].route
    call.route_reason = decision.route_reason
    call.first_choice = decision.first_choice.key
    return decision


def _unservable(body: dict[str, Any], model: Model, endpoint: str, kind: str) -> InvalidRequest | None:
    """Why the resolved model cannot take this request (wrong kind, more output tokens than it can produce)."""
    if model.kind != kind:
        return InvalidRequest(f"The model '{body['model']}' is a {model.kind} model and cannot serve {endpoint}.",
                              param="model", code="model_not_supported")
    for name in ("max_tokens", "max_completion_tokens"):
        requested = body.get(name)
        if isinstance(requested, int) and model.max_output_tokens and requested > model.max_output_tokens:
            return InvalidRequest(f"'{name}' is too large: {requested}. The model '{body['model']}' produces at "
                                  f"most {model.max_output_tokens} output tokens.", param=name, code="invalid_value")
    return None


def _finish(state: ProxyState, trace: TraceEvent, *, admitted: AdmitReply | None, request: web.Request,
            call: chat.Call) -> None:
    """Publish the trace, report each attempt's outcome to the router, and settle what billing admitted
    (failures settle at cost 0, releasing the reservation). The payload archive follows in `edge`."""
    state.publisher.submit(trace)
    if call.capture is not None:
        request[ARCHIVE] = (call.capture, trace)
    for attempt in trace.attempts:
        state.routing.report_nowait(AttemptReport(attempt.provider, attempt.upstream_model, attempt.status_code,
                                                  attempt.latency_ms, error_type=attempt.error_type))
    if admitted is not None:
        state.billing.settle(Settle(request_id=trace.request_id, api_key_id=trace.api_key_id,
                                    organization_id=trace.organization_id, cost_usd=trace.cost_usd,
                                    total_tokens=trace.total_tokens))
    state.metrics.observe(trace)
    # the model only once it resolved to a catalog entry: an unknown `model` is caller text (a pasted key, a prompt)
    log.info("request", status=trace.status_code, model=call.model.id if call.model else None,
             provider=trace.provider, stream=trace.stream, latency_ms=trace.latency_ms, tokens=trace.total_tokens)


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    await _principal(request, allow_admin=True)
    created = int(time.mktime(time.strptime(state.catalog.as_of, "%Y-%m-%d")))
    data = [{"id": model.id, "object": "model", "created": created,
             "owned_by": (providers.first_route(model, state.targets) or model.routes[0]).provider}
            for model in providers.available_models(state.catalog, state.targets)]
    return _json(request, {"object": "list", "data": data})


async def get_trace(request: web.Request) -> web.Response:
    state = request.app[STATE]
    principal = await _principal(request, allow_admin=True)
    request_id = request.match_info["request_id"]
    if not is_ulid(request_id):
        raise NotFound(f"no trace with id {request_id[:40]!r}", code="trace_not_found")
    data = await _ask(state, subjects.TRACER_GET, TraceQuery(request_id, principal.organization_id))
    reply = codec.decode(data, TraceReply)
    if reply.error:
        raise ServiceUnavailable(f"trace lookup failed: {reply.error}")
    if reply.trace is None:
        raise NotFound(f"no trace with id {request_id!r} (traces appear a moment after the request)",
                       code="trace_not_found")
    trace = msgspec.structs.replace(reply.trace, payload_url=await _payload_url(request, reply.trace))
    return _json(request, codec.to_builtins(trace))


async def _payload_url(request: web.Request, trace: TraceEvent) -> str | None:
    """A freshly minted signed link to the trace's payload archive, when the archiver holds one. A slow or
    absent archiver leaves the field empty instead of failing the trace lookup."""
    state = request.app[STATE]
    try:
        data = await _ask(state, subjects.ARCHIVER_LINK, PayloadLinkRequest(trace.request_id, trace.organization_id))
        reply = codec.decode(data, PayloadLinkReply)
    except (ServiceUnavailable, msgspec.DecodeError):
        return None
    if reply.path is None:
        return None
    return _public_base(request) + reply.path


def _public_base(request: web.Request) -> str:
    state = request.app[STATE]
    if state.public_url:
        return state.public_url.rstrip("/")
    return f"{request.scheme}://{request.host}"


async def get_payload(request: web.Request) -> web.Response:
    """`GET /v1/payloads/{request_id}?org=…&expires=…&sig=…`: the signed link is the credential (a plain curl
    opens it); the archiver verifies it, decrypts the archive and answers the four layers as JSON."""
    state = request.app[STATE]
    request_id = request.match_info["request_id"]
    query = {name: request.query[name] for name in ("org", "expires", "sig") if name in request.query}
    if not is_ulid(request_id) or len(query) != 3 or any(len(value) > 200 for value in query.values()):
        raise ProxyError("payload link is invalid or has expired", status=403, code="invalid_payload_link")
    try:
        reply = await state.nc.request(subjects.ARCHIVER_FETCH, codec.encode(PayloadFetchRequest(request_id, query)),
                                       timeout=max(state.query_timeout_s, 10.0))
    except (TimeoutError, NatsError):
        raise ServiceUnavailable("the archive service did not answer; try again shortly") from None
    fetched = codec.decode(reply.data, PayloadFetchReply)
    if fetched.status != 200:
        failure = ProxyError(fetched.error or "payload unavailable", status=fetched.status,
                             code=fetched.code or "payload_unavailable")
        failure.type = "invalid_request_error" if fetched.status < 500 else "server_error"
        raise failure
    return web.Response(body=fetched.body, content_type="application/json",
                        headers={"x-request-id": request[REQUEST_ID], "Cache-Control": "no-store"})


async def list_logs(request: web.Request) -> web.Response:
    state = request.app[STATE]
    principal = await _principal(request, allow_admin=True)
    query = request.query
    try:
        logs_query = LogsQuery(
            organization_id=principal.organization_id if not principal.is_admin else query.get("organization_id"),
            api_key_id=query.get("api_key_id"), model=query.get("model"), provider=query.get("provider"),
            status_code=_int_param(query, "status_code"), limit=_int_param(query, "limit") or 50,
            cursor=query.get("cursor"), route_reason=query.get("route_reason"),
            has_fallback=_bool_param(query, "has_fallback"),
            since_ms=_int_param(query, "since_ms"), until_ms=_int_param(query, "until_ms"))
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    if logs_query.cursor is not None and not _valid_cursor(logs_query.cursor):
        raise InvalidRequest("'cursor' must be a next_cursor value from a previous page", param="cursor")
    reply = codec.decode(await _ask(state, subjects.TRACER_LOGS, logs_query), LogsReply)
    _raise_for_tracer_error(reply.error, "log")
    return _json(request, {"object": "list", "data": codec.to_builtins(reply.traces),
                           "next_cursor": reply.next_cursor})


async def get_usage(request: web.Request) -> web.Response:
    """`GET /v1/usage`: requests, tokens, spend, error rate and p50/p95 latency per bucket × group, from the
    rollups. An org key sees only its organization; the admin token sees all (or one, with `organization_id`)."""
    state = request.app[STATE]
    principal = await _principal(request, allow_admin=True)
    query = request.query
    try:
        usage_query = UsageQuery(
            organization_id=principal.organization_id if not principal.is_admin else query.get("organization_id"),
            group_by=query.get("group_by", "model"), bucket=query.get("bucket", "hour"),
            since_ms=_int_param(query, "since_ms"), until_ms=_int_param(query, "until_ms"),
            api_key_id=query.get("api_key_id"), model=query.get("model"), provider=query.get("provider"))
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    reply = codec.decode(await _ask(state, subjects.TRACER_USAGE, usage_query), UsageReply)
    _raise_for_tracer_error(reply.error, "usage")
    return _json(request, {"object": "usage", "group_by": usage_query.group_by, "bucket": usage_query.bucket,
                           "since_ms": reply.since_ms, "until_ms": reply.until_ms,
                           "data": codec.to_builtins(reply.rows),
                           "totals": codec.to_builtins(reply.totals) if reply.totals else None})


def _int_param(query: Any, name: str) -> int | None:
    """An optional integer query parameter; ValueError (→ 400) names the parameter."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    value = raw.strip()
    if not value.lstrip("-").isdigit() or len(value) > 19:
        raise ValueError(f"'{name}' must be an integer")
    return int(value)


def _bool_param(query: Any, name: str) -> bool | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"'{name}' must be true or false")


def _raise_for_tracer_error(error: str | None, what: str) -> None:
    """The tracer's validation messages are safe to show (400); anything else is an outage (503)."""
    if error is None:
        return
    if error.startswith("bad query: "):
        raise InvalidRequest(error.removeprefix("bad query: "))
    raise ServiceUnavailable(f"{what} query failed; try again shortly")


def _valid_cursor(cursor: str) -> bool:
    millis, _, request_id = cursor.partition(":")
    return millis.isdigit() and is_ulid(request_id)


async def _ask(state: ProxyState, subject: str, message: Any) -> bytes:
    try:
        reply = await state.nc.request(subject, codec.encode(message), timeout=state.query_timeout_s)
    except (TimeoutError, NatsError):
        raise ServiceUnavailable("the trace service did not answer; try again shortly") from None
    return reply.data  # type: ignore[no-any-return]


def _json(request: web.Request, payload: Any) -> web.Response:
    return web.Response(body=codec.encode(payload), content_type="application/json",
                        headers={"x-request-id": request[REQUEST_ID]})


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
    state.metrics.trace_backlog.set_function(lambda: state.publisher.backlog)
    add_metrics_route(app, state.metrics.registry)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", create_embeddings)
    app.router.add_post("/v1/messages", messages.messages)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/traces/{request_id}", get_trace)
    app.router.add_get("/v1/payloads/{request_id}", get_payload)
    app.router.add_get("/v1/logs", list_logs)
    app.router.add_get("/v1/usage", get_usage)
    add_dashboard(app, state)
    return app


def client_session() -> aiohttp.ClientSession:
    """One keep-alive session for every upstream host."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30, enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True)
