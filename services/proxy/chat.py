"""POST /v1/chat/completions: resolve the route, call upstream, stream back, record the trace."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from catalog import pricing
from catalog.schema import Model, Route
from proto import codec
from proto.trace import Attempt, TraceEvent
from services.proxy import dlp
from services.proxy import openai_wire as wire
from services.proxy.auth import Principal
from services.proxy.dialects import Dialect, StreamBroken, StreamDecoder, UpstreamCall, dialect_for
from services.proxy.errors import ProxyError, UpstreamError, UpstreamUnavailable
from services.proxy.payloads import Capture
from services.proxy.providers import Target

ENDPOINT = "/v1/chat/completions"
OVERHEAD_HEADER = "x-routeur-overhead-ms"
_INTERRUPTED = {"message": "the upstream stream ended before completion", "type": "upstream_error",
                "param": None, "code": "upstream_stream_interrupted"}


@dataclass
class Call:
    """Mutable facts gathered while one request is served; becomes the trace at the end."""

    request_id: str
    principal: Principal
    started: float
    started_ms: int
    endpoint: str = ENDPOINT
    requested_model: str = ""
    model: Model | None = None
    route: Route | None = None
    stream: bool = False
    status_code: int = 0
    usage: wire.Usage | None = None
    upstream_started: float = 0.0
    upstream_ended: float = 0.0
    first_byte: float | None = None
    error_type: str | None = None
    error_code: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    stream_head: wire.ChunkHead | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    usage_estimated: bool = False
    prompt_bytes: int = 0
    route_reason: str = "default"
    first_choice: str | None = None
    fallback_reason: str | None = None
    redactions: int = 0
    restore: dict[str, str] | None = None  # DLP placeholder -> original, when the policy restores answers
    capture: Capture | None = None  # the payload layers, when the key archives payloads

    def fail(self, error: ProxyError) -> None:
        self.status_code = error.status
        self.error_type = error.type
        self.error_code = error.code

    def _fallback(self) -> str | None:
        """`<served route>; <why the first choice did not serve>` when a fallback route served."""
        if self.route is None or self.first_choice is None or self.route.key == self.first_choice:
            return None
        return f"{self.route.key}; {self.fallback_reason or 'fallback'}"

    def trace(self) -> TraceEvent:
        now = time.perf_counter()
        usage = self.usage or wire.Usage()
        route = self.route
        cost = pricing.cost_usd(route, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                                cached_tokens=usage.cached_tokens, reasoning_tokens=usage.reasoning_tokens) \
            if route is not None and self.usage is not None else pricing.Decimal(0)
        upstream_ms = (self.upstream_ended - self.upstream_started) * 1000 if self.upstream_started else 0.0
        return TraceEvent(
            request_id=self.request_id,
            timestamp_ms=self.started_ms,
            organization_id=self.principal.organization_id or "",
            api_key_id=self.principal.api_key_id,
            endpoint=self.endpoint,
            requested_model=self.requested_model,
            model=self.model.id if self.model else self.requested_model,
            provider=route.provider if route else "",
            upstream_model=route.upstream_model if route else "",
            route_reason=self.route_reason,
            route=self.first_choice or (route.key if route else None),
            fallback=self._fallback(),
            status_code=self.status_code,
            stream=self.stream,
            latency_ms=round((now - self.started) * 1000, 3),
            upstream_latency_ms=round(upstream_ms, 3),
            ttft_ms=round((self.first_byte - self.started) * 1000, 3) if self.first_byte else None,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_usd=cost,
            error_type=self.error_type,
            error_code=self.error_code,
            attempts=tuple(self.attempts),
            usage_estimated=self.usage_estimated,
            redactions=self.redactions,
        )


class Upstream:
    """Calls providers over one shared keep-alive session."""

    def __init__(self, session: aiohttp.ClientSession, *, connect_timeout_s: float, read_timeout_s: float) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s,
                                              sock_read=read_timeout_s)

    def post(self, call: UpstreamCall) -> Any:
        return self._session.post(call.url, data=call.body, headers=call.headers, timeout=self._timeout)


def _upstream_failure(dialect: Dialect, status: int, raw: bytes) -> UpstreamError:
    status, error = dialect.error(status, raw)
    return UpstreamError(error["error"]["message"], status=status, code=error["error"]["code"] or "upstream_error")


async def exchange(call: Call, upstream: Upstream, outbound: UpstreamCall, dialect: Dialect) -> tuple[int, bytes]:
    """One non-streaming upstream call, timed and recorded as an attempt; failures raise OpenAI-style errors."""
    route = call.route
    assert route is not None
    if call.capture is not None:
        call.capture.upstream_request, call.capture.upstream_response = outbound.body, b""
    call.upstream_started = time.perf_counter()
    try:
        async with upstream.post(outbound) as response:
            raw = await response.read()
            status = response.status
        if call.capture is not None:
            call.capture.upstream_response = raw
    except TimeoutError:
        attempt(call, route, 504, "timeout")
        raise UpstreamUnavailable(f"the provider {route.provider!r} timed out", code="upstream_timeout",
                                  status=504) from None
    except aiohttp.ClientError as exc:
        attempt(call, route, 502, type(exc).__name__)
        raise UpstreamUnavailable(f"the provider {route.provider!r} could not be reached") from None
    call.upstream_ended = time.perf_counter()
    attempt(call, route, status, None if status < 400 else "http_error")
    if status >= 400:
        raise _upstream_failure(dialect, status, raw)
    return status, raw


async def complete(call: Call, upstream: Upstream, target: Target, body: dict[str, Any],
                   *, inline_trace: bool) -> tuple[web.Response, TraceEvent]:
    """Non-streaming: one upstream call; OpenAI-format bodies pass through (plus `routeur_trace` when asked)."""
    route, model = call.route, call.model
    assert route is not None and model is not None
    dialect = dialect_for(target)
    status, raw = await exchange(call, upstream, dialect.request(target, body, route.upstream_model), dialect)
    call.first_byte = call.upstream_ended
    try:
        raw = dialect.response(raw, model=model.id)
    except (msgspec.DecodeError, ValueError, KeyError, TypeError):
        raise UpstreamUnavailable(f"the provider {route.provider!r} sent a response Routeur cannot read",
                                  code="upstream_bad_response") from None
    call.status_code = status
    call.usage = wire.response_usage(raw)
    if call.restore:
        raw = codec.encode(dlp.restore_completion(msgspec.json.decode(raw), call.restore))
    trace = call.trace()
    if inline_trace:
        raw = raw.rstrip()[:-1] + b',"routeur_trace":' + codec.encode(trace) + b"}"
    overhead = time.perf_counter() - call.started - (call.upstream_ended - call.upstream_started)
    headers = {"x-request-id": call.request_id, OVERHEAD_HEADER: f"{overhead * 1000:.3f}", **call.response_headers}
    return web.Response(status=status, body=raw, content_type="application/json", headers=headers), trace


class CallerStream(web.StreamResponse):
    """The caller's event stream; keeps a copy of every write in `capture` when payloads are archived
    (subclasses translate first, then write here, so the copy is what the caller received)."""

    capture: list[bytes] | None = None

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.capture is not None:
            self.capture.append(bytes(data))
        await super().write(data)


async def stream(call: Call, upstream: Upstream, target: Target, body: dict[str, Any], request: web.Request,
                 *, inline_trace: bool,
                 stream_class: type[CallerStream] = CallerStream) -> tuple[web.StreamResponse, TraceEvent]:
    """Streaming: SSE events forwarded as they arrive; usage read from the final chunk on the way."""
    route, model = call.route, call.model
    assert route is not None and model is not None
    caller_wants_usage = wire.wants_usage_chunk(body)
    dialect = dialect_for(target)
    outbound = dialect.request(target, body, route.upstream_model)
    if call.capture is not None:
        call.capture.upstream_request, call.capture.upstream_response = outbound.body, b""
        call.capture.upstream_chunks.clear()
    call.upstream_started = time.perf_counter()
    try:
        context = upstream.post(outbound)
        response = await context.__aenter__()
    except TimeoutError:
        attempt(call, route, 504, "timeout")
        raise UpstreamUnavailable(f"the provider {route.provider!r} timed out", code="upstream_timeout",
                                  status=504) from None
    except aiohttp.ClientError as exc:
        attempt(call, route, 502, type(exc).__name__)
        raise UpstreamUnavailable(f"the provider {route.provider!r} could not be reached") from None
    try:
        if response.status >= 400:
            raw = await response.read()
            call.upstream_ended = time.perf_counter()
            if call.capture is not None:
                call.capture.upstream_response = raw
            attempt(call, route, response.status, "http_error")
            raise _upstream_failure(dialect, response.status, raw)
        out = stream_class(status=200, headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
            "x-request-id": call.request_id,
            OVERHEAD_HEADER: f"{(call.upstream_started - call.started) * 1000:.3f}", **call.response_headers})
        if call.capture is not None:
            out.capture = call.capture.caller_chunks
        await out.prepare(request)
        call.status_code = 200
        trace = await _relay(call, response, out, dialect.stream(model=model.id),
                             caller_wants_usage=caller_wants_usage, inline_trace=inline_trace)
        return out, trace
    finally:
        await context.__aexit__(None, None, None)


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
    route = call.route
    assert route is not None
    buffer = bytearray()
    finished = False
    broken: dict[str, Any] = {"error": _INTERRUPTED}
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
            if call.stream_head is None:
                call.stream_head = wire.event_head(event)
            usage, usage_only = wire.event_usage(event)
            if usage is not None:
                call.usage = usage
            if usage_only and not caller_wants_usage:
                continue
            ready.append(restorer.event(event) if restorer is not None else event)
        if ready:
            sent.extend(ready)
            if call.first_byte is None:
                call.first_byte = time.perf_counter()
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
            call.error_type = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        except StreamBroken as exc:
            call.error_type, broken = "upstream_stream_error", exc.body
        call.upstream_ended = time.perf_counter()
        held = restorer.finish() if restorer is not None else b""
        if held:
            await _send(out, held)
        if call.usage is None and sent:
            call.usage = wire.estimate_usage(sent, prompt_bytes=call.prompt_bytes)
            call.usage_estimated = True
        if finished:
            attempt(call, route, 200, None)
            trace = call.trace()
            if inline_trace:
                head = call.stream_head or wire.ChunkHead(id=f"chatcmpl-{call.request_id}")
                await _send(out, b"data: " + codec.encode({
                    "id": head.id, "object": "chat.completion.chunk", "created": head.created, "model": head.model,
                    "choices": [], "routeur_trace": trace}) + b"\n\n")
            await _send(out, wire.DONE)
        else:
            call.status_code = 502
            call.error_code = broken["error"].get("code") or _INTERRUPTED["code"]
            call.error_type = call.error_type or "stream_interrupted"
            attempt(call, route, 502, call.error_type)
            trace = call.trace()
            await _send(out, b"data: " + codec.encode(broken) + b"\n\n")
        await _send_eof(out)
    except _CallerGone:
        call.upstream_ended = call.upstream_ended or time.perf_counter()
        if call.usage is None and sent:  # the caller is billed for what it was sent
            call.usage = wire.estimate_usage(sent, prompt_bytes=call.prompt_bytes)
            call.usage_estimated = True
        attempt(call, route, 499, "client_closed")
        call.status_code, call.error_type, call.error_code = 499, "client_closed", "client_closed_request"
        trace = call.trace()
    return trace


def attempt(call: Call, route: Route, status: int, error_type: str | None) -> None:
    latency = (time.perf_counter() - call.upstream_started) * 1000
    call.attempts.append(Attempt(route.provider, route.upstream_model, status, round(latency, 3), error_type))
