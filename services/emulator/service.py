"""HTTP edge of the provider emulator: OpenAI routes, fault injection, request recording, admin API."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any

import msgspec
from aiohttp import web

from services.common.health import add_health_routes
from services.emulator import openai_format as oa
from services.emulator.faults import Fault, FaultPlan, FaultRegistry, decode_plan
from services.emulator.settings import Settings

RECORDED_REQUESTS = 1000
CLIENT_MAX_SIZE = 64 * 1024 * 1024
HANG_POLL_S = 0.05

_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key"})
_STATIC_HEADERS = {
    "openai-version": "2020-10-01",
    "openai-organization": "emulator",
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-limit-tokens": "30000000",
    "x-ratelimit-remaining-tokens": "29999000",
    "x-ratelimit-reset-tokens": "2ms",
}
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_ENCODER = msgspec.json.Encoder()
INVALID = object()


class RequestLog:
    """The last requests received on /v1, newest last, with credential headers removed.

    A streamed answer also records its progress on its entry while it runs: `chunks_sent`, `bytes_sent` and,
    once it ends, `outcome` — `completed`, `client_closed` (the client went away mid-stream), `dropped`
    (a drop fault) or `stalled` (a stall fault, until the client gave up).
    """

    def __init__(self, maxlen: int = RECORDED_REQUESTS) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._seq = 0

    def add(self, request: web.Request, raw: bytes, body: object) -> dict[str, Any]:
        """Record a request; the entry is returned so a stream can note its progress on it."""
        self._seq += 1
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
        entry = {
            "seq": self._seq,
            "received_at": time.time(),
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": headers,
            "key_sha256": _key_fingerprint(request),
            "body": None if body is INVALID else body,
            "raw_body": raw.decode("utf-8", "replace") if body is INVALID and raw else None,
        }
        self._entries.append(entry)
        request[ENTRY] = entry
        return entry

    def last(self, limit: int | None = None) -> list[dict[str, Any]]:
        entries = list(self._entries)
        return entries if limit is None else entries[len(entries) - limit :] if limit else []

    def clear(self) -> None:
        self._entries.clear()


class EmulatorState:
    """Everything the handlers share, owned by one app (no module-level mutable state)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.faults = FaultRegistry(fallback=FaultPlan(latency_ms=settings.latency_ms), plans=settings.faults)
        self.requests = RequestLog()
        self.stopping = asyncio.Event()


STATE = web.AppKey("emulator_state", EmulatorState)
ENTRY = web.RequestKey("emulator_request_log_entry", dict)  # the request's RequestLog entry


# --------------------------------------------------------------------------- helpers


def _key_fingerprint(request: web.Request) -> str | None:
    """First 16 hex of sha256(bearer token), so tests can tell which upstream key was used."""
    token = bearer(request)
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else None


def bearer(request: web.Request) -> str:
    """The caller's key: `Authorization: Bearer …`, or Azure OpenAI's `api-key` header."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else request.headers.get("api-key", "").strip()


def _headers(started: float) -> dict[str, str]:
    return {
        **_STATIC_HEADERS,
        "x-request-id": "req_" + uuid.uuid4().hex,
        "openai-processing-ms": str(int((time.monotonic() - started) * 1000)),
    }


def _json(status: int, body: object, started: float, extra: dict[str, str] | None = None) -> web.Response:
    headers = _headers(started)
    if extra:
        headers.update(extra)
    return web.Response(status=status, body=_ENCODER.encode(body), content_type="application/json", headers=headers)


def decode(raw: bytes) -> object:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return INVALID


def drop_connection(request: web.Request) -> web.Response:
    """Close the socket without a (complete) response; aiohttp then skips the reply quietly."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response()


async def sleep_ms(ms: int) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


async def hang(request: web.Request, stopping: asyncio.Event) -> None:
    """Never answer: wait until the client gives up or the emulator shuts down."""
    while not stopping.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(HANG_POLL_S)


