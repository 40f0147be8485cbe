"""Gemini v1beta routes of the provider emulator: generateContent, streamGenerateContent, embedContent(s)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from aiohttp import web
from multidict import CIMultiDict, MultiDict

from services.emulator import gemini_format as gf
from services.emulator import gemini_validate as gv
from services.emulator.edge import (
    INVALID,
    STATE,
    EmulatorState,
    decode,
    drop_connection,
    hang,
    sleep_ms,
)
from services.emulator.faults import Fault

KEY_HEADER = "x-goog-api-key"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Content-Disposition": "attachment", "Cache-Control": "no-cache"}
_ENCODER = msgspec.json.Encoder()


def _api_key(request: web.Request) -> str:
    return request.headers.get(KEY_HEADER, "").strip() or request.query.get("key", "").strip()


def _headers(started: float) -> dict[str, str]:
    return {"Server-Timing": f"gfet4t7; dur={int((time.monotonic() - started) * 1000)}",
            "Vary": "Origin, X-Origin, Referer", "X-Content-Type-Options": "nosniff"}


def _json(status: int, body: object, started: float, extra: dict[str, str] | None = None) -> web.Response:
    """Google pretty-prints its JSON bodies with two-space indentation."""
    headers = {**_headers(started), **(extra or {})}
    return web.Response(status=status, text=json.dumps(body, indent=2, ensure_ascii=False),
                        content_type="application/json", charset="UTF-8", headers=headers)


def _loggable(request: web.Request) -> web.Request:
    """A copy to log, its API key moved out of header and query into `Authorization` (which the log hides)."""
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() != KEY_HEADER)
    key = _api_key(request)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    query = MultiDict((k, v) for k, v in request.query.items() if k != "key")
    return request.clone(headers=headers, rel_url=request.rel_url.with_query(query))


async def _intercept(
    request: web.Request, state: EmulatorState, fault: Fault, model: str, started: float, *, streaming: bool
) -> web.StreamResponse | None:
    """Apply the fault's latency and failures; `error_code`, when set, replaces the Google `status` string."""
    await sleep_ms(fault.plan.latency_ms)
    if fault.hang:
        await hang(request, state.stopping)
        return drop_connection(request)
    if fault.status:
        plan = fault.plan
        body = gf.status_error_body(fault.status, model=model, message=plan.error_message,
                                    google_status=plan.error_code)
        extra = None
        if plan.retry_after is not None:
            extra = {"retry-after": str(plan.retry_after)}
            body["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                         "retryDelay": f"{plan.retry_after}s"}]
        return _json(fault.status, body, started, extra)
    if fault.drop_after_chunks >= 0 and not streaming:
        return drop_connection(request)
    return None


async def _stream(
    request: web.Request, chunks: Iterable[dict[str, Any]], fault: Fault, started: float, *, sse: bool
) -> web.StreamResponse:
    """`alt=sse`: `data: {json}` events ending in CRLF CRLF, no terminator; otherwise one JSON array, streamed."""
    headers = {**_headers(started), **(_SSE_HEADERS if sse else {"Content-Type": "application/json; charset=UTF-8"})}
    response = web.StreamResponse(status=200, headers=headers)
    response.enable_chunked_encoding()
    drop = fault.drop_after_chunks
    try:
        await response.prepare(request)
        for index, chunk in enumerate(chunks):
            await sleep_ms(fault.plan.ttft_ms if index == 0 else fault.plan.chunk_interval_ms)
            if index == drop:
                drop_connection(request)
                return response
            if sse:
                await response.write(b"data: " + _ENCODER.encode(chunk) + b"\r\n\r\n")
            else:
                await response.write((b"[" if index == 0 else b"\n,\r\n") + json.dumps(chunk, indent=2).encode())
        if drop >= 0:
            drop_connection(request)
            return response
        if not sse:
            await response.write(b"\n]")
        await response.write_eof()
    except ConnectionError:  # the client went away; nothing left to tell it
        pass
    return response


async def _generate(request: web.Request, state: EmulatorState, model: str, body: object, started: float,
                    *, streaming: bool) -> web.StreamResponse:
    if state.settings.validate and (refused := gv.check_request(body)) is not None:
        return _json(400, gf.error_body(400, refused), started)
    normalised, error = gf.validate_generate_request(body)
    if error is not None or normalised is None:
        return _json(400, error, started)
    if state.settings.validate and (refused := gv.check_capabilities(model, normalised, state.settings.catalog)):
        return _json(400, gf.error_body(400, refused), started)
    fault = state.faults.decide(model)
    if (early := await _intercept(request, state, fault, model, started, streaming=streaming)) is not None:
        return early
    answer = gf.plan(model, normalised)
    response_id = secrets.token_urlsafe(17)[:23]
    if not streaming:
        await sleep_ms(fault.plan.ttft_ms)
        return _json(200, gf.response_body(answer, response_id=response_id), started)
    chunks = gf.stream_chunks(answer, response_id=response_id, chunk_words=state.settings.chunk_words)
    return await _stream(request, chunks, fault, started, sse=request.query.get("alt") == "sse")


async def _embed(request: web.Request, state: EmulatorState, model: str, body: object, started: float,
                 *, batch: bool) -> web.StreamResponse:
    if state.settings.validate and (refused := gv.check_embed_request(body, batch=batch)) is not None:
        return _json(400, gf.error_body(400, refused), started)
    status, answer = gf.embed_body(model, body, batch=batch)
    if status != 200:
        return _json(status, answer, started)
    fault = state.faults.decide(model)
    if (early := await _intercept(request, state, fault, model, started, streaming=False)) is not None:
        return early
    await sleep_ms(fault.plan.ttft_ms)
    return _json(200, answer, started)


async def model_action(request: web.Request) -> web.StreamResponse:
    """POST /v1beta/models/{model}:{action}."""
    started = time.monotonic()
    state = request.app[STATE]
    logged = _loggable(request)  # must be cloned before the body is read
    raw = await request.read()
    body = decode(raw) if raw else INVALID
    state.requests.add(logged, raw, body)
    model, _, action = request.match_info["model_action"].rpartition(":")
    if not _api_key(request):
        return _json(403, gf.missing_key_body(), started)
    if not model or action not in ("generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents"):
        return _json(404, gf.error_body(404, f"Method not found: models/{request.match_info['model_action']}"),
                     started)
    if body is INVALID:
        return _json(400, gf.invalid_json_body("Unexpected token."), started)
    if action in ("generateContent", "streamGenerateContent"):
        return await _generate(request, state, model, body, started, streaming=action == "streamGenerateContent")
    return await _embed(request, state, model, body, started, batch=action == "batchEmbedContents")


def register(app: web.Application) -> None:
    """Add the Gemini routes to an emulator app made by `service.make_app`; with validation on, `google-genai`
    must be importable (GroundTruthMissing names it and EMULATOR_VALIDATE=0 otherwise)."""
    if app[STATE].settings.validate:
        gv.require()
    app.router.add_post("/v1beta/models/{model_action}", model_action)
