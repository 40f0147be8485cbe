"""Pure helpers for the OpenAI chat-completions wire format: validation, usage, SSE events."""

from __future__ import annotations

from typing import Any

import msgspec

from services.proxy.errors import InvalidRequest

_VALID_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class PromptDetails(msgspec.Struct):
    cached_tokens: int | None = 0


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


def check_chat(body: Any) -> dict[str, Any]:
    """A chat-completions body whose every field has OpenAI's type and range, so that what reaches a provider
    (or a translation to its format) is well-formed: InvalidRequest (400) naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required and must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        _check_message(message, f"messages[{index}]")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InvalidRequest(f"'{field}' must be a positive integer", param=field)
    for field, kinds in _TYPES.items():
        value = body.get(field)
        if value is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
            names = " or ".join(_TYPE_NAMES[kind] for kind in kinds)
            raise InvalidRequest(f"'{field}' must be {names}", param=field)
    if body.get("stream_options") is not None and not stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    for field in ("tools", "functions"):
        if not all(isinstance(tool, dict) for tool in body.get(field) or []):
            raise InvalidRequest(f"'{field}' must be an array of objects", param=field)
    stop = body.get("stop")
    if isinstance(stop, list) and not all(isinstance(item, str) for item in stop):
        raise InvalidRequest("'stop' must be a string or an array of strings", param="stop")
    for field, (low, high) in _RANGES.items():
        value = body.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not low <= value <= high):
            raise InvalidRequest(f"'{field}' must be a number from {low} to {high}", param=field)
    return body


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
            or message["role"] not in _VALID_ROLES:
        raise InvalidRequest(f"{where} must be an object with a valid 'role'", param=f"{where}.role")
    _check_content(message.get("content"), f"{where}.content")
    for field in ("name", "tool_call_id", "refusal"):
        if message.get(field) is not None and not isinstance(message[field], str):
            raise InvalidRequest(f"'{where}.{field}' must be a string", param=f"{where}.{field}")
    calls = message.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise InvalidRequest(f"'{where}.tool_calls' must be an array", param=f"{where}.tool_calls")
    for index, call in enumerate(calls or []):
        if not isinstance(call, dict) or not isinstance(call.get("id", ""), str) \
                or not isinstance(call.get("type", "function"), str) or not _function_call(call):
            raise InvalidRequest(f"'{where}.tool_calls[{index}]' must be an object with a string 'id' and a "
                                 "'function' object of string 'name' and 'arguments'",
                                 param=f"{where}.tool_calls[{index}]")
    if message.get("function_call") is not None and not isinstance(message["function_call"], dict):
        raise InvalidRequest(f"'{where}.function_call' must be an object", param=f"{where}.function_call")


def _function_call(call: dict[str, Any]) -> bool:
    """A function tool call (the default type) names its function and passes string arguments."""
    if call.get("type", "function") != "function":
        return True
    function = call.get("function")
    return isinstance(function, dict) and isinstance(function.get("name"), str) \
        and isinstance(function.get("arguments", ""), str)


def _check_content(content: Any, param: str) -> None:
    """A message's content is a string, an array of typed parts, or null (OpenAI rejects anything else)."""
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"'{param}' must be a string or an array of content parts", param=param)
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest(f"'{where}' must be a content part object with a 'type'", param=where)
        for field in ("text", "refusal"):
            if (field in part or part["type"] == field) and not isinstance(part.get(field), str):
                raise InvalidRequest(f"'{where}.{field}' must be a string", param=f"{where}.{field}")
        image = part.get("image_url")
        if part["type"] == "image_url" and not (isinstance(image, str) or (
                isinstance(image, dict) and isinstance(image.get("url"), str))):
            raise InvalidRequest(f"'{where}.image_url' must be an object with a string 'url'",
                                 param=f"{where}.image_url")


# OpenAI's documented ranges (CreateChatCompletionRequest); a value outside them is a 400, not an upstream call.
_RANGES = {"temperature": (0, 2), "top_p": (0, 1), "presence_penalty": (-2, 2), "frequency_penalty": (-2, 2)}
# The types of the other optional parameters (null is always allowed); providers and the adapters rely on them.
_TYPES: dict[str, tuple[type, ...]] = {
    "n": (int,), "seed": (int,), "top_logprobs": (int,), "logprobs": (bool,), "parallel_tool_calls": (bool,),
    "store": (bool,), "user": (str,), "reasoning_effort": (str,), "service_tier": (str,), "verbosity": (str,),
    "logit_bias": (dict,), "metadata": (dict,), "response_format": (dict,), "prediction": (dict,),
    "audio": (dict,), "stream_options": (dict,), "web_search_options": (dict,), "tool_choice": (str, dict),
    "function_call": (str, dict), "stop": (str, list), "modalities": (list,), "tools": (list,), "functions": (list,),
}
_TYPE_NAMES = {int: "an integer", bool: "a boolean", str: "a string", dict: "an object", list: "an array"}


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
