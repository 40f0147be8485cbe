"""Errors shared by the provider adapters: a request a provider's format cannot express, an answer the provider
itself flags as a failed generation, and a provider's error inside an already started stream.

    TranslationError (ValueError; .message, .param)   → the proxy answers 400 naming `param`
    └── UnsupportedParameter (.model; .api names the provider in the message)
        ├── bedrock.UnsupportedParameter                (api "AWS Bedrock")
        └── gemini.UnsupportedParameter                 (api "Google Gemini")
    GenerationFailed (ValueError; .message, .code, .body()) → 502 `upstream_generation_failed` with the provider's
    │                                                         reason, or that error event in a stream
    ├── bedrock.MalformedOutput                         (stopReason malformed_model_output / malformed_tool_use)
    └── gemini.GenerationFailed                         (finishReason MALFORMED_FUNCTION_CALL, OTHER, ...)
    StreamBroken (Exception; .body = an OpenAI error body) → the proxy ends the stream with that error
    ├── anthropic.StreamError (.error_type, .status)    an Anthropic `error` event
    └── gemini.StreamError                              an error object in a Gemini stream
"""

from __future__ import annotations

from typing import Any


class TranslationError(ValueError):
    """A request that cannot be expressed in the provider's wire format; the proxy answers 400 naming `param`."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UnsupportedParameter(TranslationError):
    """A parameter the target model's API has no equivalent for; `api` names that API in the message."""

    api = ""

    def __init__(self, param: str, model: str, detail: str = "") -> None:
        where = f" ({self.api})" if self.api else ""
        super().__init__(f"'{param}' is not supported by model '{model}'{where}" + (f": {detail}" if detail else ""),
                         param=param)
        self.model = model


class GenerationFailed(ValueError):
    """The provider answered but says its generation failed (no usable answer, and no OpenAI finish_reason for
    that): the same code on both paths and every provider, the message naming the provider's reason."""

    code = "upstream_generation_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        """The OpenAI error body for this failure (the 502 reply, or the stream's error event)."""
        return {"error": {"message": self.message, "type": "server_error", "param": None, "code": self.code}}


class StreamBroken(Exception):
    """The provider reported an error inside an already started stream; `body` is that error as OpenAI's."""

    def __init__(self, body: dict[str, Any], description: str | None = None) -> None:
        super().__init__(description or body["error"]["message"])
        self.body = body


def upstream_bad_response(message: str) -> StreamBroken:
    """A stream the proxy cannot read any further (corrupt framing, a payload that is not JSON)."""
    return StreamBroken({"error": {"message": message, "type": "server_error", "param": None,
                                   "code": "upstream_bad_response"}})
