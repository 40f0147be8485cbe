"""POST /model/{model_id}/invoke, /invoke-with-response-stream and /count-tokens on the provider emulator, for
Anthropic Claude Messages bodies (what the anthropic SDK's Bedrock client sends): the same deterministic answers,
thinking and prompt cache as /v1/messages, in Bedrock's envelope.

Validated (EMULATOR_VALIDATE): botocore's ParamValidator on the operation's input, Bedrock's body schema (the
`anthropic_version`, no `model`/`stream`), the body as the anthropic SDK's MessageCreateParams (with the URI's model
id as `model`), the emulator's Messages checks, and the catalog's capabilities for the Bedrock route. The stream is
the AWS event stream: one `chunk` event per Anthropic stream event, `bytes` holding its JSON (base64 in the frame's
JSON payload), as botocore's `ResponseStream` shape says; message_stop carries Bedrock's invocation metrics.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec
from aiohttp import web

from services.emulator import anthropic_format as af
from services.emulator import anthropic_validate as av
from services.emulator import bedrock_format as bf
from services.emulator import bedrock_routes as br
from services.emulator import bedrock_validate as bv
from services.emulator import edge
from services.emulator.anthropic_cache import PromptCache
from services.emulator.eventstream import encode_message
from services.emulator.faults import Fault
from services.emulator.settings import Settings

CACHE = web.AppKey("bedrock_prompt_cache", PromptCache)
"""Bedrock's prompt cache (separate from Anthropic's)."""
_ENCODER = msgspec.json.Encoder()
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
METRICS = "amazon-bedrock-invocationMetrics"
"""The member Bedrock adds to a Claude stream's message_stop event."""


