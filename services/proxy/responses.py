"""POST /v1/responses: OpenAI Responses API callers served by the metered pipeline on every route. OpenAI and
Azure OpenAI routes take the body as it is (responses_native.py); every other route gets it translated to the
chat form, the reply and stream translated back to a `response` and its typed events."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

from proto.trace import TraceEvent
from services.proxy import chat
from services.proxy import openai_wire as wire
from services.proxy import responses_native as native
from services.proxy import responses_wire as rw
from services.proxy.adapters.openai import speaks_responses
from services.proxy.billing_client import reservation
from services.proxy.call import Call
from services.proxy.chat import CallerStream
from services.proxy.endpoint import Endpoint
from services.proxy.errors import ProxyError, error_response
from services.proxy.providers import Target
from services.proxy.upstream import Upstream

ENDPOINT = "/v1/responses"
_decoder = msgspec.json.Decoder()


def parse(raw: bytes) -> dict[str, Any]:
    """The endpoint's parser: a CreateResponse body checked and translated to a chat body (the caller's model
    id stays the body's `model`); InvalidRequest naming what a translated route cannot honour."""
    return rw.parse(raw)[1]


def _response_id(call: Call) -> str:
    return f"resp_{call.request_id}"


class ResponsesStream(CallerStream):
    """The pipeline's OpenAI chat SSE rewritten on the way out as the Responses API's typed events.

    `data: [DONE]` closes the open items and sends `response.completed` (with usage); an OpenAI error event
    becomes `error` then `response.failed`. The `routeur_trace` chunk (`Routeur-Trace: true`) becomes one
    `routeur_trace` event (data `{"type": "routeur_trace", "sequence_number": n, "routeur_trace": {...}}`)
    after `response.completed`."""

    def __init__(self, translator: rw.StreamToResponses, *, headers: Mapping[str, str]) -> None:
        super().__init__(status=200, headers=headers)
        self._buffer = bytearray()
        self._translator = translator
        self._trace: dict[str, Any] | None = None

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data
        out = b"".join(self._translate(event) for event in wire.split_events(self._buffer))
        if out:
            await super().write(out)

    def _translate(self, event: bytes) -> bytes:
        translator = self._translator
        if wire.is_done(event):
            events = translator.finish()
            if self._trace is not None:
                events.append(translator.own_event("routeur_trace", routeur_trace=self._trace))
            return b"".join(rw.encode_event(e) for e in events)
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
            return b"".join(rw.encode_event(e) for e in translator.fail(chunk["error"]))
        if "routeur_trace" in chunk:
            self._trace = chunk["routeur_trace"]
            return b""
        return b"".join(rw.encode_event(e) for e in translator.feed(chunk))


def _render(response: web.Response, call: Call, settings: Mapping[str, Any]) -> web.Response:
    """The pipeline's `chat.completion` reply as a `response` object (status and headers kept)."""
    assert isinstance(response.body, bytes)
    completion = _decoder.decode(response.body)
    reply = rw.from_completion(completion, response_id=_response_id(call), model=call.requested_model,
                               settings=settings)
    if "routeur_trace" in completion:
        reply["routeur_trace"] = completion["routeur_trace"]
    headers = {name: value for name, value in response.headers.items()
               if name.lower() not in ("content-type", "content-length")}
    return web.Response(status=response.status, body=msgspec.json.encode(reply), content_type="application/json",
                        headers=headers)


async def run(call: Call, upstream: Upstream, target: Target, body: dict[str, Any], request: web.Request,
              inline_trace: bool) -> tuple[web.StreamResponse, TraceEvent]:
    """One attempt. A route that serves the Responses API gets the caller's own body when the key's DLP policy
    changed nothing in it (and saw all of its text); every other route gets the screened chat translation
    through chat's run, its reply or stream translated back, once nothing it cannot honour is asked."""
    original = rw.check_request(wire.decode_json(await request.read()))  # aiohttp keeps the read body
    if speaks_responses(target) and call.redactions == 0 and not (call.dlp_active and rw.translatable(original)[1]):
        return await native.run(call, upstream, target, original, request, inline_trace)
    refused = rw.refusal(original)
    if refused is not None:
        if speaks_responses(target):  # the route takes it, but not once DLP has rewritten the conversation
            refused.message += (" The key's DLP policy redacted this request, so it is sent screened and "
                                "translated to chat completions rather than passed through.")
        raise refused
    settings = rw.echo(original)

    def open_stream(call: Call, headers: dict[str, str]) -> CallerStream:
        translator = rw.StreamToResponses(response_id=_response_id(call), model=call.requested_model,
                                          settings=settings, created=int(time.time()))
        return ResponsesStream(translator, headers=headers)

    response, trace = await chat.run(call, upstream, target, body, request, inline_trace, open_stream=open_stream)
    if isinstance(response, web.Response) and not response.prepared:
        response = _render(response, call, settings)
    return response, trace


def render_error(error: ProxyError, request_id: str) -> web.Response:
    """OpenAI's error JSON, naming the caller's `max_output_tokens` where the pipeline checked its chat form."""
    if error.param == "max_completion_tokens":
        error.param = "max_output_tokens"
        error.message = error.message.replace("'max_completion_tokens'", "'max_output_tokens'")
    return error_response(error, request_id)


RESPONSES = Endpoint(path=ENDPOINT, kind="chat", parse=parse, reserve=reservation, run=run,
                     render_error=render_error)
