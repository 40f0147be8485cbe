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


NATIVE_RESPONSES_PROVIDERS = frozenset({"openai"})
"""Providers of the `openai` format that serve the Responses API themselves (and keep its server-side state);
the other OpenAI-compatible hosts (DeepSeek, Mistral, Groq, Together) speak chat completions only."""


def speaks_responses(target: Target) -> bool:
    """Whether `target` takes a Responses API body as it is (OpenAI, and Azure OpenAI's v1 API)."""
    return target.format == "azure" or (target.format == "openai" and target.provider in NATIVE_RESPONSES_PROVIDERS)


class OpenAIDialect:
    """OpenAI chat completions at `{base_url}/chat/completions` with a Bearer key."""

    def responses_request(self, target: Target, body: dict[str, Any], upstream_model: str) -> UpstreamCall:
        """A Responses API body passed through to `{base_url}/responses`, naming the route's model."""
        return UpstreamCall(f"{target.base_url}/responses",
                            {"Authorization": f"Bearer {target.api_key.reveal()}", "Content-Type": "application/json"},
                            codec.encode({**body, "model": upstream_model}))

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

    def responses_request(self, target: Target, body: dict[str, Any], upstream_model: str) -> UpstreamCall:
        """Azure's v1 API (`/openai/v1/responses`, no api-version): the deployment is the body's `model`."""
        return UpstreamCall(f"{target.base_url}/openai/v1/responses",
                            {"api-key": target.api_key.reveal(), "Content-Type": "application/json"},
                            codec.encode({**body, "model": upstream_model}))
