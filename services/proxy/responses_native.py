"""/v1/responses on routes whose provider serves the Responses API itself (OpenAI, Azure OpenAI's v1 API): the
caller's body passed through (the route's model named, `store` false unless the caller set it), the reply and
its typed event stream passed back as they are, usage read on the way for the trace."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
from aiohttp import web

from proto.routing import ATTEMPT_TIMEOUT, ATTEMPT_UPSTREAM_STREAM_ERROR
from proto.trace import TraceEvent
from services.proxy import chat
from services.proxy import openai_wire as wire
from services.proxy import responses_wire as rw
from services.proxy.adapters.openai import OpenAIDialect
from services.proxy.call import OVERHEAD_HEADER, Call
from services.proxy.dialects import dialect_for
from services.proxy.providers import Target
from services.proxy.upstream import Upstream

_INTERRUPTED_CODE = "upstream_stream_interrupted"


def outbound_body(body: dict[str, Any]) -> dict[str, Any]:
    """The body sent on: the caller's, with `store` false unless it asked otherwise (Routeur keeps no bodies, and
    a provider only keeps what the caller chose to have kept)."""
    return body if "store" in body else {**body, "store": False}


def _dialect(target: Target) -> OpenAIDialect:
    dialect = dialect_for(target)
    assert isinstance(dialect, OpenAIDialect), "speaks_responses() holds for OpenAI and Azure targets only"
    return dialect


async def complete(call: Call, upstream: Upstream, target: Target, body: dict[str, Any], *,
                   inline_trace: bool) -> tuple[web.Response, TraceEvent]:
    """One non-streamed call: the provider's `response` passed back (plus `routeur_trace` when asked)."""
    route = call.route
    assert route is not None
    dialect = _dialect(target)
    outbound = dialect.responses_request(target, outbound_body(body), route.upstream_model)
    status, raw = await chat.exchange(call, upstream, outbound, dialect)
    call.first_byte_sent(call.upstream_ended)
    call.answered(status, rw.reply_usage(raw))
    trace = call.trace()
    if inline_trace:
        raw = chat.inline(raw, trace)
    headers = {"x-request-id": call.request_id, **call.response_headers}
    return web.Response(status=status, body=raw, content_type="application/json", headers=headers), trace


async def stream(call: Call, upstream: Upstream, target: Target, body: dict[str, Any], request: web.Request, *,
                 inline_trace: bool) -> tuple[web.StreamResponse, TraceEvent]:
    """A streamed call: the provider's events relayed as they arrive, the final response's usage traced."""
    route = call.route
    assert route is not None
    dialect = _dialect(target)
    outbound = dialect.responses_request(target, outbound_body(body), route.upstream_model)
    async with chat.opened(call, upstream, outbound, dialect) as response:
        out = chat.CallerStream(status=200, headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
            "x-request-id": call.request_id, OVERHEAD_HEADER: call.overhead_header(time.perf_counter()),
            **call.response_headers})
        if call.capture is not None:
            out.capture = call.capture.caller_chunks
        await out.prepare(request)
        call.answered(200)
        return out, await _relay(call, response, out, inline_trace=inline_trace)


async def _relay(call: Call, response: aiohttp.ClientResponse, out: web.StreamResponse, *,
                 inline_trace: bool) -> TraceEvent:
    buffer = bytearray()
    ended: str | None = None  # the terminal event's type
    failed_code: str | None = None
    failure: str | None = None
    sequence = -1
    sent: list[bytes] = []
    upstream_chunks = call.capture.upstream_chunks if call.capture is not None else None
    try:
        try:
            async for data in response.content.iter_any():
                if upstream_chunks is not None:
                    upstream_chunks.append(data)
                buffer += data
                events = wire.split_events(buffer)
                for event in events:
                    info = rw.event_info(event)
                    if info is None:
                        continue
                    sequence = max(sequence, info.sequence_number if info.sequence_number is not None else -1)
                    if info.response is not None and info.response.usage is not None:
                        call.saw_chunk(None, rw.chat_usage(info.response.usage))
                    if info.type in rw.TERMINAL or info.type in rw.FAILED:
                        ended = ended if ended in rw.FAILED else info.type
                if events:
                    sent.extend(events)
                    call.first_byte_sent()
                    await out.write(b"".join(events))
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = ATTEMPT_TIMEOUT if isinstance(exc, TimeoutError) else type(exc).__name__
        call.upstream_answered()
        _estimate(call, sent)
        if ended in rw.TERMINAL:
            call.attempted(200, None)
            trace = call.trace()
            if inline_trace:
                await out.write(rw.encode_event({"type": "routeur_trace", "sequence_number": sequence + 1,
                                                 "routeur_trace": trace}))
        elif ended in rw.FAILED:  # the provider reported the failure in the stream itself
            failed_code = "upstream_response_failed"
            call.stream_broken(ATTEMPT_UPSTREAM_STREAM_ERROR, failed_code)
            trace = call.trace()
        else:
            call.stream_broken(failure, _INTERRUPTED_CODE)
            trace = call.trace()
            await out.write(rw.encode_event({"type": "error", "sequence_number": sequence + 1,
                                             "code": _INTERRUPTED_CODE, "param": None,
                                             "message": "the upstream stream ended before completion"}))
        await out.write_eof()
    except ConnectionError:  # the caller went away
        _estimate(call, sent)
        call.caller_gone(sent)
        trace = call.trace()
    return trace


def _estimate(call: Call, sent: list[bytes]) -> None:
    """Usage from what was relayed, when the provider's final response (and its usage) never came."""
    if call.usage is None and sent:
        call.answered(call.status_code, rw.estimate_usage(sent, prompt_bytes=call.prompt_bytes), estimated=True)


async def run(call: Call, upstream: Upstream, target: Target, body: dict[str, Any], request: web.Request,
              inline_trace: bool) -> tuple[web.StreamResponse, TraceEvent]:
    """The pass-through attempt: streamed when the body asks for it, else one complete reply."""
    if body.get("stream"):
        return await stream(call, upstream, target, body, request, inline_trace=inline_trace)
    return await complete(call, upstream, target, body, inline_trace=inline_trace)
