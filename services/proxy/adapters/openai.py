"""OpenAI chat completions and every compatible API (Azure OpenAI included): passed through, bytes in, bytes out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from catalog.schema import Capabilities
from proto import codec
from services.proxy import openai_wire as wire
from services.proxy.adapters.base import DEFAULT_CAPABILITIES, StreamDecoder, UpstreamCall

if TYPE_CHECKING:
    from services.proxy.providers import Target


class _OpenAIStream:
    def events(self, buffer: bytearray) -> list[bytes]:
        return wire.split_events(buffer)

    def close(self) -> list[bytes]:
        return []


class OpenAIDialect:
    """OpenAI chat completions at `{base_url}/chat/completions` with a Bearer key."""

    def request(self, target: Target, body: dict[str, Any], upstream_model: str,
                *, capabilities: Capabilities = DEFAULT_CAPABILITIES) -> UpstreamCall:
        return UpstreamCall(f"{target.base_url}/chat/completions",
                            {"Authorization": f"Bearer {target.api_key.reveal()}", "Content-Type": "application/json"},
                            codec.encode(wire.upstream_body(body, upstream_model)))

    def response(self, raw: bytes, *, model: str) -> bytes:
        return raw

    def stream(self, *, model: str) -> StreamDecoder:
        return _OpenAIStream()

    def error(self, status: int, raw: bytes,
              headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        return status, wire.upstream_error_body(raw, status)


class AzureDialect(OpenAIDialect):
    """Azure OpenAI: the OpenAI wire format at `/openai/deployments/{deployment}/chat/completions`,
    `api-version` from the catalog's provider entry, the key in an `api-key` header."""

    def request(self, target: Target, body: dict[str, Any], upstream_model: str,
                *, capabilities: Capabilities = DEFAULT_CAPABILITIES) -> UpstreamCall:
        deployment = quote(upstream_model, safe="")
        return UpstreamCall(
            f"{target.base_url}/openai/deployments/{deployment}/chat/completions?api-version={target.api_version}",
            {"api-key": target.api_key.reveal(), "Content-Type": "application/json"},
            codec.encode(wire.upstream_body(body, upstream_model)))
