"""POST /model/{model_id}/converse[-stream] on the provider emulator: Bedrock's wire format with the shared faults."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from services.emulator import bedrock_format as bf
from services.emulator import bedrock_validate as bv
from services.emulator import edge
from services.emulator.faults import Fault
from services.emulator.settings import Settings

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/\s,]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/(?P<service>[a-z0-9-]+)"
    r"/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*Signature=[0-9a-f]{64}$")
_HIDDEN_HEADERS = frozenset({"authorization", "x-amz-security-token"})
_ENCODER = msgspec.json.Encoder()


def _error(status: int, name: str, message: str, request_id: str,
           extra: dict[str, str] | None = None) -> web.Response:
    """Bedrock's error shape: `{"message": ...}` with the exception named in `x-amzn-ErrorType`."""
    headers = {"x-amzn-RequestId": request_id, "x-amzn-ErrorType": bf.error_type_header(name), **(extra or {})}
    return web.Response(status=status, body=_ENCODER.encode({"message": message}), content_type="application/json",
                        headers=headers)


def _loggable(request: web.Request) -> web.Request:
    """A copy to log: the signature and session token removed, the access key id as a Bearer token, so the
    request log's `key_sha256` tells which access key signed the call."""
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HIDDEN_HEADERS)
    match = _AUTHORIZATION.match(request.headers.get("Authorization", ""))
    if match:
        headers["Authorization"] = f"Bearer {match['key']}"
    return request.clone(headers=headers)