async def _intercept(
    request: web.Request, state: EmulatorState, fault: Fault, model: str, started: float, *, streaming: bool
) -> web.Response | None:
    """Apply the latency and failure parts of `fault`; a response to send instead of the answer, or None."""
    await sleep_ms(fault.plan.latency_ms)
    if fault.hang:
        await hang(request, state.stopping)
        return drop_connection(request)
    if fault.status:
        plan = fault.plan
        body = oa.status_error_body(
            fault.status, model=model, type=plan.error_type, code=plan.error_code, message=plan.error_message
        )
        extra = {"retry-after": str(plan.retry_after)} if plan.retry_after is not None else None
        return _json(fault.status, body, started, extra)
    if fault.drop_after_chunks >= 0 and not streaming:
        return drop_connection(request)
    return None


async def _admit(request: web.Request, started: float) -> tuple[EmulatorState, object, web.Response | None]:
    """Read and record the request, then check the API key; returns the state, the body and any refusal."""
    state = request.app[STATE]
    raw = await request.read()
    body = decode(raw) if raw else INVALID
    state.requests.add(request, raw, body)
    if not bearer(request):
        return state, body, _json(401, oa.missing_key_body(), started)
    return state, body, None


# --------------------------------------------------------------------------- OpenAI routes


async def azure_chat_completions(request: web.Request) -> web.StreamResponse:
    """Azure OpenAI's shape of the same call: deployment in the path, `api-version` required, `api-key` header."""
    if not request.query.get("api-version"):
        return _json(404, {"error": {"code": "404", "message": "Resource not found"}}, time.monotonic())
    return await chat_completions(request)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.monotonic()
    state, body, refusal = await _admit(request, started)
    if refusal is not None:
        return refusal
    error = oa.validate_chat_request(None if body is INVALID else body)
    if error is not None:
        return _json(400, error, started)
    assert isinstance(body, dict)
    streaming = bool(body.get("stream"))
    fault = state.faults.decide(body["model"])
    if (early := await _intercept(request, state, fault, body["model"], started, streaming=streaming)) is not None:
        return early
    reply = oa.plan_reply(body)
    completion_id = "chatcmpl-" + uuid.uuid4().hex[:29]
    created = int(time.time())
    if not streaming:
        await sleep_ms(fault.plan.ttft_ms)
        return _json(200, oa.completion_body(reply, completion_id=completion_id, created=created), started)
    options = body.get("stream_options") or {}
    chunks = oa.stream_chunks(
        reply,
        completion_id=completion_id,
        created=created,
        chunk_words=state.settings.chunk_words,
        include_usage=options.get("include_usage") is True and not fault.plan.omit_usage,
        include_obfuscation=options.get("include_obfuscation", True) is not False,
    )
    return await _stream(request, chunks, fault, started)


async def _stream(
    request: web.Request, chunks: Iterable[dict[str, Any]], fault: Fault, started: float
) -> web.StreamResponse:
    """Send `chunks` as SSE `data:` events then `data: [DONE]`, honouring the fault's timing, drop and stall;
    progress and outcome are noted on the request's log entry."""
    response = web.StreamResponse(status=200, headers={**_headers(started), **_SSE_HEADERS})
    response.enable_chunked_encoding()
    drop, stall = fault.drop_after_chunks, fault.stall_after_chunks
    entry: dict[str, Any] = request.get(ENTRY, {})
    entry.update(chunks_sent=0, bytes_sent=0, outcome=None)
    state = request.app[STATE]
    try:
        await response.prepare(request)
        for index, chunk in enumerate(chunks):
            await sleep_ms(fault.plan.ttft_ms if index == 0 else fault.plan.chunk_interval_ms)
            if index == drop:
                entry["outcome"] = "dropped"
                drop_connection(request)
                return response
            if index == stall:
                await hang(request, state.stopping)
                entry["outcome"] = "stalled"
                drop_connection(request)
                return response
            data = b"data: " + _ENCODER.encode(chunk) + b"\n\n"
            await response.write(data)
            entry["chunks_sent"] += 1
            entry["bytes_sent"] += len(data)
        if drop >= 0:
            entry["outcome"] = "dropped"
            drop_connection(request)
            return response
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        entry["outcome"] = "completed"
    except ConnectionError:  # the client went away; nothing left to tell it
        entry["outcome"] = "client_closed"
    except asyncio.CancelledError:  # the server cancelled the handler because the client went away
        entry["outcome"] = "client_closed"
        raise
    return response


