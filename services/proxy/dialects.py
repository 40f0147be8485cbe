"""Wire formats the proxy speaks upstream. Each turns an OpenAI request into the provider's HTTP call and
the provider's answer back into OpenAI bytes; OpenAI-format providers are passed through untouched."""

from __future__ import annotations

import time
from typing import Any, Protocol
from urllib.parse import quote

import msgspec

from proto import codec
from services.proxy import openai_wire as wire
from services.proxy.adapters import anthropic, gemini
from services.proxy.errors import InvalidRequest
from services.proxy.providers import Target

_decoder = msgspec.json.Decoder()


class UpstreamCall(msgspec.Struct, frozen=True):
    url: str
    headers: dict[str, str]
    body: bytes


class StreamBroken(Exception):
    """The provider reported an error inside an already started stream."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["error"]["message"])
        self.body = body


class StreamDecoder(Protocol):
    def events(self, buffer: bytearray) -> list[bytes]:
        """Complete OpenAI SSE events (including `data: [DONE]`) taken from the upstream bytes in `buffer`."""

    def close(self) -> list[bytes]:
        """Events owed when the upstream closed the connection (empty when the stream was cut short)."""


class Dialect(Protocol):
    def request(self, target: Target, body: dict[str, Any], upstream_model: str) -> UpstreamCall: ...

    def response(self, raw: bytes, *, model: str) -> bytes: ...

    def stream(self, *, model: str) -> StreamDecoder: ...

    def error(self, status: int, raw: bytes) -> tuple[int, dict[str, Any]]: ...


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + codec.encode(chunk) + b"\n\n"


def _unsupported(exc: ValueError) -> InvalidRequest:
    return InvalidRequest(str(exc), param=getattr(exc, "param", None), code="unsupported_parameter")


class _OpenAIStream:
    def events(self, buffer: bytearray) -> list[bytes]:
        return wire.split_events(buffer)

    def close(self) -> list[bytes]:
        return []


class OpenAIDialect:
    """OpenAI chat completions and every compatible API: bytes in, bytes out."""

    def request(self, target: Target, body: dict[str, Any], upstream_model: str) -> UpstreamCall:
        return UpstreamCall(f"{target.base_url}/chat/completions",
                            {"Authorization": f"Bearer {target.api_key.reveal()}", "Content-Type": "application/json"},
                            codec.encode(wire.upstream_body(body, upstream_model)))

    def response(self, raw: bytes, *, model: str) -> bytes:
        return raw

    def stream(self, *, model: str) -> StreamDecoder:
        return _OpenAIStream()

    def error(self, status: int, raw: bytes) -> tuple[int, dict[str, Any]]:
        return status, wire.upstream_error_body(raw, status)


class AzureDialect(OpenAIDialect):
    """Azure OpenAI: the OpenAI wire format at `/openai/deployments/{deployment}/chat/completions`,
    `api-version` from the catalog's provider entry, the key in an `api-key` header."""

    def request(self, target: Target, body: dict[str, Any], upstream_model: str) -> UpstreamCall:
        deployment = quote(upstream_model, safe="")
        return UpstreamCall(
            f"{target.base_url}/openai/deployments/{deployment}/chat/completions?api-version={target.api_version}",
            {"api-key": target.api_key.reveal(), "Content-Type": "application/json"},
            codec.encode(wire.upstream_body(body, upstream_model)))


class _AnthropicStream:
    def __init__(self, model: str) -> None:
        self._translator = anthropic.StreamTranslator(model=model, include_usage=True, created=int(time.time()))

    def events(self, buffer: bytearray) -> list[bytes]:
        out: list[bytes] = []
        for raw in wire.split_events(buffer):
            parsed = anthropic.parse_event(raw)
            if parsed is None:
                continue
            try:
                chunks = self._translator.feed(*parsed)
            except anthropic.StreamError as exc:
                raise StreamBroken(exc.openai_body()) from None
            out.extend(_event(chunk) for chunk in chunks)
            if self._translator.done:
                out.append(wire.DONE)
        return out

    def close(self) -> list[bytes]:
        return []


class AnthropicDialect:
    """Anthropic Messages API (`/v1/messages`, `x-api-key`, named SSE events)."""

    def request(self, target: Target, body: dict[str, Any], upstream_model: str) -> UpstreamCall:
        try:
            translated = anthropic.to_upstream(body, upstream_model)
        except anthropic.TranslationError as exc:
            raise _unsupported(exc) from None
        return UpstreamCall(f"{target.base_url}/messages", anthropic.request_headers(target.api_key.reveal()),
                            codec.encode(translated))

    def response(self, raw: bytes, *, model: str) -> bytes:
        return codec.encode(anthropic.from_upstream(_decoder.decode(raw), model=model))

    def stream(self, *, model: str) -> StreamDecoder:
        return _AnthropicStream(model)

    def error(self, status: int, raw: bytes) -> tuple[int, dict[str, Any]]:
        return anthropic.openai_status(status), anthropic.error_to_openai(status, raw)


class _GeminiStream:
    def __init__(self, model: str) -> None:
        self._translator = gemini.StreamTranslator(model=model, include_usage=True, created=int(time.time()))
        self._finished = False

    def events(self, buffer: bytearray) -> list[bytes]:
        out: list[bytes] = []
        for data in gemini.split_sse_data(buffer):
            try:
                chunks = self._translator.feed(data)
            except gemini.StreamError as exc:
                raise StreamBroken(exc.body) from None
            self._finished = self._finished or any(c.get("finishReason") for c in data.get("candidates") or [])
            out.extend(_event(chunk) for chunk in chunks)
        return out

    def close(self) -> list[bytes]:
        if not self._finished:
            return []
        return [*(_event(chunk) for chunk in self._translator.finish()), wire.DONE]


class GeminiDialect:
    """Google Gemini `generateContent` / `streamGenerateContent?alt=sse` (`x-goog-api-key`)."""

    def request(self, target: Target, body: dict[str, Any], upstream_model: str) -> UpstreamCall:
        try:
            path, translated = gemini.to_upstream(body, upstream_model)
        except gemini.UnsupportedParameter as exc:
            raise _unsupported(exc) from None
        return UpstreamCall(f"{target.base_url}/{path}",
                            {"x-goog-api-key": target.api_key.reveal(), "Content-Type": "application/json"},
                            codec.encode(translated))

    def response(self, raw: bytes, *, model: str) -> bytes:
        return codec.encode(gemini.from_upstream(_decoder.decode(raw), model=model))

    def stream(self, *, model: str) -> StreamDecoder:
        return _GeminiStream(model)

    def error(self, status: int, raw: bytes) -> tuple[int, dict[str, Any]]:
        return status, gemini.error_to_openai(status, raw)


DIALECTS: dict[str, Dialect] = {"openai": OpenAIDialect(), "azure": AzureDialect(),
                                "anthropic": AnthropicDialect(), "gemini": GeminiDialect()}


def dialect_for(target: Target) -> Dialect:
    """The wire format of a target; Bedrock's carries the target's SigV4 credentials."""
    if target.format == "bedrock":
        from services.proxy.dialect_bedrock import BedrockDialect  # imports this module

        return BedrockDialect(secret_key=target.secret_key.reveal(), region=target.region or "us-east-1",
                              session_token=target.session_token.reveal() or None)
    return DIALECTS[target.format]
