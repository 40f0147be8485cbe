"""/v1/messages on a Claude route (Anthropic or Bedrock): one native attempt. The caller's body goes upstream as
written (after DLP; adapters/anthropic_native.py), the answer and its events come back as sent, read for usage
(cache reads and writes priced apart), with DLP placeholders restored and the trace inlined when asked."""

from __future__ import annotations

import math
import time
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from proto import codec
from proto.routing import ATTEMPT_TIMEOUT, ATTEMPT_UPSTREAM_STREAM_ERROR
from proto.trace import TraceEvent
from services.proxy import chat
from services.proxy import openai_wire as wire
from services.proxy.adapters import anthropic_check
from services.proxy.adapters import anthropic_native as native
from services.proxy.adapters.errors import UnsupportedParameter
from services.proxy.call import OVERHEAD_HEADER, Call
from services.proxy.chat import CallerStream
from services.proxy.dialects import Dialect, UpstreamCall, dialect_for
from services.proxy.dlp.anthropic_restore import EventRestorer, restore_message
from services.proxy.errors import InvalidRequest, UpstreamUnavailable
from services.proxy.providers import Target
from services.proxy.upstream import Upstream

_DECODER = msgspec.json.Decoder()
_INTERRUPTED = {"type": "error", "error": {"type": "api_error",
                                           "message": "the upstream stream ended before completion"}}


class NativeResponse(web.Response):
    """A reply already in Anthropic's format (the endpoint's render passes it through)."""


def serves(target: Target) -> bool:
    """Whether `target` takes the caller's Anthropic body natively."""
    return target.format in native.FORMATS


async def run(call: Call, upstream: Upstream, target: Target, body: dict[str, Any], request: web.Request,
              inline_trace: bool) -> tuple[web.StreamResponse, TraceEvent]:
    """One attempt on a Claude route: streamed when the body asks for it, else one complete reply."""
    route, model = call.route, call.model
    assert route is not None and model is not None
    try:
        anthropic_check.check(body, beta=bool(request.headers.get("anthropic-beta"))
                              or request.query.get("beta") == "true")
    except anthropic_check.Refused as exc:  # what Anthropic would refuse never reaches it
        raise InvalidRequest(exc.message, param=exc.param) from None
    try:
        native.check(body, model.id, model.capabilities)
    except UnsupportedParameter as exc:
        raise InvalidRequest(exc.message, param=exc.param, code="unsupported_parameter") from None
    outbound = native.request(target, body, route.upstream_model, request.headers, stream=call.stream)
    dialect = dialect_for(target)
    if call.stream:
        return await _stream(call, upstream, outbound, dialect, target, request, inline_trace=inline_trace)
    return await _complete(call, upstream, outbound, dialect, inline_trace=inline_trace)


def _headers(call: Call) -> dict[str, str]:
    return {"x-request-id": call.request_id, "request-id": call.request_id, **call.response_headers}


async def _complete(call: Call, upstream: Upstream, outbound: UpstreamCall, dialect: Dialect, *,
                    inline_trace: bool) -> tuple[web.Response, TraceEvent]:
    route = call.route
    assert route is not None
    status, raw = await chat.exchange(call, upstream, outbound, dialect)
    call.first_byte_sent(call.upstream_ended)
    try:
        message = _DECODER.decode(raw)
        if not isinstance(message, dict):
            raise TypeError("not an object")
        usage = native.usage(message.get("usage"))
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError):
        raise UpstreamUnavailable(f"the provider {route.provider!r} sent a response Routeur cannot read",
                                  code="upstream_bad_response") from None
    call.answered(status, usage)
    message["model"] = call.requested_model
    if call.restore:
        message = restore_message(message, call.restore)
    trace = call.trace()
    if inline_trace:
        message["routeur_trace"] = trace
    return NativeResponse(status=status, body=codec.encode(message), content_type="application/json",
                          headers=_headers(call)), trace


async def _stream(call: Call, upstream: Upstream, outbound: UpstreamCall, dialect: Dialect, target: Target,
                  request: web.Request, *, inline_trace: bool) -> tuple[web.StreamResponse, TraceEvent]:
    route = call.route
    assert route is not None
    async with chat.opened(call, upstream, outbound, dialect) as response:
        out = CallerStream(status=200, headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
            OVERHEAD_HEADER: call.overhead_header(time.perf_counter()), **_headers(call)})
        if call.capture is not None:
            out.capture = call.capture.caller_chunks
        await out.prepare(request)
        call.answered(200)
        trace = await _relay(call, response, out, native.StreamReader(target.format), inline_trace=inline_trace)
        return out, trace


class _CallerGone(Exception):
    """The caller closed the connection while we were writing to it."""


async def _send(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
    except ConnectionError:
        raise _CallerGone from None


def _restored(restorer: EventRestorer | None, event: native.Event, model: str) -> bytes:
    raw, kind, data = event
    if kind == "message_start" and isinstance(data.get("message"), dict):  # named as the caller asked, as unstreamed
        return native.encode_event(kind, {**data, "message": {**data["message"], "model": model}})
    changed = restorer.event(kind, data) if restorer is not None else None
    return raw if changed is None else b"".join(native.encode_event(name, item) for name, item in changed)


def _estimate(call: Call, reader: native.StreamReader) -> wire.Usage:
    """Usage for a stream cut short: what the upstream reported, output at least what was streamed (≈ 4 characters
    a token), the prompt estimated from its size when nothing was reported."""
    usage = reader.usage or wire.Usage(prompt_tokens=math.ceil(call.prompt_bytes / 4))
    output = max(usage.completion_tokens, math.ceil(reader.streamed_chars / 4))
    return msgspec.structs.replace(usage, completion_tokens=output, total_tokens=usage.prompt_tokens + output)


async def _relay(call: Call, response: aiohttp.ClientResponse, out: CallerStream, reader: native.StreamReader, *,
                 inline_trace: bool) -> TraceEvent:
    restorer = EventRestorer(call.restore) if call.restore else None
    upstream_chunks = call.capture.upstream_chunks if call.capture is not None else None
    failure: str | None = None
    try:
        try:
            async for data in response.content.iter_any():
                if upstream_chunks is not None:
                    upstream_chunks.append(data)
                events = reader.feed(data)
                if not events:
                    continue
                if reader.usage is not None:
                    call.saw_chunk(None, reader.usage)
                ready = b"".join(_restored(restorer, event, call.requested_model) for event in events)
                if ready:
                    call.first_byte_sent()
                    await _send(out, ready)
                if reader.failed:
                    break
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = ATTEMPT_TIMEOUT if isinstance(exc, TimeoutError) else type(exc).__name__
        call.upstream_answered()
        if reader.done and not reader.failed:
            call.attempted(200, None)
            trace = call.trace()
            if inline_trace:
                await _send(out, native.encode_event("routeur_trace", {"type": "routeur_trace",
                                                                        "routeur_trace": trace}))
        else:
            call.answered(200, _estimate(call, reader), estimated=reader.usage is None or not reader.done)
            call.stream_broken(ATTEMPT_UPSTREAM_STREAM_ERROR if reader.failed else failure,
                               "upstream_stream_error" if reader.failed else "upstream_stream_interrupted")
            trace = call.trace()
            if not reader.failed:
                await _send(out, native.encode_event("error", _INTERRUPTED))
        try:
            await out.write_eof()
        except ConnectionError:
            raise _CallerGone from None
    except _CallerGone:
        call.caller_gone([])
        trace = call.trace()
    return trace
