"""POST /v1/messages: Anthropic-format callers. Claude routes (Anthropic, Bedrock) take the body natively
(messages_native.py); every other route gets it translated to OpenAI's form and served by chat.py, the answer
rendered back in Anthropic's format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

from proto.trace import TraceEvent
from services.proxy import chat, messages_native
from services.proxy import openai_wire as wire
from services.proxy.adapters import anthropic_inbound as inbound
from services.proxy.adapters.anthropic import TranslationError, UnsupportedParameter
from services.proxy.billing_client import reservation
from services.proxy.call import Call
from services.proxy.chat import CallerStream
from services.proxy.endpoint import Endpoint
from services.proxy.errors import InvalidRequest, ProxyError
from services.proxy.providers import Target
from services.proxy.upstream import Upstream

ENDPOINT = "/v1/messages"
_OVERLOADED_CODES = frozenset({"overloaded", "overloaded_error"})
_decoder = msgspec.json.Decoder()


def error_type(status: int, code: str | None = None) -> tuple[int, str]:
    """(HTTP status, Anthropic error type) for an OpenAI-style error; an overloaded upstream answers 529."""
    if status == 529 or code in _OVERLOADED_CODES:
        return 529, "overloaded_error"
    if status == 429 or code == "rate_limit_exceeded":
        return status, "rate_limit_error"
    named = {401: "authentication_error", 402: "permission_error", 403: "permission_error",
             404: "not_found_error", 413: "request_too_large"}
    return status, named.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_response(error: ProxyError, request_id: str) -> web.Response:
    """A ProxyError as Anthropic's error JSON, keeping the error's own headers (Retry-After, rate limits)."""
    status, kind = error_type(error.status, error.code)
    body = inbound.error_body(kind, error.message, request_id)
    headers = {**error.headers, "request-id": request_id, "x-request-id": request_id}
    return web.Response(status=status, body=msgspec.json.encode(body), content_type="application/json",
                        headers=headers)


def parse(raw: bytes) -> dict[str, Any]:
    """The endpoint's parser: an Anthropic Messages body checked for what every route needs (model, max_tokens,
    messages, blocks); it stays in Anthropic's form for the pipeline (routing, DLP, the archive) and is translated
    only for a route that is not Claude's (`translate`)."""
    body = wire.decode_json(raw)
    try:
        return inbound.check_request(body)
    except TranslationError as exc:
        raise InvalidRequest(exc.message, param=exc.param) from None


def translate(body: dict[str, Any]) -> dict[str, Any]:
    """The body as an OpenAI chat body for a route that is not Claude's (the caller's model id stays `model`);
    what it cannot carry is a 400 naming it."""
    try:
        translated = inbound.request_to_openai(body)
    except UnsupportedParameter as exc:
        raise InvalidRequest(exc.message, param=exc.param, code="unsupported_parameter") from None
    except TranslationError as exc:
        raise InvalidRequest(exc.message, param=exc.param) from None
    except (AttributeError, TypeError, KeyError):  # a block or tool that is not an object, and the like
        raise InvalidRequest("request body does not follow the Messages API schema") from None
    return wire.check_chat(translated)  # what the translation made must be a well-formed OpenAI body


async def run(call: Call, upstream: Upstream, target: Target, body: dict[str, Any], request: web.Request,
              inline_trace: bool) -> tuple[web.StreamResponse, TraceEvent]:
    """One attempt: native on a Claude route, else translated through the chat endpoint's attempt."""
    if messages_native.serves(target):
        return await messages_native.run(call, upstream, target, body, request, inline_trace)
    return await chat.run(call, upstream, target, translate(body), request, inline_trace,
                          open_stream=AnthropicStream.open)


def render(response: web.Response, call: Call) -> web.Response:
    """The pipeline's OpenAI `chat.completion` reply as an Anthropic message naming the model the caller asked
    for (status and headers kept)."""
    if isinstance(response, messages_native.NativeResponse):
        return response
    assert isinstance(response.body, bytes)
    completion = _decoder.decode(response.body)
    message = inbound.response_from_openai(completion, model=call.requested_model)
    if "routeur_trace" in completion:
        message["routeur_trace"] = completion["routeur_trace"]
    headers = {name: value for name, value in response.headers.items()
               if name.lower() not in ("content-type", "content-length")}
    if "x-request-id" in response.headers:
        headers["request-id"] = response.headers["x-request-id"]
    return web.Response(status=response.status, body=msgspec.json.encode(message), content_type="application/json",
                        headers=headers)


class AnthropicStream(CallerStream):
    """The pipeline's OpenAI SSE stream rewritten on the way out as Anthropic's named events.

    Each `write` may carry several complete OpenAI events. `data: [DONE]` closes the message
    (message_delta with the usage, message_stop); an OpenAI error event becomes `event: error`.
    The `routeur_trace` chunk (sent when the caller set `Routeur-Trace: true`) becomes one extra
    `event: routeur_trace` (data `{"type": "routeur_trace", "routeur_trace": {...}}`) after
    message_stop, so the message's own events stay contiguous. The SDK's `messages.stream()` skips
    it; iterating `create(stream=True)` yields it as an event whose `.type` is "routeur_trace".
    """

    def __init__(self, *, model: str, status: int = 200, reason: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        headers = {k: v for k, v in (headers or {}).items() if k.lower() != "content-type"}
        headers["Content-Type"] = "text/event-stream; charset=utf-8"
        if "x-request-id" in headers:
            headers["request-id"] = headers["x-request-id"]
        super().__init__(status=status, reason=reason, headers=headers)
        self._buffer = bytearray()
        self._translator = inbound.StreamToAnthropic(model=model)
        self._trace: dict[str, Any] | None = None

    @classmethod
    def open(cls, call: Call, headers: dict[str, str]) -> AnthropicStream:
        """chat.OpenStream: the stream for `call`, echoing the model id the caller asked for."""
        return cls(model=call.requested_model, headers=headers)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data
        out = b"".join(self._translate(event) for event in wire.split_events(self._buffer))
        if out:
            await super().write(out)

    def _translate(self, event: bytes) -> bytes:
        """The Anthropic events for one OpenAI SSE event."""
        translator = self._translator
        if wire.is_done(event):
            events = translator.finish()
            if self._trace is not None:
                events.append(("routeur_trace", {"type": "routeur_trace", "routeur_trace": self._trace}))
            return _encode(events)
        payload = event.strip()
        if not payload.startswith(b"data:"):
            return b""
        try:
            chunk = _decoder.decode(payload[5:].strip())
        except msgspec.DecodeError:
            return b""
        if not isinstance(chunk, dict):
            return b""
        if isinstance(chunk.get("error"), dict):
            return _encode([("error", _stream_error(chunk["error"]))])
        if "routeur_trace" in chunk:
            self._trace = chunk["routeur_trace"]
            return b""
        return _encode(translator.feed(chunk))


def _stream_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI error event's `error` as Anthropic's in-stream error (the status is long sent: 502 if unknown)."""
    code = error.get("code")
    _, kind = error_type(502, code if isinstance(code, str) else None)
    return inbound.error_body(kind, str(error.get("message") or "stream error"))


def _encode(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(inbound.encode_event(name, data) for name, data in events)


MESSAGES = Endpoint(path=ENDPOINT, kind="chat", parse=parse, reserve=reservation, run=run, render=render,
                    render_error=error_response)
