"""The Bedrock dialect of the proxy: Converse / ConverseStream calls signed with SigV4, answers back as OpenAI bytes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec
from yarl import URL

from proto import codec
from services.proxy import openai_wire as wire
from services.proxy.adapters import bedrock
from services.proxy.adapters.eventstream import EventStreamDecoder, EventStreamError
from services.proxy.dialects import StreamBroken, StreamDecoder, UpstreamCall
from services.proxy.errors import InvalidRequest
from services.proxy.providers import Target

_decoder = msgspec.json.Decoder()


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + codec.encode(chunk) + b"\n\n"


def _broken(message: str) -> StreamBroken:
    return StreamBroken({"error": {"message": message, "type": "server_error", "param": None,
                                   "code": "upstream_bad_response"}})


class _BedrockStream:
    """The binary event stream of ConverseStream in, OpenAI SSE events out."""

    def __init__(self, model: str) -> None:
        self._frames = EventStreamDecoder()
        self._translator = bedrock.StreamTranslator(model=model, include_usage=True, created=int(time.time()))

    def events(self, buffer: bytearray) -> list[bytes]:
        data = bytes(buffer)
        buffer.clear()
        try:
            frames = self._frames.feed(data)
        except EventStreamError as exc:
            raise _broken(f"the Bedrock event stream is corrupt: {exc}") from None
        out: list[bytes] = []
        for headers, payload in frames:
            kind = headers.get(":message-type")
            if kind == "exception":
                name = str(headers.get(":exception-type") or "")
                raise StreamBroken(bedrock.error_to_openai(0, payload, name)) from None
            if kind == "error":
                message = str(headers.get(":error-message") or headers.get(":error-code") or "stream error")
                raise _broken(f"Bedrock stream error: {message}")
            try:
                decoded = _decoder.decode(payload) if payload else {}
            except msgspec.DecodeError:
                raise _broken("Bedrock sent an event whose payload is not JSON") from None
            chunks = self._translator.feed(str(headers.get(":event-type") or ""), decoded)
            out.extend(_event(chunk) for chunk in chunks)
            if self._translator.done:
                out.append(wire.DONE)
        return out

    def close(self) -> list[bytes]:
        # messageStop came but the metadata event (usage) did not: the answer is whole, the usage is estimated.
        return [wire.DONE] if self._translator.finished and not self._translator.done else []


class BedrockDialect:
    """AWS Bedrock Converse API (`/model/{id}/converse[-stream]`), signed with SigV4 for service `bedrock`.

    The Target's api_key is the access key id; the secret, region and optional session token come from here.
    The region in a `bedrock-runtime.{region}.amazonaws.com` base URL wins over `region`, so the signature's
    scope always matches the endpoint called.
    """

    def __init__(self, *, secret_key: str, region: str, session_token: str | None = None) -> None:
        self._secret_key = secret_key
        self._region = region
        self._session_token = session_token or None

    def request(self, target: Target, body: dict[str, Any], upstream_model: str) -> UpstreamCall:
        try:
            path, translated = bedrock.to_upstream(body, upstream_model)
        except bedrock.TranslationError as exc:
            raise InvalidRequest(str(exc), param=exc.param, code="unsupported_parameter") from None
        # aiohttp sends a str URL as yarl re-quotes it (`%3A` -> `:`): sign exactly that form, since the
        # path's encoding is part of the canonical request AWS recomputes.
        url = str(URL(f"{target.base_url}/{path}"))
        payload = codec.encode(translated)
        headers = bedrock.sign("POST", url, {"Content-Type": "application/json"}, payload,
                               access_key=target.api_key.reveal(), secret_key=self._secret_key,
                               region=bedrock.region_of(url) or self._region, session_token=self._session_token)
        return UpstreamCall(url, headers, payload)

    def response(self, raw: bytes, *, model: str) -> bytes:
        return codec.encode(bedrock.from_upstream(_decoder.decode(raw), model=model))

    def stream(self, *, model: str) -> StreamDecoder:
        return _BedrockStream(model)

    def error(self, status: int, raw: bytes, headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """`headers` (optional) lets the `x-amzn-ErrorType` header name the exception; else the status does."""
        error_type = (headers or {}).get("x-amzn-ErrorType") or (headers or {}).get("x-amzn-errortype")
        return bedrock.openai_status(status, error_type), bedrock.error_to_openai(status, raw, error_type)
