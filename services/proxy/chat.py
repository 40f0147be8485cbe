"""POST /v1/chat/completions: one upstream attempt, the answer passed through or streamed back, and its trace."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from proto import codec
from proto.routing import ATTEMPT_HTTP_ERROR, ATTEMPT_TIMEOUT, ATTEMPT_UPSTREAM_STREAM_ERROR
from proto.trace import TraceEvent
from services.proxy import dlp
from services.proxy import openai_wire as wire
from services.proxy.adapters.errors import GenerationFailed
from services.proxy.billing_client import reservation
from services.proxy.call import OVERHEAD_HEADER, Call
from services.proxy.dialects import Dialect, StreamBroken, StreamDecoder, UpstreamCall, dialect_for
from services.proxy.endpoint import Endpoint, Parse, Render
from services.proxy.errors import ErrorRenderer, UpstreamError, UpstreamUnavailable
from services.proxy.providers import Target
from services.proxy.upstream import Upstream

__all__ = ["CHAT", "ENDPOINT", "OVERHEAD_HEADER", "CallerStream", "Upstream", "complete", "endpoint", "exchange",
           "opened", "run", "stream"]

ENDPOINT = "/v1/chat/completions"
_INTERRUPTED_CODE = "upstream_stream_interrupted"
_INTERRUPTED = {"message": "the upstream stream ended before completion", "type": "upstream_error",
                "param": None, "code": _INTERRUPTED_CODE}


def _upstream_failure(dialect: Dialect, status: int, raw: bytes, headers: Mapping[str, str]) -> UpstreamError:
    status, error = dialect.error(status, raw, headers)
    return UpstreamError(error["error"]["message"], status=status, param=error["error"].get("param"),
                         code=error["error"]["code"] or "upstream_error")


@contextlib.asynccontextmanager
async def opened(call: Call, upstream: Upstream, outbound: UpstreamCall,
                 dialect: Dialect) -> AsyncIterator[aiohttp.ClientResponse]:
    """One streamed attempt's upstream response, open while the block runs. A timeout or a connection failure is
    recorded on the call and raised as UpstreamUnavailable; an error status is read, recorded and raised as the
    dialect's UpstreamError (every streaming endpoint, whatever it relays, starts its attempt here)."""
    route = call.route
    assert route is not None
    call.attempt_started(outbound.body)
    try:
        context = upstream.post(outbound)
        response = await context.__aenter__()
    except TimeoutError:
        call.attempted(504, ATTEMPT_TIMEOUT)
        raise UpstreamUnavailable(f"the provider {route.provider!r} timed out", code="upstream_timeout",
                                  status=504) from None
    except aiohttp.ClientError as exc:
        call.attempted(502, type(exc).__name__)
        raise UpstreamUnavailable(f"the provider {route.provider!r} could not be reached") from None
    try:
        if response.status >= 400:
            raw = await response.read()
            call.upstream_answered(raw)
            call.attempted(response.status, ATTEMPT_HTTP_ERROR)
            raise _upstream_failure(dialect, response.status, raw, response.headers)
        yield response
    finally:
        await context.__aexit__(None, None, None)


async def exchange(call: Call, upstream: Upstream, outbound: UpstreamCall, dialect: Dialect) -> tuple[int, bytes]:
    """One non-streaming upstream call, timed and recorded as an attempt; failures raise OpenAI-style errors."""
    route = call.route
    assert route is not None
    call.attempt_started(outbound.body)
    try:
        async with upstream.post(outbound) as response:
            raw = await response.read()
            status = response.status
            headers = response.headers
    except TimeoutError:
        call.attempted(504, ATTEMPT_TIMEOUT)
        raise UpstreamUnavailable(f"the provider {route.provider!r} timed out", code="upstream_timeout",
                                  status=504) from None
    except aiohttp.ClientError as exc:
        call.attempted(502, type(exc).__name__)
        raise UpstreamUnavailable(f"the provider {route.provider!r} could not be reached") from None
    call.upstream_answered(raw)
    call.attempted(status, None if status < 400 else ATTEMPT_HTTP_ERROR)
    if status >= 400:
        raise _upstream_failure(dialect, status, raw, headers)
    return status, raw


