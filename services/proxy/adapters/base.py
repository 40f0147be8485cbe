"""The seam every wire format implements: a Dialect turns an OpenAI request into the provider's HTTP call and
the provider's answer, stream and errors back into OpenAI's. Each provider module holds its own Dialect."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from catalog.schema import Capabilities
from proto import codec
from services.proxy.adapters.errors import TranslationError
from services.proxy.errors import InvalidRequest

if TYPE_CHECKING:
    from services.proxy.providers import Target

DEFAULT_CAPABILITIES = Capabilities()
"""What a model may take when nothing narrows it (a dialect's `capabilities` default)."""


class UpstreamCall(msgspec.Struct, frozen=True):
    """One HTTP POST to a provider: where, with which headers, and the body."""

    url: str
    headers: dict[str, str]
    body: bytes


class StreamDecoder(Protocol):
    def events(self, buffer: bytearray) -> list[bytes]:
        """Complete OpenAI SSE events (including `data: [DONE]`) taken from the upstream bytes in `buffer`.

        Raises StreamBroken when the provider reports an error inside the stream."""

    def close(self) -> list[bytes]:
        """Events owed when the upstream closed the connection (empty when the stream was cut short)."""


class Dialect(Protocol):
    def request(self, target: Target, body: dict[str, Any], upstream_model: str,
                *, capabilities: Capabilities = DEFAULT_CAPABILITIES) -> UpstreamCall:
        """The provider call for an OpenAI chat-completions body, mapped by the catalog model's `capabilities`;
        raises InvalidRequest for what cannot be sent."""

    def response(self, raw: bytes, *, model: str) -> bytes:
        """The provider's non-streamed answer as an OpenAI `chat.completion`, named `model`."""

    def stream(self, *, model: str) -> StreamDecoder:
        """A decoder for one streamed answer."""

    def error(self, status: int, raw: bytes,
              headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        """(status the proxy answers with, OpenAI error body) for a provider's error response and its headers
        (Bedrock names the exception in `x-amzn-ErrorType`)."""


def sse_event(chunk: dict[str, Any]) -> bytes:
    """One OpenAI SSE `data:` event."""
    return b"data: " + codec.encode(chunk) + b"\n\n"


def invalid_request(exc: TranslationError) -> InvalidRequest:
    """The proxy's 400 for a request a provider's format cannot express (`unsupported_parameter`)."""
    return InvalidRequest(str(exc), param=exc.param, code="unsupported_parameter")