def check_signature(request: web.Request) -> tuple[str, str] | None:
    """(exception, message) when the SigV4 `Authorization` is missing or malformed; the signature itself cannot
    be checked (the emulator has no secrets), so any well-formed one is accepted."""
    authorization = request.headers.get("Authorization", "")
    if not authorization:
        return "MissingAuthenticationTokenException", "Missing Authentication Token"
    match = _AUTHORIZATION.match(authorization)
    if match is None:
        return ("IncompleteSignatureException", "Authorization header requires 'Credential', 'SignedHeaders' and "
                "'Signature' parameters of an AWS4-HMAC-SHA256 signature.")
    if match["service"] != bf.SIGNING_NAME:
        return "InvalidSignatureException", f"Credential should be scoped to correct service: '{bf.SIGNING_NAME}'."
    signed = match["signed"].split(";")
    if "host" not in signed:
        return ("IncompleteSignatureException",
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    amz_date = request.headers.get("X-Amz-Date", "")
    if "x-amz-date" not in signed or not amz_date:
        return "IncompleteSignatureException", "Authorization header requires existence of either a 'X-Amz-Date' " \
                                               "or a 'Date' header."
    if not amz_date.startswith(match["date"]):
        return "InvalidSignatureException", "Date in Credential scope does not match YYYYMMDD from ISO-8601 " \
                                            "version of date from HTTP."
    return None


async def _intercept(request: web.Request, state: edge.EmulatorState, fault: Fault, request_id: str,
                     *, streaming: bool) -> web.Response | None:
    """Latency and failures of `fault` before the answer; a status fault with drop_after_chunks on a stream is
    left to `_stream`, which sends it as an exception frame after that many events (as ConverseStream does)."""
    await edge.sleep_ms(fault.plan.latency_ms)
    if fault.hang:
        await edge.hang(request, state.stopping)
        return edge.drop_connection(request)
    if fault.status and not (streaming and fault.drop_after_chunks >= 0):
        plan = fault.plan
        name, message = bf.status_error(fault.status, error_type=plan.error_type, message=plan.error_message)
        extra = {"retry-after": str(plan.retry_after)} if plan.retry_after is not None else None
        return _error(fault.status, name, message, request_id, extra)
    if fault.drop_after_chunks >= 0 and not streaming:
        return edge.drop_connection(request)
    return None


def _refusal(settings: Settings, model_id: str, body: object, *, streaming: bool) -> str | None:
    """The ValidationException message Bedrock would answer this body with: with validation on, botocore's
    ParamValidator first, then the emulator's own checks of what the schema cannot say (roles alternating, tool
    results matching their calls, ...), then the catalog's rules for the model."""
    if not settings.validate:
        return bf.validate_request(body, model_id)
    return (bv.check_body(model_id, body, stream=streaming) or bf.validate_request(body, model_id)
            or bv.check_model(settings.catalog, model_id, body if isinstance(body, dict) else {}))


async def converse(request: web.Request) -> web.StreamResponse:
    """POST /model/{model_id}/converse and /model/{model_id}/converse-stream."""
    started = time.monotonic()
    request_id = str(uuid.uuid4())
    state = request.app[edge.STATE]
    logged = _loggable(request)  # must be cloned before the body is read
    raw = await request.read()
    body = edge.decode(raw) if raw else edge.INVALID
    state.requests.add(logged, raw, body)
    if (refusal := check_signature(request)) is not None:
        return _error(403, *refusal, request_id)
    if body is edge.INVALID:
        return _error(400, "ValidationException", "Malformed input request, please reformat your input and try again.",
                      request_id)
    model_id = request.match_info["model_id"]
    streaming = request.path.endswith("/converse-stream")
    if (problem := _refusal(state.settings, model_id, body, streaming=streaming)) is not None:
        return _error(400, "ValidationException", problem, request_id)
    assert isinstance(body, dict)
    fault = state.faults.decide(model_id)
    if (early := await _intercept(request, state, fault, request_id, streaming=streaming)) is not None:
        return early
    answer = bf.plan(model_id, body)
    if not streaming:
        await edge.sleep_ms(fault.plan.ttft_ms)
        latency = int((time.monotonic() - started) * 1000)
        return web.Response(body=_ENCODER.encode(bf.response_body(answer, latency_ms=latency)),
                            content_type="application/json", headers={"x-amzn-RequestId": request_id})
    events = bf.stream_events(answer, latency_ms=int((time.monotonic() - started) * 1000),
                              chunk_words=state.settings.chunk_words)
    if fault.plan.omit_usage:  # a stream cut after messageStop: the answer is whole, its usage never came
        events = (event for event in events if event[0] != "metadata")
    return await _stream(request, events, fault, request_id)


async def _stream(request: web.Request, events: Iterable[tuple[str, dict[str, Any]]], fault: Fault,
                  request_id: str) -> web.StreamResponse:
    """Send `events` as event-stream frames, honouring the fault's timing, drop and in-stream exception."""
    response = web.StreamResponse(status=200, headers={"x-amzn-RequestId": request_id,
                                                       "Content-Type": bf.EVENT_STREAM_TYPE})
    response.enable_chunked_encoding()
    drop = fault.drop_after_chunks
    try:
        await response.prepare(request)
        for index, (event_type, payload) in enumerate(events):
            await edge.sleep_ms(fault.plan.ttft_ms if index == 0 else fault.plan.chunk_interval_ms)
            if index == drop:
                break
            await response.write(bf.encode_event(event_type, payload, index))
        if drop >= 0 and fault.status:
            _, message = bf.status_error(fault.status, message=fault.plan.error_message)
            exception_type = bf.stream_exception_type(fault.status, fault.plan.error_type)
            await response.write(bf.encode_exception(exception_type, message))
        elif drop >= 0:
            edge.drop_connection(request)
            return response
        await response.write_eof()
    except ConnectionError:  # the client went away; nothing left to tell it
        pass
    return response


def register(app: web.Application) -> None:
    """Add Bedrock's Converse routes to an emulator app made by `make_app` (before it starts); with validation on,
    botocore must be importable (GroundTruthMissing names it and EMULATOR_VALIDATE=0 otherwise)."""
    if app[edge.STATE].settings.validate:
        bv.require()
    app.router.add_post("/model/{model_id}/converse", converse)
    app.router.add_post("/model/{model_id}/converse-stream", converse)
