"""The metered pipeline every model endpoint runs, in order: principal → decide → admit → protect → call →
finish (trace, router reports, settlement). Endpoints plug in through endpoint.Endpoint; nothing here knows
a wire format."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from catalog.schema import Model
from proto.billing import AdmitReply, AdmitRequest, KeySettings, Settle
from proto.routing import AttemptReport
from proto.trace import TraceEvent
from services.common.logs import get_logger
from services.proxy import caller, screening
from services.proxy.call import Call
from services.proxy.endpoint import Endpoint
from services.proxy.errors import (
    BodyTooLarge,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    ProxyError,
    UpstreamError,
    UpstreamUnavailable,
)
from services.proxy.payloads import Capture
from services.proxy.state import CALL, RENDER_ERROR, REQUEST_ID, STARTED, STATE, TRACE, ProxyState
from services.router.errors import RoutingError
from services.router.outcomes import backoff_s, retry_reason
from services.router.policy import Candidate, Decision
from services.router.rules import TAGS_HEADER, request_facts

# Upstream attempts per request (the first choice plus same-family fallbacks), all before the first byte.
MAX_ATTEMPTS = 3

log = get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def handler(endpoint: Endpoint) -> Handler:
    """The route handler of `endpoint`, registered for every method so that every answer on its path (a 405
    included) is in the endpoint's own error format."""

    async def handle(request: web.Request) -> web.StreamResponse:
        request[RENDER_ERROR] = endpoint.render_error
        if request.method != "POST":
            raise MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
        return await serve(request, endpoint)

    return handle


def too_large(state: ProxyState) -> BodyTooLarge:
    limit = state.max_body_bytes
    return BodyTooLarge(f"request body is larger than the limit of {limit} bytes (PROXY_MAX_BODY_BYTES)")


async def serve(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    """One metered request through every step; a ProxyError is traced and settled, then raised for the edge
    to render. The half-open probe the decision claimed is given back whenever no attempt was made."""
    state = request.app[STATE]
    principal = await caller.principal(request)
    call = Call(request_id=request[REQUEST_ID], principal=principal, started=request[STARTED],
                started_ms=int(time.time() * 1000), endpoint=endpoint.path)
    request[CALL] = call
    inline_trace = request.headers.get("Routeur-Trace", "").lower() == "true"
    admitted: AdmitReply | None = None
    state.metrics.in_flight.inc()
    try:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large(state) from None
        body = endpoint.parse(raw)
        call.parsed(body, len(raw))
        decision = _decide(state, request, call, body, len(raw))
        try:
            _check_servable(body, decision.model, endpoint)
            admitted = await _admit(state, request, call, endpoint, decision, body, raw)
            body = _protect(state, call, admitted, body)
            response, trace = await _attempts(state, request, call, endpoint, decision.candidates, body,
                                              inline_trace)
        finally:
            if not call.attempts:  # refused, blocked or failed before any upstream call
                state.routing.release(decision)
    except ProxyError as error:
        call.failed(error)
        _finish(state, request, call, call.trace(), admitted=admitted)
        raise
    finally:
        state.metrics.in_flight.dec()
    _finish(state, request, call, trace, admitted=admitted)
    if isinstance(response, web.Response) and not response.prepared:
        return endpoint.render(response, call)
    return response


def _decide(state: ProxyState, request: web.Request, call: Call, body: dict[str, Any], raw_size: int) -> Decision:
    """Routing, decided locally from the router's latest snapshot: rule or default, healthy routes first."""
    facts = request_facts(body, prompt_tokens=math.ceil(raw_size / 4), api_key_id=call.principal.api_key_id,
                          organization_id=call.principal.organization_id or "",
                          tags_header=request.headers.get(TAGS_HEADER))
    try:
        decision = state.routing.decide(facts)
    except RoutingError as exc:
        problem = ("does not exist or you do not have access to it" if exc.code == "model_not_found"
                   else "has no provider with credentials configured")
        raise NotFound(f"The model '{body['model']}' {problem}.", param="model", code=exc.code) from None
    call.routed(decision)
    return decision


def _check_servable(body: dict[str, Any], model: Model, endpoint: Endpoint) -> None:
    """Refuse what the resolved model cannot take (wrong kind, more output tokens than it can produce)."""
    if model.kind != endpoint.kind:
        raise InvalidRequest(f"The model '{body['model']}' is a {model.kind} model and cannot serve {endpoint.path}.",
                             param="model", code="model_not_supported")
    for name in ("max_tokens", "max_completion_tokens"):
        requested = body.get(name)
        if isinstance(requested, int) and model.max_output_tokens and requested > model.max_output_tokens:
            raise InvalidRequest(f"'{name}' is too large: {requested}. The model '{body['model']}' produces at "
                                 f"most {model.max_output_tokens} output tokens.", param=name, code="invalid_value")


async def _admit(state: ProxyState, request: web.Request, call: Call, endpoint: Endpoint, decision: Decision,
                 body: dict[str, Any], raw: bytes) -> AdmitReply:
    """Billing's admission, reserving the worst case over the candidates the request may be sent to."""
    candidates = decision.candidates[:MAX_ATTEMPTS]
    reserve_usd, reserve_tokens = max(endpoint.reserve(body, len(raw), c.model, c.route) for c in candidates)
    admitted = await state.billing.admit(AdmitRequest(
        request_id=call.request_id, reserve_usd=reserve_usd, reserve_tokens=reserve_tokens,
        api_key=caller.api_key(request), model=call.requested_model))
    settings = admitted.settings or KeySettings()
    call.admitted(admitted.rate_limits.headers(),
                  capture=Capture(caller_request=raw) if settings.archive_payloads else None)
    return admitted


def _protect(state: ProxyState, call: Call, admitted: AdmitReply, body: dict[str, Any]) -> dict[str, Any]:
    """The key's DLP policy on the body (fails closed): the body to send upstream."""
    settings = admitted.settings or KeySettings()
    redaction = screening.screen(state.dlp_policies, settings.dlp_policy, body)
    policy = state.dlp_policies.get(settings.dlp_policy)
    call.screened(redaction.count, redaction.mapping if redaction.restore and redaction.mapping else None,
                  active=policy is not None and policy.mode != "off")
    return redaction.body


async def _attempts(state: ProxyState, request: web.Request, call: Call, endpoint: Endpoint,
                    candidates: tuple[Candidate, ...], body: dict[str, Any],
                    inline_trace: bool) -> tuple[web.StreamResponse, TraceEvent]:
    """The endpoint's upstream call on each candidate in turn (at most MAX_ATTEMPTS) until one serves or fails
    in a way the next would not fix."""
    candidates = candidates[:MAX_ATTEMPTS]
    for index, candidate in enumerate(candidates):
        call.trying(candidate)
        try:
            return await endpoint.run(call, state.upstream, state.targets[candidate.route.provider], body, request,
                                      inline_trace)
        except (UpstreamError, UpstreamUnavailable):
            last = call.attempts[-1] if call.attempts else None
            reason = retry_reason(last.status_code, last.error_type) if last else None
            if reason is None or index == len(candidates) - 1:
                raise
            call.retrying(reason)
            await asyncio.sleep(backoff_s(index + 1))
    raise AssertionError("a decision always has a candidate")


def _finish(state: ProxyState, request: web.Request, call: Call, trace: TraceEvent, *,
            admitted: AdmitReply | None) -> None:
    """Publish the trace, report each attempt's outcome to the router, and settle what billing admitted
    (failures settle at cost 0, releasing the reservation). The payload archive follows in the edge."""
    state.publisher.submit(trace)
    request[TRACE] = trace
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
