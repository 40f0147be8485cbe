"""POST /v1/messages on the provider emulator: Anthropic's wire format with the shared faults and request log."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import msgspec
from aiohttp import web

from services.emulator import anthropic_format as af
from services.emulator import anthropic_validate as av
from services.emulator import edge
from services.emulator.anthropic_cache import PromptCache
from services.emulator.faults import Fault

CACHE = web.AppKey("anthropic_prompt_cache", PromptCache)
"""Anthropic's prompt cache on /v1/messages (Bedrock's InvokeModel keeps its own)."""

_STATIC_HEADERS = {
    "anthropic-ratelimit-requests-limit": "4000",
    "anthropic-ratelimit-requests-remaining": "3999",
    "anthropic-ratelimit-input-tokens-limit": "2000000",
    "anthropic-ratelimit-output-tokens-limit": "400000",
}
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_ENCODER = msgspec.json.Encoder()


def _request_id() -> str:
    return "req_011C" + uuid.uuid4().hex[:20]


def _headers(request_id: str) -> dict[str, str]:
    return {**_STATIC_HEADERS, "request-id": request_id, "anthropic-organization-id": "emulator"}


def _json(status: int, body: dict[str, object], request_id: str, extra: dict[str, str] | None = None) -> web.Response:
    if body.get("type") == "error":
        body = {**body, "request_id": request_id}
    headers = {**_headers(request_id), **(extra or {})}
    return web.Response(status=status, body=_ENCODER.encode(body), content_type="application/json", headers=headers)


def _bearer(request: web.Request) -> str:
    """`Authorization: Bearer <key>`: how SDK 2.x sends an API key (`_api_key_auth` in anthropic/_client.py); the
    Messages API reference names `x-api-key`. Nothing else is a key here (not Azure's `api-key`)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _admit(
    request: web.Request, request_id: str, *, counting: bool = False
) -> tuple[edge.EmulatorState, object, web.Response | None]:
    """Record the request, then check the key, the version header and the body; returns any refusal."""
    state = request.app[edge.STATE]
    raw = await request.read()
    body = edge.decode(raw) if raw else edge.INVALID
    state.requests.add(request, raw, body)
    if not request.headers.get("x-api-key") and not _bearer(request):
        return state, body, _json(401, af.missing_key_body(), request_id)
    version = request.headers.get("anthropic-version")
    if not version:
        return state, body, _json(400, af.missing_version_body(), request_id)
    if state.settings.validate:
        if version not in av.versions():
            return state, body, _json(400, af.invalid(f"anthropic-version: invalid version '{version}'"), request_id)
        beta = bool(request.headers.get("anthropic-beta")) or request.query.get("beta") == "true"
        if body is not edge.INVALID and (wrong := av.check_body(body, counting=counting, beta=beta)) is not None:
            return state, body, _json(400, af.invalid(wrong), request_id)
    checked = {"max_tokens": af.counting_max_tokens(body), **body} if counting and isinstance(body, dict) else body
    error = af.validate_request(None if body is edge.INVALID else checked)
    if error is None and state.settings.validate and isinstance(body, dict):
        refused = av.check_capabilities(body, state.settings.catalog)
        error = None if refused is None else af.invalid(refused)
    return state, body, None if error is None else _json(400, error, request_id)


async def _intercept(
    request: web.Request, state: edge.EmulatorState, fault: Fault, model: str, request_id: str, *, streaming: bool
) -> web.Response | None:
    """Latency and failures of `fault` before the answer; a status fault with drop_after_chunks on a stream
    is left to `_stream`, which sends it as an `error` event after that many events (as Anthropic does)."""
    await edge.sleep_ms(fault.plan.latency_ms)
    if fault.hang:
        await edge.hang(request, state.stopping)
        return edge.drop_connection(request)
    if fault.status and not (streaming and fault.drop_after_chunks >= 0):
        plan = fault.plan
        body = af.status_error_body(fault.status, model=model, error_type=plan.error_type,
                                    message=plan.error_message)
        extra = {"retry-after": str(plan.retry_after)} if plan.retry_after is not None else None
        return _json(fault.status, body, request_id, extra)
    if fault.drop_after_chunks >= 0 and not streaming:
        return edge.drop_connection(request)
    return None


async def messages(request: web.Request) -> web.StreamResponse:
    request_id = _request_id()
    state, body, refusal = await _admit(request, request_id)
    if refusal is not None:
        return refusal
    assert isinstance(body, dict)
    streaming = body.get("stream") is True
    fault = state.faults.decide(body["model"])
    if (early := await _intercept(request, state, fault, body["model"], request_id, streaming=streaming)) is not None:
        return early
    cache = request.app[CACHE].use(body, model=body["model"], input_tokens=af.count_input_tokens(body))
    message = af.plan_message(body, message_id="msg_01" + uuid.uuid4().hex[:22], cache=cache)
    if not streaming:
        await edge.sleep_ms(fault.plan.ttft_ms)
        return _json(200, af.message_body(message), request_id)
    events = af.stream_events(message, chunk_words=state.settings.chunk_words)
    return await _stream(request, events, fault, body["model"], request_id)


async def _stream(
    request: web.Request, events: Iterable[af.Event], fault: Fault, model: str, request_id: str
) -> web.StreamResponse:
    """Send `events` as named SSE events, honouring the fault's timing, drop and mid-stream error."""
    response = web.StreamResponse(status=200, headers={**_headers(request_id), **_SSE_HEADERS})
    response.enable_chunked_encoding()
    drop = fault.drop_after_chunks
    try:
        await response.prepare(request)
        for index, (name, data) in enumerate(events):
            await edge.sleep_ms(fault.plan.ttft_ms if index == 0 else fault.plan.chunk_interval_ms)
            if index == drop:
                break
            await response.write(af.encode_event(name, data))
        if drop >= 0 and fault.status:
            plan = fault.plan
            error = af.status_error_body(fault.status, model=model, error_type=plan.error_type,
                                         message=plan.error_message)
            await response.write(af.encode_event("error", error))
        elif drop >= 0:
            edge.drop_connection(request)
            return response
        await response.write_eof()
    except ConnectionError:  # the client went away; nothing left to tell it
        pass
    return response


async def count_tokens(request: web.Request) -> web.Response:
    request_id = _request_id()
    state, body, refusal = await _admit(request, request_id, counting=True)
    if refusal is not None:
        return refusal
    assert isinstance(body, dict)
    fault = state.faults.decide(body["model"])  # counting can be overloaded or rate limited too
    if (early := await _intercept(request, state, fault, body["model"], request_id, streaming=False)) is not None:
        return early
    return _json(200, {"input_tokens": af.count_input_tokens({"max_tokens": af.counting_max_tokens(body), **body})},
                 request_id)


def register(app: web.Application) -> None:
    """Add Anthropic's routes to an emulator app made by `make_app` (before it starts); with validation on, the
    `anthropic` SDK must be importable (GroundTruthMissing names it and EMULATOR_VALIDATE=0 otherwise)."""
    if app[edge.STATE].settings.validate:
        av.require()
    app[CACHE] = PromptCache()
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