def inline(raw: bytes, trace: TraceEvent) -> bytes:
    """A JSON object reply with the trace added as its `routeur_trace` member (`Routeur-Trace: true`)."""
    return raw.rstrip()[:-1] + b',"routeur_trace":' + codec.encode(trace) + b"}"


async def complete(call: Call, upstream: Upstream, target: Target, body: dict[str, Any],
                   *, inline_trace: bool) -> tuple[web.Response, TraceEvent]:
    """Non-streaming: one upstream call; OpenAI-format bodies pass through (plus `routeur_trace` when asked)."""
    route, model = call.route, call.model
    assert route is not None and model is not None
    dialect = dialect_for(target)
    outbound = dialect.request(target, body, route.upstream_model, capabilities=model.capabilities)
    status, raw = await exchange(call, upstream, outbound, dialect)
    call.first_byte_sent(call.upstream_ended)
    try:
        raw = dialect.response(raw, model=model.id)
    except GenerationFailed as exc:  # the provider's own reason, with the code its stream would carry
        raise UpstreamUnavailable(exc.message, code=exc.code) from None
    except (msgspec.DecodeError, ValueError, KeyError, TypeError):
        raise UpstreamUnavailable(f"the provider {route.provider!r} sent a response Routeur cannot read",
                                  code="upstream_bad_response") from None
    call.answered(status, wire.response_usage(raw))
    if call.restore:
        raw = codec.encode(dlp.restore_completion(msgspec.json.decode(raw), call.restore))
    trace = call.trace()
    if inline_trace:
        raw = inline(raw, trace)
    headers = {"x-request-id": call.request_id, **call.response_headers}
    return web.Response(status=status, body=raw, content_type="application/json", headers=headers), trace


class CallerStream(web.StreamResponse):
    """The caller's event stream; keeps a copy of every write in `capture` when payloads are archived
    (subclasses translate first, then write here, so the copy is what the caller received)."""

    capture: list[bytes] | None = None

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.capture is not None:
            self.capture.append(bytes(data))
        await super().write(data)


OpenStream = Callable[[Call, dict[str, str]], CallerStream]
"""(call, headers) → the caller's stream, not yet prepared: OpenAI SSE here, Anthropic's events for /v1/messages."""


def caller_stream(call: Call, headers: dict[str, str]) -> CallerStream:
    return CallerStream(status=200, headers=headers)


async def stream(call: Call, upstream: Upstream, target: Target, body: dict[str, Any], request: web.Request, *,
                 inline_trace: bool, open_stream: OpenStream = caller_stream) -> tuple[web.StreamResponse, TraceEvent]:
    """Streaming: SSE events forwarded as they arrive; usage read from the final chunk on the way."""
    route, model = call.route, call.model
    assert route is not None and model is not None
    caller_wants_usage = wire.wants_usage_chunk(body)
    dialect = dialect_for(target)
    outbound = dialect.request(target, body, route.upstream_model, capabilities=model.capabilities)
    async with opened(call, upstream, outbound, dialect) as response:
        out = open_stream(call, {
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
            "x-request-id": call.request_id, OVERHEAD_HEADER: call.overhead_header(time.perf_counter()),
            **call.response_headers})
        if call.capture is not None:
            out.capture = call.capture.caller_chunks
        await out.prepare(request)
        call.answered(200)
        trace = await _relay(call, response, out, dialect.stream(model=model.id),
                             caller_wants_usage=caller_wants_usage, inline_trace=inline_trace)
        return out, trace


async def run(call: Call, upstream: Upstream, target: Target, body: dict[str, Any], request: web.Request,
              inline_trace: bool, *, open_stream: OpenStream = caller_stream) -> tuple[web.StreamResponse, TraceEvent]:
    """The endpoint's attempt: streamed when the body asks for it, else one complete reply."""
    if call.stream:
        return await stream(call, upstream, target, body, request, inline_trace=inline_trace,
                            open_stream=open_stream)
    return await complete(call, upstream, target, body, inline_trace=inline_trace)