def as_messages_body(model_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The InvokeModel body as the Messages API body it stands for (the model from the URI, Bedrock's keys out)."""
    return {"model": model_id, **{k: v for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta")}}


def _refusal(settings: Settings, model_id: str, body: object, *, counting: bool = False) -> str | None:
    """The ValidationException message for an InvokeModel body, else None (CountTokens takes the foundation model
    ids that InvokeModel refuses on demand)."""
    if (problem := bv.anthropic_body_problem(body)) is not None:
        return problem
    assert isinstance(body, dict)
    messages_body = as_messages_body(model_id, body)
    if settings.validate:
        if (wrong := av.check_body(messages_body, beta=bool(body.get("anthropic_beta")))) is not None:
            return f"The model returned the following errors: {wrong}"
        if not counting and model_id in bv.profile_only(settings.catalog):
            return bv.ON_DEMAND_REFUSED.format(model_id=model_id)
        upstream = model_id.rsplit("inference-profile/", 1)[-1]
        refused = av.check_capabilities({**messages_body, "model": upstream}, settings.catalog, provider=bv.PROVIDER)
        if refused is not None:
            return f"The model returned the following errors: {refused}"
    error = af.validate_request(messages_body)
    return None if error is None else f"The model returned the following errors: {error['error']['message']}"


async def invoke(request: web.Request) -> web.StreamResponse:
    """POST /model/{model_id}/invoke and /model/{model_id}/invoke-with-response-stream."""
    started = time.monotonic()
    request_id = str(uuid.uuid4())
    state = request.app[edge.STATE]
    logged = br._loggable(request)  # must be cloned before the body is read
    raw = await request.read()
    body = edge.decode(raw) if raw else edge.INVALID
    state.requests.add(logged, raw, body)
    if (refusal := br.check_signature(request)) is not None:
        return br._error(403, *refusal, request_id)
    model_id = request.match_info["model_id"]
    streaming = request.path.endswith("/invoke-with-response-stream")
    if state.settings.validate:
        accept = request.headers.get("X-Amzn-Bedrock-Accept" if streaming else "Accept")
        wrong = bv.check_invoke(model_id, raw, stream=streaming, content_type=request.headers.get("Content-Type"),
                                accept=accept)
        if wrong is not None:
            return br._error(400, "ValidationException", wrong, request_id)
    if (problem := _refusal(state.settings, model_id, None if body is edge.INVALID else body)) is not None:
        return br._error(400, "ValidationException", problem, request_id)
    assert isinstance(body, dict)
    fault = state.faults.decide(model_id)
    if (early := await br._intercept(request, state, fault, request_id, streaming=streaming)) is not None:
        return early
    messages_body = as_messages_body(model_id, body)
    cache = request.app[CACHE].use(messages_body, model=model_id, input_tokens=af.count_input_tokens(messages_body))
    message = af.plan_message(messages_body, message_id="msg_bdrk_01" + uuid.uuid4().hex[:20], cache=cache)
    headers = {"x-amzn-RequestId": request_id, "X-Amzn-Bedrock-Input-Token-Count": str(message.input_tokens),
               "X-Amzn-Bedrock-Output-Token-Count": str(message.output_tokens)}
    if not streaming:
        await edge.sleep_ms(fault.plan.ttft_ms)
        latency = int((time.monotonic() - started) * 1000)
        return web.Response(body=_ENCODER.encode(af.message_body(message)), content_type="application/json",
                            headers={**headers, "X-Amzn-Bedrock-Invocation-Latency": str(latency)})
    events = [(name, data) for name, data in af.stream_events(message, chunk_words=state.settings.chunk_words)
              if name != "ping"]
    first_byte = int((time.monotonic() - started) * 1000)
    metrics = {"inputTokenCount": message.input_tokens, "outputTokenCount": message.output_tokens,
               "invocationLatency": first_byte, "firstByteLatency": first_byte}
    events[-1] = (events[-1][0], {**events[-1][1], METRICS: metrics})
    return await _stream(request, events, fault, request_id)


def encode_chunk(data: dict[str, Any], index: int) -> bytes:
    """One `chunk` event frame: `{"bytes": base64 of the Anthropic event's JSON, "p": padding}`."""
    padding = _PADDING[: 1 + hashlib.blake2b(f"chunk:{index}".encode(), digest_size=1).digest()[0] % 60]
    payload = _ENCODER.encode({"bytes": base64.b64encode(_ENCODER.encode(data)).decode(), "p": padding})
    return encode_message({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
                          payload)


async def _stream(request: web.Request, events: Iterable[af.Event], fault: Fault,
                  request_id: str) -> web.StreamResponse:
    """Send `events` as chunk frames, honouring the fault's timing, drop and in-stream exception."""
    response = web.StreamResponse(status=200, headers={"x-amzn-RequestId": request_id,
                                                       "Content-Type": bf.EVENT_STREAM_TYPE})
    response.enable_chunked_encoding()
    drop = fault.drop_after_chunks
    try:
        await response.prepare(request)
        for index, (_, data) in enumerate(events):
            await edge.sleep_ms(fault.plan.ttft_ms if index == 0 else fault.plan.chunk_interval_ms)
            if index == drop:
                break
            await response.write(encode_chunk(data, index))
        if drop >= 0 and fault.status:
            _, message = bf.status_error(fault.status, message=fault.plan.error_message)
            await response.write(bf.encode_exception(bf.stream_exception_type(fault.status, fault.plan.error_type),
                                                     message))
        elif drop >= 0:
            edge.drop_connection(request)
            return response
        await response.write_eof()
    except ConnectionError:  # the client went away; nothing left to tell it
        pass
    return response


async def count_tokens(request: web.Request) -> web.Response:
    """POST /model/{model_id}/count-tokens with `input.invokeModel.body` (an InvokeModel body, base64)."""
    request_id = str(uuid.uuid4())
    state = request.app[edge.STATE]
    logged = br._loggable(request)
    raw = await request.read()
    body = edge.decode(raw) if raw else edge.INVALID
    state.requests.add(logged, raw, body)
    if (refusal := br.check_signature(request)) is not None:
        return br._error(403, *refusal, request_id)
    model_id = request.match_info["model_id"]
    if state.settings.validate and (wrong := bv.check_count_tokens(model_id, body)) is not None:
        return br._error(400, "ValidationException", wrong, request_id)
    if model_id.startswith(bv.PROFILE_PREFIXES) or "inference-profile/" in model_id:
        return br._error(400, "ValidationException", bv.COUNT_REFUSED, request_id)
    try:
        encoded = body["input"]["invokeModel"]["body"]  # type: ignore[index]
        inner = edge.decode(base64.b64decode(encoded))
    except (KeyError, TypeError, ValueError):
        return br._error(400, "ValidationException", "The input must hold invokeModel.body.", request_id)
    problem = _refusal(state.settings, model_id, None if inner is edge.INVALID else inner, counting=True)
    if problem is not None:
        return br._error(400, "ValidationException", problem, request_id)
    assert isinstance(inner, dict)
    tokens = af.count_input_tokens(as_messages_body(model_id, inner))
    return web.Response(body=_ENCODER.encode({"inputTokens": tokens}), content_type="application/json",
                        headers={"x-amzn-RequestId": request_id})


def register(app: web.Application) -> None:
    """Add the InvokeModel routes to an emulator app made by `make_app` (before it starts)."""
    app[CACHE] = PromptCache()
    app.router.add_post("/model/{model_id}/invoke", invoke)
    app.router.add_post("/model/{model_id}/invoke-with-response-stream", invoke)
    app.router.add_post("/model/{model_id}/count-tokens", count_tokens)
