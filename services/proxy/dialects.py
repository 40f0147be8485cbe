"""Which wire format a target speaks: the registry of provider dialects. Each Dialect lives in its provider's
module under `adapters/` beside the translations it calls; the seam they share is `adapters/base.py`."""

from __future__ import annotations

from services.proxy.adapters.anthropic import AnthropicDialect
from services.proxy.adapters.base import Dialect, StreamDecoder, UpstreamCall
from services.proxy.adapters.bedrock import BedrockDialect
from services.proxy.adapters.errors import StreamBroken
from services.proxy.adapters.gemini import GeminiDialect
from services.proxy.adapters.openai import AzureDialect, OpenAIDialect
from services.proxy.providers import Target

__all__ = ["DIALECTS", "Dialect", "StreamBroken", "StreamDecoder", "UpstreamCall", "dialect_for"]

DIALECTS: dict[str, Dialect] = {"openai": OpenAIDialect(), "azure": AzureDialect(),
                                "anthropic": AnthropicDialect(), "gemini": GeminiDialect()}
"""The dialects that need nothing but the Target; Bedrock's is made per target (it holds SigV4 credentials)."""


def dialect_for(target: Target) -> Dialect:
    """The wire format of a target; Bedrock's carries the target's SigV4 credentials."""
    if target.format == "bedrock":
        return BedrockDialect(secret_key=target.secret_key.reveal(), region=target.region or "us-east-1",
                              session_token=target.session_token.reveal() or None)
    return DIALECTS[target.format]
