"""Anthropic Messages API <-> OpenAI chat completions: request, response, stream and error translation, and the
AnthropicDialect the proxy calls them through."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from catalog.schema import SAMPLING_ONE_OF, Capabilities
from proto import codec
from services.proxy import openai_wire as wire
from services.proxy.adapters.base import DEFAULT_CAPABILITIES, StreamDecoder, UpstreamCall, invalid_request, sse_event
from services.proxy.adapters.errors import StreamBroken, TranslationError, UnsupportedParameter
from services.proxy.adapters.shared import (
    check_unsupported,
    function_tools,
    nonblank,
    texts,
    to_turns,
    tool_call_id,
    tool_calls,
)
from services.proxy.adapters.shared import tool_arguments as _arguments

if TYPE_CHECKING:
    from services.proxy.providers import Target

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# Parameters with no Anthropic equivalent, and the values that mean "not used" (those pass silently).
_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "functions": (None, []),
    "function_call": (None,),
    "web_search_options": (None,),
    "reasoning_effort": (None,),
}
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
           "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}
# Anthropic error type -> (OpenAI type, OpenAI code, HTTP status the proxy should answer with)
_ERRORS: dict[str, tuple[str, str | None, int]] = {
    "invalid_request_error": ("invalid_request_error", None, 400),
    "authentication_error": ("authentication_error", "invalid_api_key", 401),
    "billing_error": ("insufficient_quota", "insufficient_quota", 402),
    "permission_error": ("permission_error", "permission_denied", 403),
    "not_found_error": ("invalid_request_error", "not_found", 404),
    "request_too_large": ("invalid_request_error", "request_too_large", 413),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded", 429),
    "api_error": ("server_error", "api_error", 500),
    "timeout_error": ("server_error", "timeout", 504),
    "overloaded_error": ("server_error", "overloaded", 503),
}
ERROR_TYPES_BY_STATUS = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                         403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                         429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error",
                         529: "overloaded_error"}
"""The Anthropic error type for an HTTP status (when a body does not say)."""
_DECODER = msgspec.json.Decoder()


class StreamError(StreamBroken):
    """An `error` event inside an Anthropic stream (sent after HTTP 200, e.g. overloaded_error)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(_openai_error(error_type, message), f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message

    @property
    def status(self) -> int:
        """The HTTP status the same error has when it is not streamed (overloaded -> 503)."""
        return _ERRORS.get(self.error_type, ("", None, 500))[2]

    def openai_body(self) -> dict[str, Any]:
        return self.body


class TokenUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Usage in OpenAI terms: prompt includes cache reads and writes; cache writes are priced higher upstream."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # 5-minute TTL writes (all writes when the upstream reports no TTL split)
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI CompletionUsage object (plus Routeur's cache-write buckets when there were writes)."""
        details: dict[str, Any] = {"cached_tokens": self.cached_tokens, "audio_tokens": 0}
        if self.cache_write_tokens or self.cache_write_1h_tokens:
            details.update(cache_write_tokens=self.cache_write_tokens, cache_write_1h_tokens=self.cache_write_1h_tokens)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": details,
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }


def request_headers(api_key: str) -> dict[str, str]:
    """The headers every Messages API call carries."""
    return {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}


def usage_from_anthropic(usage: Mapping[str, Any] | None) -> TokenUsage:
    """OpenAI-style usage from an Anthropic `usage` object (input_tokens excludes cache reads and writes)."""
    usage = usage or {}
    read = usage.get("cache_read_input_tokens") or 0
    write = usage.get("cache_creation_input_tokens") or 0
    split = usage.get("cache_creation")
    write_1h = min(int(split.get("ephemeral_1h_input_tokens") or 0), write) if isinstance(split, Mapping) else 0
    details = usage.get("output_tokens_details") or {}
    return TokenUsage(prompt_tokens=(usage.get("input_tokens") or 0) + read + write,
                      completion_tokens=usage.get("output_tokens") or 0, cached_tokens=read,
                      cache_write_tokens=write - write_1h, cache_write_1h_tokens=write_1h,
                      reasoning_tokens=details.get("thinking_tokens") or 0)


# --------------------------------------------------------------------------- OpenAI request -> Anthropic


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _data_url(url: str, where: str, allowed: frozenset[str]) -> tuple[str, str]:
    header, comma, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or encoding != "base64" or media_type not in allowed:
        raise TranslationError(f"'{where}' must be a base64 data URL of type {', '.join(sorted(allowed))}",
                               param=where)
    return media_type, data


def _image(url: object, where: str) -> dict[str, Any]:
    if isinstance(url, str) and url.startswith("data:"):
        media_type, data = _data_url(url, where, IMAGE_MEDIA_TYPES)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError(f"'{where}' must be an http(s) URL or a data URL", param=where)


def _user_blocks(content: object, where: str, model: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return [_text_block(t) for t in texts(content, where)]
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if nonblank(part.get("text")):
                blocks.append(_text_block(part["text"]))
        elif kind == "image_url":
            image = part.get("image_url")
            blocks.append(_image(image.get("url") if isinstance(image, dict) else image, f"{at}.image_url.url"))
        elif kind == "file" and isinstance(part.get("file"), dict) and isinstance(part["file"].get("file_data"), str):
            media_type, data = _data_url(part["file"]["file_data"], f"{at}.file.file_data",
                                         frozenset({"application/pdf"}))
            blocks.append({"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}})
        else:
            raise UnsupportedParameter(f"{at}.type", model, f"content parts of type '{kind}' cannot be translated")
    return blocks


def _assistant_blocks(message: Mapping[str, Any], where: str, model: str) -> list[dict[str, Any]]:
    blocks = [_text_block(t) for t in texts(message.get("content"), f"{where}.content")]
    for call in tool_calls(message, where, model, UnsupportedParameter):
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
    return blocks


def _tool_result(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_call_id(message, where)}
    content = message.get("content")
    if isinstance(content, str):
        if nonblank(content):
            result["content"] = content
    elif parts := texts(content, f"{where}.content"):
        result["content"] = [_text_block(t) for t in parts]
    return result  # a blank result goes without content: Anthropic refuses blank text


def _tools(tools: object, model: str) -> list[dict[str, Any]]:
    out = []
    for tool in function_tools(tools, model, UnsupportedParameter):
        entry: dict[str, Any] = {"name": tool.name}
        if tool.description:
            entry["description"] = tool.description
        entry["input_schema"] = tool.parameters
        out.append(entry)
    return out


def _tool_choice(choice: object, parallel: object, model: str) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    if choice is None:
        result = {"type": "auto"} if parallel is False else None
    elif choice in ("auto", "none"):
        result = {"type": choice}
    elif choice == "required":
        result = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        result = {"type": "tool", "name": choice["function"].get("name")}
    else:
        raise UnsupportedParameter("tool_choice", model, "use 'auto', 'none', 'required' or a named function")
    if result is not None and parallel is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result


def _check_supported(body: Mapping[str, Any], model: str, capabilities: Capabilities) -> None:
    check_unsupported(body, model, _UNSUPPORTED, UnsupportedParameter)
    temperature = body.get("temperature")
    if isinstance(temperature, (int, float)) and not 0 <= temperature <= 1:
        raise UnsupportedParameter("temperature", model, f"Anthropic accepts 0 to 1, got {temperature}")
    if capabilities.sampling == SAMPLING_ONE_OF and temperature is not None and body.get("top_p") is not None:
        raise UnsupportedParameter("top_p", model, "this model takes temperature or top_p, not both; send one")


def to_upstream(body: Mapping[str, Any], upstream_model: str, *,
                capabilities: Capabilities = DEFAULT_CAPABILITIES) -> dict[str, Any]:
    """An OpenAI chat-completions request as an Anthropic Messages request for `upstream_model`, whose catalog
    `capabilities` say which parameters it takes (temperature with top_p is refused where the model refuses it).

    Raises UnsupportedParameter / TranslationError (both ValueError with `.param`) for what cannot be sent.
    """
    model = str(body.get("model") or upstream_model)
    _check_supported(body, model, capabilities)
    system, messages = to_turns(body, model, user=_user_blocks, assistant=_assistant_blocks,
                                tool_result=_tool_result, unsupported=UnsupportedParameter, api="Anthropic")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    out: dict[str, Any] = {"model": upstream_model, "max_tokens": max_tokens}
    if system:
        out["system"] = [_text_block(t) for t in system]
    out["messages"] = messages
    if body.get("tools"):
        out["tools"] = _tools(body["tools"], model)
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"), model)
        if choice is not None:
            out["tool_choice"] = choice
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if body.get("stream"):
        out["stream"] = True
    return out


# --------------------------------------------------------------------------- Anthropic response -> OpenAI


def from_upstream(resp: Mapping[str, Any], *, model: str, created: int | None = None) -> dict[str, Any]:
    """An Anthropic message as an OpenAI `chat.completion` answering for the public `model` id."""
    pieces: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in resp.get("content") or []:
        if block.get("type") == "text":
            pieces.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": _arguments(block.get("input"))}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces) if pieces or not calls else None,
                               "refusal": None, "annotations": []}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": resp.get("id") or "msg_unknown",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _FINISH.get(resp.get("stop_reason") or "end_turn", "stop")}],
        "usage": usage_from_anthropic(resp.get("usage")).to_openai(),
    }


def parse_event(raw: bytes) -> tuple[str, dict[str, Any]] | None:
    """(event name, data) of one SSE event from an Anthropic stream; None for comments or empty events.

    Raises StreamError (api_error) when the data is not a JSON object.
    """
    name, lines = "", []
    for line in raw.splitlines():
        if line.startswith(b"event:"):
            name = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            lines.append(line[5:].strip())
    if not lines:
        return None
    try:
        decoded = _DECODER.decode(b"\n".join(lines))
    except msgspec.DecodeError as exc:
        raise StreamError("api_error", f"malformed {name or 'stream'} event from upstream: {exc}") from None
    if not isinstance(decoded, dict):
        raise StreamError("api_error", f"malformed {name or 'stream'} event from upstream: not a JSON object")
    return (name or str(decoded.get("type", ""))), decoded


class StreamTranslator:
    """Anthropic stream events in, OpenAI `chat.completion.chunk` dicts out; keeps the usage seen so far."""

    def __init__(self, *, model: str, include_usage: bool, created: int | None = None) -> None:
        self._model = model
        self._include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        self._id = "msg_unknown"
        self._usage: dict[str, Any] = {}
        self._finish = "stop"
        self._tool_index: dict[int, int] = {}
        self.done = False

    @property
    def usage(self) -> TokenUsage:
        """Usage so far: input from message_start, overwritten by message_delta's cumulative counts."""
        return usage_from_anthropic(self._usage)

    def _chunk(self, delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                                 "model": self._model, "choices": []}
        if delta is not None:
            chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def feed(self, event: str, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The chunks for one event (often none); raises StreamError on an `error` event."""
        kind = data.get("type", event)
        if kind == "message_start":
            message = data.get("message") or {}
            self._id = message.get("id") or self._id
            self._usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index.setdefault(data.get("index", 0), len(self._tool_index))
                head = {"index": index, "id": block.get("id"), "type": "function",
                        "function": {"name": block.get("name"), "arguments": ""}}
                return [self._chunk({"tool_calls": [head]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return [self._chunk({"content": delta["text"]})]
            if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                index = self._tool_index.get(data.get("index", 0), 0)
                return [self._chunk({"tool_calls": [{"index": index,
                                                     "function": {"arguments": delta["partial_json"]}}]})]
            return []
        if kind == "message_delta":
            stop_reason = (data.get("delta") or {}).get("stop_reason")
            if stop_reason:
                self._finish = _FINISH.get(stop_reason, "stop")
            self._usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
            return []
        if kind == "message_stop":
            self.done = True
            chunks = [self._chunk({}, self._finish)]
            if self._include_usage:
                chunks.append({**self._chunk(None), "usage": self.usage.to_openai()})
            return chunks
        if kind == "error":
            error = data.get("error") or {}
            raise StreamError(str(error.get("type") or "api_error"), str(error.get("message") or "stream error"))
        return []  # ping, content_block_stop, and event types added after this adapter was written


# --------------------------------------------------------------------------- errors


def _openai_error(error_type: str, message: str) -> dict[str, Any]:
    openai_type, code, _ = _ERRORS.get(error_type, ("upstream_error", error_type or None, 502))
    return {"error": {"message": message, "type": openai_type, "param": None, "code": code}}


def openai_status(status: int) -> int:
    """The status the proxy answers with for an upstream status (529 is not a standard code: 503)."""
    return 503 if status == 529 else status


def error_to_openai(status: int, body: bytes) -> dict[str, Any]:
    """An Anthropic error response as an OpenAI error body."""
    try:
        decoded = _DECODER.decode(body)
    except msgspec.DecodeError:
        decoded = None
    error = decoded.get("error") if isinstance(decoded, dict) else None
    if isinstance(error, dict):
        return _openai_error(str(error.get("type") or ERROR_TYPES_BY_STATUS.get(status, "api_error")),
                             str(error.get("message") or f"upstream returned HTTP {status}"))
    return _openai_error(ERROR_TYPES_BY_STATUS.get(status, "api_error" if status >= 500 else "invalid_request_error"),
                         f"upstream returned HTTP {status}")


# --------------------------------------------------------------------------- the proxy's dialect


class _AnthropicStream:
    def __init__(self, model: str) -> None:
        self._translator = StreamTranslator(model=model, include_usage=True, created=int(time.time()))

    def events(self, buffer: bytearray) -> list[bytes]:
        out: list[bytes] = []
        for raw in wire.split_events(buffer):
            parsed = parse_event(raw)
            if parsed is None:
                continue
            out.extend(sse_event(chunk) for chunk in self._translator.feed(*parsed))  # StreamError is StreamBroken
            if self._translator.done:
                out.append(wire.DONE)
        return out

    def close(self) -> list[bytes]:
        return []


class AnthropicDialect:
    """Anthropic Messages API (`/v1/messages`, `x-api-key`, named SSE events)."""

    def request(self, target: Target, body: dict[str, Any], upstream_model: str,
                *, capabilities: Capabilities = DEFAULT_CAPABILITIES) -> UpstreamCall:
        try:
            translated = to_upstream(body, upstream_model, capabilities=capabilities)
        except TranslationError as exc:
            raise invalid_request(exc) from None
        return UpstreamCall(f"{target.base_url}/messages", request_headers(target.api_key.reveal()),
                            codec.encode(translated))

    def response(self, raw: bytes, *, model: str) -> bytes:
        return codec.encode(from_upstream(_DECODER.decode(raw), model=model))

    def stream(self, *, model: str) -> StreamDecoder:
        return _AnthropicStream(model)

    def error(self, status: int, raw: bytes,
              headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        return openai_status(status), error_to_openai(status, raw)