class _CallerGone(Exception):
    """The caller closed the connection while we were writing to it."""


async def _send(out: web.StreamResponse, data: bytes) -> None:
    try:
        await out.write(data)
    except ConnectionError:  # reset, or aiohttp's 'Connection lost' while waiting on backpressure
        raise _CallerGone from None


async def _send_eof(out: web.StreamResponse) -> None:
    try:
        await out.write_eof()
    except ConnectionError:  # reset, or aiohttp's 'Connection lost' while waiting on backpressure
        raise _CallerGone from None


async def _relay(call: Call, response: aiohttp.ClientResponse, out: web.StreamResponse, decoder: StreamDecoder,
                 *, caller_wants_usage: bool, inline_trace: bool) -> TraceEvent:
    buffer = bytearray()
    finished = False
    broken: dict[str, Any] = {"error": _INTERRUPTED}
    failure: str | None = None  # why the upstream stream ended early
    sent: list[bytes] = []  # references only; decoded solely if the upstream never reports usage
    restorer = dlp.StreamRestorer(call.restore) if call.restore else None
    upstream_chunks = call.capture.upstream_chunks if call.capture is not None else None

    async def forward(events: list[bytes]) -> None:
        nonlocal finished
        ready = []
        for event in events:
            if wire.is_done(event):
                finished = True
                continue
            usage, usage_only = wire.event_usage(event)
            call.saw_chunk(wire.event_head(event) if call.stream_head is None else None, usage)
            if usage_only and not caller_wants_usage:
                continue
            ready.append(restorer.event(event) if restorer is not None else event)
        if ready:
            sent.extend(ready)
            call.first_byte_sent()
            await _send(out, b"".join(ready))

    try:
        try:
            async for data in response.content.iter_any():
                if upstream_chunks is not None:
                    upstream_chunks.append(data)
                buffer += data
                await forward(decoder.events(buffer))
            await forward(decoder.close())
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = ATTEMPT_TIMEOUT if isinstance(exc, TimeoutError) else type(exc).__name__
        except StreamBroken as exc:
            failure, broken = ATTEMPT_UPSTREAM_STREAM_ERROR, exc.body
        call.upstream_answered()
        held = restorer.finish() if restorer is not None else b""
        if held:
            await _send(out, held)
        call.estimate_usage(sent)
        if finished:
            call.attempted(200, None)
            trace = call.trace()
            if inline_trace:
                head = call.stream_head or wire.ChunkHead(id=f"chatcmpl-{call.request_id}")
                await _send(out, b"data: " + codec.encode({
                    "id": head.id, "object": "chat.completion.chunk", "created": head.created, "model": head.model,
                    "choices": [], "routeur_trace": trace}) + b"\n\n")
            await _send(out, wire.DONE)
        else:
            call.stream_broken(failure, str(broken["error"].get("code") or _INTERRUPTED_CODE))
            trace = call.trace()
            await _send(out, b"data: " + codec.encode(broken) + b"\n\n")
        await _send_eof(out)
    except _CallerGone:
        call.caller_gone(sent)
        trace = call.trace()
    return trace


CHAT = Endpoint(path=ENDPOINT, kind="chat", parse=wire.parse_body, reserve=reservation, run=run)


def endpoint(path: str, parse: Parse, *, open_stream: OpenStream, render: Render,
             render_error: ErrorRenderer) -> Endpoint:
    """A chat endpoint for another inbound format: `parse` yields an OpenAI chat body, `open_stream` writes the
    stream in the format's own events, `render` and `render_error` its replies and errors."""
    return Endpoint(path=path, kind="chat", parse=parse, reserve=reservation,
                    run=functools.partial(run, open_stream=open_stream), render=render, render_error=render_error)
