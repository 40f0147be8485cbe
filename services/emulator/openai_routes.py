"""OpenAI routes of the provider emulator: chat completions (Azure's path too), models and embeddings.

Keys are checked per provider as each documents them: OpenAI paths take `Authorization: Bearer <key>` only;
Azure paths (`/openai/deployments/{deployment}/...?api-version=`) take the `api-key` header only. Azure also
accepts `Authorization: Bearer <Microsoft Entra ID token>`, but the proxy authenticates with keys and the
emulator cannot verify Entra tokens, so a Bearer on an Azure path is refused with the 401 Azure gives an
invalid token. With validation on, bodies are checked against OpenAI's OpenAPI description too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from services.emulator import openai_format as oa
from services.emulator import responses_format as rf
from services.emulator.edge import (
    ENTRY,
    INVALID,
    STATE,
    EmulatorState,
    decode,
    drop_connection,
    hang,
    sleep_ms,
)
from services.emulator.faults import Fault
from services.emulator.openai_validate import OpenAIValidator

VALIDATOR = web.AppKey("openai_validator", OpenAIValidator)
RESPONSES = web.AppKey("openai_responses", rf.ResponseStore)

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


def bearer_token(request: web.Request) -> str:
    """The key of an `Authorization: Bearer <key>` header (OpenAI's only way to pass it), else ""."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _key_refusal(request: web.Request, started: float, *, azure: bool) -> web.Response | None:
    """The provider's own 401 unless the request carries its key the way that provider documents."""
    if not azure:
        return None if bearer_token(request) else _json(401, oa.missing_key_body(), started)
    if request.headers.get("api-key", "").strip():
        return None
    body = oa.azure_bearer_refused_body() if bearer_token(request) else oa.azure_missing_key_body()
    return _json(401, body, started)


async def _admit(
    request: web.Request, started: float, *, azure: bool = False
) -> tuple[EmulatorState, object, web.Response | None]:
    """Read and record the request, then check the API key; returns the state, the body and any refusal."""
    state = request.app[STATE]
    raw = await request.read()
    body = decode(raw) if raw else INVALID
    state.requests.add(request, raw, body)
    return state, body, _key_refusal(request, started, azure=azure)


async def azure_chat_completions(request: web.Request) -> web.StreamResponse:
    """Azure OpenAI's shape of the same call: deployment in the path, `api-version` required, `api-key` header;
    `model` may be left out of the body (the deployment names it)."""
    if not request.query.get("api-version"):
        return _json(404, oa.azure_not_found_body(), time.monotonic())
    return await _chat(request, deployment=request.match_info["deployment"])


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _chat(request, deployment=None)


async def _chat(request: web.Request, *, deployment: str | None) -> web.StreamResponse:
    started = time.monotonic()
    state, body, refusal = await _admit(request, started, azure=deployment is not None)
    if refusal is not None:
        return refusal
    if deployment is not None and isinstance(body, dict) and "model" not in body:
        body = {**body, "model": deployment}
    error = oa.validate_chat_request(None if body is INVALID else body)
    if error is None and (validator := request.app.get(VALIDATOR)) is not None:
        assert isinstance(body, dict)
        error = validator.chat(body, azure=deployment is not None)
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


async def responses(request: web.Request) -> web.StreamResponse:
    """POST /v1/responses (OpenAI's Bearer key)."""
    return await _responses(request, azure=False)


async def azure_responses(request: web.Request) -> web.StreamResponse:
    """Azure OpenAI's v1 API: POST /openai/v1/responses with the `api-key` header; `model` names the deployment."""
    return await _responses(request, azure=True)


async def _responses(request: web.Request, *, azure: bool) -> web.StreamResponse:
    started = time.monotonic()
    state, body, refusal = await _admit(request, started, azure=azure)
    if refusal is not None:
        return refusal
    if not isinstance(body, dict):
        return _json(400, oa.invalid_json_body(), started)
    error = None
    if (validator := request.app.get(VALIDATOR)) is not None:
        error = validator.responses(body)
    elif not isinstance(body.get("model"), str) or body.get("input") is None:
        error = oa.error_body("'model' and 'input' are required", param="model")
    if error is not None:
        return _json(400, error, started)
    store = request.app[RESPONSES]
    history: list[dict[str, Any]] | None = None
    if isinstance(previous := body.get("previous_response_id"), str):
        history = store.get(previous)
        if history is None:
            return _json(400, rf.previous_not_found(previous), started)
    messages = rf.conversation(body, history)
    streaming = bool(body.get("stream"))
    fault = state.faults.decide(body["model"])
    if (early := await _intercept(request, state, fault, body["model"], started, streaming=streaming)) is not None:
        return early
    reply = oa.plan_reply(rf.chat_view(body, messages))
    response_id = "resp_" + uuid.uuid4().hex
    created = int(time.time())
    if body.get("store", True) is not False:
        store.put(response_id, rf.stored_messages(messages, reply))
    if not streaming:
        await sleep_ms(fault.plan.ttft_ms)
        return _json(200, rf.response_body(reply, body, response_id=response_id, created=created), started)
    events = rf.stream_events(reply, body, response_id=response_id, created=created,
                              chunk_words=state.settings.chunk_words)
    return await _stream(request, events, fault, started, named=True)


async def _stream(
    request: web.Request, chunks: Iterable[dict[str, Any]], fault: Fault, started: float, *, named: bool = False
) -> web.StreamResponse:
    """Send `chunks` as SSE `data:` events then `data: [DONE]` (or, `named`, as Responses events each with an
    `event:` line and no `[DONE]`), honouring the fault's timing, drop and stall; progress and outcome are noted
    on the request's log entry."""
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
            if named:
                data = b"event: " + chunk["type"].encode() + b"\n" + data
            await response.write(data)
            entry["chunks_sent"] += 1
            entry["bytes_sent"] += len(data)
        if drop >= 0:
            entry["outcome"] = "dropped"
            drop_connection(request)
            return response
        if not named:
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
    if error is None and (validator := request.app.get(VALIDATOR)) is not None:
        assert isinstance(body, dict)
        error = validator.embedding(body)
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


def register(app: web.Application) -> None:
    """Add the OpenAI routes to an emulator app (before it starts); `/v1/{tail}` answers any other /v1 path.
    With validation on, the OpenAPI validators are built now (a missing spec or package fails here)."""
    settings = app[STATE].settings
    if settings.validate:
        app[VALIDATOR] = OpenAIValidator(Path(settings.openai_spec))
    app[RESPONSES] = rf.ResponseStore()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/openai/v1/responses", azure_responses)
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", azure_chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_route("*", "/v1/{tail:.*}", unknown_route)
