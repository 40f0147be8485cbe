"""The read routes: /v1/models, /v1/traces/{id}, /v1/payloads/{id}, /v1/logs and /v1/usage (the tracer and
the archiver answer over NATS; a tracer reply's `code` decides 400 vs 503, never its message)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from aiohttp import web
from nats.errors import Error as NatsError

from proto import codec, subjects
from proto.payload import (
    PayloadFetchReply,
    PayloadFetchRequest,
    PayloadLinkReply,
    PayloadLinkRequest,
    fetch_reply_aad,
)
from proto.trace import (
    REPLY_BAD_QUERY,
    LogsQuery,
    LogsReply,
    TraceEvent,
    TraceQuery,
    TraceReply,
    UsageQuery,
    UsageReply,
)
from services.common import sealing
from services.common.ids import is_ulid
from services.common.sealing import PrivateSealKey, SealKeyRing
from services.proxy import caller, providers
from services.proxy.errors import InvalidRequest, NotFound, ProxyError, ServiceUnavailable
from services.proxy.state import REQUEST_ID, STATE, ProxyState


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    await caller.principal(request, allow_admin=True)
    created = int(time.mktime(time.strptime(state.catalog.as_of, "%Y-%m-%d")))
    data = [{"id": model.id, "object": "model", "created": created,
             "owned_by": (providers.first_route(model, state.targets) or model.routes[0]).provider}
            for model in providers.available_models(state.catalog, state.targets)]
    return _json(request, {"object": "list", "data": data})


async def get_trace(request: web.Request) -> web.Response:
    state = request.app[STATE]
    principal = await caller.principal(request, allow_admin=True)
    request_id = request.match_info["request_id"]
    if not is_ulid(request_id):
        raise NotFound(f"no trace with id {request_id[:40]!r}", code="trace_not_found")
    data = await _ask(state, subjects.TRACER_GET, TraceQuery(request_id, principal.organization_id))
    reply = codec.decode(data, TraceReply)
    raise_for_tracer_error(reply.error, reply.code, "trace")
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
    reply_key = PrivateSealKey.generate(sealing.ONE_TIME_KID)  # one per fetch: the body crosses the bus sealed to it
    fetch = PayloadFetchRequest(request_id, query, reply_key=reply_key.public.raw)
    try:
        reply = await state.nc.request(subjects.ARCHIVER_FETCH, codec.encode(fetch),
                                       timeout=max(state.query_timeout_s, 10.0))
    except (TimeoutError, NatsError):
        raise ServiceUnavailable("the archive service did not answer; try again shortly") from None
    fetched = codec.decode(reply.data, PayloadFetchReply)
    if fetched.status != 200:
        failure = ProxyError(fetched.error or "payload unavailable", status=fetched.status,
                             code=fetched.code or "payload_unavailable")
        failure.type = "invalid_request_error" if fetched.status < 500 else "server_error"
        raise failure
    if not fetched.sealed:  # an archiver older than sealing: its plaintext reply is not passed on
        raise ServiceUnavailable("the archive service is older than this proxy (its reply was not sealed); "
                                 "upgrade it and retry")
    try:
        body = await asyncio.to_thread(sealing.open_sealed, fetched.body, fetch_reply_aad(request_id),
                                       SealKeyRing([reply_key]))
    except sealing.SealingError:
        raise ServiceUnavailable("the archive service's reply did not open; retry") from None
    return web.Response(body=body, content_type="application/json",
                        headers={"x-request-id": request[REQUEST_ID], "Cache-Control": "no-store"})


async def list_logs(request: web.Request) -> web.Response:
    state = request.app[STATE]
    principal = await caller.principal(request, allow_admin=True)
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
    raise_for_tracer_error(reply.error, reply.code, "log")
    return _json(request, {"object": "list", "data": codec.to_builtins(reply.traces),
                           "next_cursor": reply.next_cursor})


async def get_usage(request: web.Request) -> web.Response:
    """`GET /v1/usage`: requests, tokens, spend, error rate and p50/p95 latency per bucket × group, from the
    rollups. An org key sees only its organization; the admin token sees all (or one, with `organization_id`)."""
    state = request.app[STATE]
    principal = await caller.principal(request, allow_admin=True)
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
    raise_for_tracer_error(reply.error, reply.code, "usage")
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


def raise_for_tracer_error(error: str | None, code: str, what: str) -> None:
    """A failed tracer reply as the caller's error: REPLY_BAD_QUERY is the caller's (400, with the tracer's
    message, which names what to change); anything else is an outage (503, the message stays in the logs)."""
    if error is None:
        return
    if code == REPLY_BAD_QUERY:
        raise InvalidRequest(error)
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


ROUTES = (("/v1/models", list_models), ("/v1/traces/{request_id}", get_trace),
          ("/v1/payloads/{request_id}", get_payload), ("/v1/logs", list_logs), ("/v1/usage", get_usage))
"""(path, handler) of every read route (GET)."""
