"""Pure helpers for the OpenAI chat-completions wire format: body decoding, usage, SSE events."""

from __future__ import annotations

from typing import Any

import msgspec

from services.proxy.errors import InvalidRequest
from services.proxy.openai_request import check_chat as check_chat  # re-exported: callers check bodies here


class PromptDetails(msgspec.Struct):
    cached_tokens: int | None = 0
    # Routeur's own buckets for Claude routes (not OpenAI's): prompt-cache writes, 5-minute and 1-hour TTL; they
    # do not overlap with cached_tokens (cache reads) and are part of prompt_tokens.
    cache_write_tokens: int | None = 0
    cache_write_1h_tokens: int | None = 0


class CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = 0


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptDetails | None = None
    completion_tokens_details: CompletionDetails | None = None

    @property
    def cached_tokens(self) -> int:
        return (self.prompt_tokens_details.cached_tokens or 0) if self.prompt_tokens_details else 0

    @property
    def cache_write_tokens(self) -> int:
        return (self.prompt_tokens_details.cache_write_tokens or 0) if self.prompt_tokens_details else 0

    @property
    def cache_write_1h_tokens(self) -> int:
        return (self.prompt_tokens_details.cache_write_1h_tokens or 0) if self.prompt_tokens_details else 0

    @property
    def reasoning_tokens(self) -> int:
        return (self.completion_tokens_details.reasoning_tokens or 0) if self.completion_tokens_details else 0


class _UsageEnvelope(msgspec.Struct):
    usage: Usage | None = None


class _ChunkEnvelope(msgspec.Struct):
    usage: Usage | None = None
    choices: list[Any] = []


class ChunkHead(msgspec.Struct):
    """The identifying fields of a stream chunk, repeated on chunks Routeur adds to the stream."""

    id: str = ""
    created: int = 0
    model: str = ""


_usage_decoder = msgspec.json.Decoder(_UsageEnvelope)
_head_decoder = msgspec.json.Decoder(ChunkHead)
_chunk_decoder = msgspec.json.Decoder(_ChunkEnvelope)
_body_decoder = msgspec.json.Decoder()


# Deeper JSON is refused before anything walks it (real requests nest a few levels; tool schemas a few dozen).
MAX_JSON_DEPTH = 128


def decode_json(raw: bytes) -> Any:
    """A request body as JSON; malformed JSON, invalid UTF-8 or nesting deeper than MAX_JSON_DEPTH is a 400."""
    too_deep = InvalidRequest(f"request body nests JSON deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")
    try:
        value = _body_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not valid UTF-8", code="invalid_json") from None
    except RecursionError:
        raise too_deep from None
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _too_deep(value):
        raise too_deep
    return value


def _too_deep(value: Any) -> bool:
    """Whether arrays/objects nest deeper than MAX_JSON_DEPTH (iterative: a deep body cannot exhaust the stack)."""
    pending: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, (dict, list)) else []
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode and validate a chat-completions request body; raises InvalidRequest naming the field."""
    return check_chat(decode_json(raw))


def wants_usage_chunk(body: dict[str, Any]) -> bool:
    """Whether the caller itself asked for the final usage chunk of a stream."""
    options = body.get("stream_options")
    return bool(isinstance(options, dict) and options.get("include_usage"))


def upstream_body(body: dict[str, Any], upstream_model: str) -> dict[str, Any]:
    """The body sent upstream: the route's model name, and usage always requested on streams."""
    out = dict(body)
    out["model"] = upstream_model
    if out.get("stream"):
        options = dict(out.get("stream_options") or {})
        options["include_usage"] = True
        out["stream_options"] = options
    return out


def response_usage(raw: bytes) -> Usage | None:
    """The `usage` object of a non-streaming response body, if any."""
    try:
        return _usage_decoder.decode(raw).usage
    except msgspec.DecodeError:
        return None


def split_events(buffer: bytearray) -> list[bytes]:
    """Remove and return every complete SSE event (terminated by a blank line) from `buffer`."""
    events: list[bytes] = []
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return events
        events.append(bytes(buffer[: end + 2]))
        del buffer[: end + 2]


DONE = b"data: [DONE]\n\n"


def is_done(event: bytes) -> bool:
    return event.strip() == b"data: [DONE]"


def event_usage(event: bytes) -> tuple[Usage | None, bool]:
    """(usage, is_usage_only_chunk) for one SSE data event; cheap when the chunk carries no usage."""
    if b'"usage"' not in event or b'"usage":null' in event:
        return None, False
    payload = event.strip()
    if not payload.startswith(b"data:"):
        return None, False
    try:
        chunk = _chunk_decoder.decode(payload[5:].strip())
    except msgspec.DecodeError:
        return None, False
    return chunk.usage, chunk.usage is not None and not chunk.choices


def event_head(event: bytes) -> ChunkHead | None:
    """id/created/model of a data event, or None when it is not a JSON chunk."""
    payload = event.strip()
    if not payload.startswith(b"data:"):
        return None
    try:
        return _head_decoder.decode(payload[5:].strip())
    except msgspec.DecodeError:
        return None


class _Function(msgspec.Struct):
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None


class _DeltaEnvelope(msgspec.Struct):
    choices: list[_Choice] = []


_delta_decoder = msgspec.json.Decoder(_DeltaEnvelope)


def estimate_usage(events: list[bytes], *, prompt_bytes: int) -> Usage:
    """Tokenizer-free usage (≈ 4 characters a token) for a stream whose upstream reported none:
    prompt from the request body's size, completion from the streamed text and tool arguments."""
    characters = 0
    for event in events:
        payload = event.strip()
        if not payload.startswith(b"data:"):
            continue
        try:
            chunk = _delta_decoder.decode(payload[5:].strip())
        except msgspec.DecodeError:
            continue
        for choice in chunk.choices:
            delta = choice.delta
            if delta is None:
                continue
            characters += len(delta.content or "")
            characters += sum(len(c.function.arguments or "") for c in delta.tool_calls or [] if c.function)
    prompt, completion = -(-prompt_bytes // 4), -(-characters // 4)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def upstream_error_body(raw: bytes, status: int) -> dict[str, Any]:
    """The upstream's error JSON in OpenAI shape (wrapped when the upstream sent something else)."""
    try:
        body = _body_decoder.decode(raw)
    except msgspec.DecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return {"error": {"message": str(error.get("message") or f"upstream returned HTTP {status}"),
                          "type": str(error.get("type") or "upstream_error"),
                          "param": error.get("param"), "code": error.get("code")}}
    return {"error": {"message": f"upstream returned HTTP {status}", "type": "upstream_error", "param": None,
                      "code": "upstream_error"}}