async def list_models(request: web.Request) -> web.Response:
    started = time.monotonic()
    _, _, refusal = await _admit(request, started)
    return refusal if refusal is not None else _json(200, oa.models_body(), started)


async def retrieve_model(request: web.Request) -> web.Response:
    started = time.monotonic()
    _, _, refusal = await _admit(request, started)
    return refusal if refusal is not None else _json(200, oa.model_body(request.match_info["model"]), started)


async def embeddings(request: web.Request) -> web.Response:
    started = time.monotonic()
    state, body, refusal = await _admit(request, started)
    if refusal is not None:
        return refusal
    error = oa.validate_embedding_request(None if body is INVALID else body)
    if error is not None:
        return _json(400, error, started)
    assert isinstance(body, dict)
    fault = state.faults.decide(body["model"])
    if (early := await _intercept(request, state, fault, body["model"], started, streaming=False)) is not None:
        return early
    await sleep_ms(fault.plan.ttft_ms)
    return _json(200, oa.embedding_body(body), started)


async def unknown_route(request: web.Request) -> web.Response:
    started = time.monotonic()
    _, _, refusal = await _admit(request, started)
    return refusal if refusal is not None else _json(404, oa.not_found_body(request.method, request.path), started)


# --------------------------------------------------------------------------- admin routes (/_emulator)


async def put_fault(request: web.Request) -> web.Response:
    try:
        plan = decode_plan(await request.read())
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return web.json_response(oa.error_body(f"Invalid fault plan: {exc}"), status=400)
    model = request.match_info["model"]
    request.app[STATE].faults.set(model, plan)
    return web.Response(body=_ENCODER.encode({"model": model, "plan": plan}), content_type="application/json")


async def get_faults(request: web.Request) -> web.Response:
    return web.Response(body=_ENCODER.encode(request.app[STATE].faults.snapshot()), content_type="application/json")


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.clear()
    return web.Response(status=204)


async def get_requests(request: web.Request) -> web.Response:
    raw_limit = request.query.get("limit")
    limit: int | None = None
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = -1
        if limit < 0:
            return web.json_response(
                oa.error_body(f"limit must be a non-negative integer, got {raw_limit!r}"), status=400
            )
    entries = request.app[STATE].requests.last(limit)
    return web.Response(body=_ENCODER.encode({"requests": entries}), content_type="application/json")


async def clear_requests(request: web.Request) -> web.Response:
    request.app[STATE].requests.clear()
    return web.Response(status=204)


# --------------------------------------------------------------------------- app


def make_app(settings: Settings) -> web.Application:
    """The emulator app: OpenAI-compatible /v1 routes, /_emulator admin routes and health probes."""
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    state = EmulatorState(settings)
    app[STATE] = state

    async def on_shutdown(_: web.Application) -> None:
        state.stopping.set()

    async def ready() -> dict[str, object]:
        return {"ready": True}

    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", azure_chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_route("*", "/v1/{tail:.*}", unknown_route)
    app.router.add_get("/_emulator/faults", get_faults)
    app.router.add_put("/_emulator/faults/{model:.+}", put_fault)
    app.router.add_delete("/_emulator/faults", clear_faults)
    app.router.add_get("/_emulator/requests", get_requests)
    app.router.add_delete("/_emulator/requests", clear_requests)
    add_health_routes(app, ready)
    # The other wire formats register themselves; imported here because they import this module.
    from services.emulator import anthropic_routes, bedrock_routes, gemini_routes

    anthropic_routes.register(app)
    gemini_routes.register(app)
    bedrock_routes.register(app)
    return app
