"""A chat-completions request checked as OpenAI's API reference types it (`CreateChatCompletionRequest` of
openai/openai-openapi), by hand and without the spec at run time: what passes is what OpenAI accepts, so no
bad body reaches a provider. Each fault is an InvalidRequest (400) naming its `param` path.

Every refusal has the proxy's one validation code, `invalid_request`, and OpenAI's wording where it has one
("Missing required parameter", "Unrecognized request argument supplied", "Supported values are").

Deliberately stricter than the spec (as the API itself is): `model` non-empty; `max_tokens` and
`max_completion_tokens` at least 1; `stream_options` only with `stream: true`; integers as JSON integers
(1.0 is not one); unknown top-level arguments refused (the schema leaves them open; the API answers
"Unrecognized request argument supplied"). Message objects and content parts stay open to extra keys, as in
the spec (Gemini's `tool_calls[].extra_content` rides there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.proxy.errors import InvalidRequest

Check = Callable[[Any, str], None]


def check_chat(body: Any) -> dict[str, Any]:
    """`body` itself when it is a chat-completions request OpenAI accepts; else InvalidRequest naming the first
    bad field."""
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
    for name, value in body.items():
        check = _FIELDS.get(name)
        if check is None:
            if name in _NO_CHECK:
                continue
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name)
        check(value, name)
    if body.get("stream_options") is not None and not body.get("stream"):
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    return body


# ------------------------------------------------------------------------------------------- faults


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _wrong_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(f"'{param}' must be {expected}, not {_type_name(value)}", param=param)


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ------------------------------------------------------------------------------------ value checks


def _string(value: Any, param: str) -> None:
    if not isinstance(value, str):
        raise _wrong_type(param, "a string", value)


def _boolean(value: Any, param: str) -> None:
    if not isinstance(value, bool):
        raise _wrong_type(param, "a boolean", value)


def _obj(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _wrong_type(param, "an object", value)
    return value


def _object(value: Any, param: str) -> None:
    _obj(value, param)


def _nullable(check: Check) -> Check:
    def nullable(value: Any, param: str) -> None:
        if value is not None:
            check(value, param)
    return nullable


def _enum(*options: str) -> Check:
    allowed = frozenset(options)
    supported = ", ".join(f"'{option}'" for option in options)

    def enum(value: Any, param: str) -> None:
        if not isinstance(value, str):
            raise _wrong_type(param, "a string", value)
        if value not in allowed:
            raise InvalidRequest(f"Invalid value for '{param}': '{value[:64]}'. Supported values are: {supported}.",
                                 param=param)
    return enum


def _integer(low: int | None, high: int | None) -> Check:
    def integer(value: Any, param: str) -> None:
        if not _is_int(value):
            raise _wrong_type(param, "an integer", value)
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                raise InvalidRequest(f"'{param}' must be an integer of at least {low}", param=param)
            raise InvalidRequest(f"'{param}' must be an integer from {low} to {high}", param=param)
    return integer


def _number(low: float, high: float) -> Check:
    def number(value: Any, param: str) -> None:
        if not _is_number(value) or not low <= value <= high:
            raise InvalidRequest(f"'{param}' must be a number from {low} to {high}", param=param)
    return number


def _fields(required: dict[str, Check], optional: dict[str, Check], *, closed: bool = False) -> Check:
    """An object with `required` and `optional` fields of their checks (extra keys refused only if `closed`)."""
    def fields(value: Any, param: str) -> None:
        value = _obj(value, param)
        for name, check in required.items():
            if name not in value:
                raise _missing(f"{param}.{name}")
            check(value[name], f"{param}.{name}")
        for name, check in optional.items():
            if name in value:
                check(value[name], f"{param}.{name}")
        if closed:
            for name in value:
                if name not in required and name not in optional:
                    raise InvalidRequest(f"Unrecognized request argument supplied in '{param}': {name}",
                                         param=f"{param}.{name}")
    return fields


def _tagged(variants: dict[str, Check], what: str) -> Check:
    """An object told apart by its `type` (one of `variants`), checked as that variant."""
    supported = ", ".join(f"'{name}'" for name in variants)

    def tagged(value: Any, param: str) -> None:
        kind = _obj(value, param).get("type")
        check = variants.get(kind) if isinstance(kind, str) else None
        if check is None:
            if "type" not in value:
                raise _missing(f"{param}.type")
            raise InvalidRequest(f"'{param}.type' must be one of {supported} ({what})", param=f"{param}.type")
        check(value, param)
    return tagged


def _array(item: Check, *, low: int = 0, high: int | None = None) -> Check:
    def array(value: Any, param: str) -> None:
        if not isinstance(value, list):
            raise _wrong_type(param, "an array", value)
        if len(value) < low:
            raise InvalidRequest(f"'{param}' must not be an empty array" if low == 1 else
                                 f"'{param}' needs at least {low} items", param=param)
        if high is not None and len(value) > high:
            raise InvalidRequest(f"'{param}' takes at most {high} items", param=param)
        for index, element in enumerate(value):
            item(element, f"{param}[{index}]")
    return array


def _map(values: Check, expected: str) -> Check:
    def mapping(value: Any, param: str) -> None:
        for key, element in _obj(value, param).items():
            try:
                values(element, key)
            except InvalidRequest:
                raise _wrong_type(f"{param}.{key}", expected, element) from None
    return mapping


def _text_or_parts(part: Check) -> Check:
    """Content: a string, or a non-empty array of content parts."""
    def content(value: Any, param: str) -> None:
        if isinstance(value, str):
            return
        if not isinstance(value, list):
            raise _wrong_type(param, "a string or an array of content parts", value)
        if not value:
            raise InvalidRequest(f"'{param}' must not be an empty array", param=param)
        for index, element in enumerate(value):
            part(element, f"{param}[{index}]")
    return content


def _one_of(first: Check, second: Check, expected: str) -> Check:
    """`first` if the value passes it, else `second` (the error names `expected` when both refuse by type)."""
    def either(value: Any, param: str) -> None:
        try:
            first(value, param)
        except InvalidRequest:
            second(value, param)
    return either


# ----------------------------------------------------------------------------------- content parts

_cache_breakpoint = _fields({"mode": _enum("explicit")}, {})
_TEXT_PART = _fields({"text": _string}, {"prompt_cache_breakpoint": _cache_breakpoint})
_PARTS: dict[str, Check] = {
    "text": _TEXT_PART,
    "image_url": _fields({"image_url": _fields({"url": _string}, {"detail": _enum("auto", "low", "high")})},
                         {"prompt_cache_breakpoint": _cache_breakpoint}),
    "input_audio": _fields({"input_audio": _fields({"data": _string, "format": _enum("wav", "mp3")}, {})},
                           {"prompt_cache_breakpoint": _cache_breakpoint}),
    "file": _fields({"file": _fields({}, {"filename": _string, "file_data": _string, "file_id": _string})},
                    {"prompt_cache_breakpoint": _cache_breakpoint}),
    "refusal": _fields({"refusal": _string}, {}),
}
_text_content = _text_or_parts(_tagged({"text": _TEXT_PART}, "text parts only here"))
_user_content = _text_or_parts(_tagged({name: _PARTS[name] for name in ("text", "image_url", "input_audio", "file")},
                                       "a user message's content parts"))
_assistant_content = _nullable(_text_or_parts(_tagged({name: _PARTS[name] for name in ("text", "refusal")},
                                                      "an assistant message's content parts")))

# ------------------------------------------------------------------------------------------ messages

_tool_call = _tagged({
    "function": _fields({"id": _string, "type": _string,
                         "function": _fields({"name": _string, "arguments": _string}, {})}, {}),
    "custom": _fields({"id": _string, "type": _string, "custom": _fields({"name": _string, "input": _string}, {})},
                      {}),
}, "a tool call")
_ROLES: dict[str, Check] = {
    "system": _fields({"content": _text_content}, {"name": _string}),
    "developer": _fields({"content": _text_content}, {"name": _string}),
    "user": _fields({"content": _user_content}, {"name": _string}),
    "assistant": _fields({}, {
        "content": _assistant_content, "refusal": _nullable(_string), "name": _string,
        "audio": _nullable(_fields({"id": _string}, {})), "tool_calls": _array(_tool_call),
        "function_call": _nullable(_fields({"arguments": _string, "name": _string}, {}))}),
    "tool": _fields({"content": _text_content, "tool_call_id": _string}, {}),
    "function": _fields({"content": _nullable(_string), "name": _string}, {}),
}


_PLAIN_ROLES = frozenset({"system", "developer", "user", "assistant"})


def _check_message(message: Any, where: str) -> None:
    if type(message) is dict and len(message) == 2 and type(message.get("content")) is str \
            and type(message.get("role")) is str and message["role"] in _PLAIN_ROLES:
        return  # the common case, {"role": ..., "content": "..."}, without the general walk
    role = message.get("role") if isinstance(message, dict) else None
    check = _ROLES.get(role) if isinstance(role, str) else None
    if check is None:
        raise InvalidRequest(f"{where} must be an object with a valid 'role'", param=f"{where}.role")
    check(message, where)


# ------------------------------------------------------------------------------------- tools, choices

_function = _fields({"name": _string}, {"description": _string, "parameters": _object,
                                        "strict": _nullable(_boolean)})
_custom_format = _tagged({
    "text": _fields({"type": _string}, {}, closed=True),
    "grammar": _fields({"type": _string, "grammar": _fields({"definition": _string,
                                                             "syntax": _enum("lark", "regex")}, {})}, {},
                       closed=True),
}, "a custom tool's format")
_any_tool = _tagged({
    "function": _fields({"type": _string, "function": _function}, {}),
    "custom": _fields({"type": _string, "custom": _fields({"name": _string},
                                                          {"description": _string, "format": _custom_format})}, {}),
}, "a tool")


def _tool(value: Any, param: str) -> None:
    if type(value) is dict and value.get("type") == "function" and len(value) == 2:
        function = value.get("function")
        if type(function) is dict and type(function.get("name")) is str \
                and type(function.get("parameters", _EMPTY)) is dict \
                and type(function.get("description", "")) is str and type(function.get("strict")) in _FLAG:
            return  # a plain function tool, without the general walk
    _any_tool(value, param)


_EMPTY: dict[str, Any] = {}
_FLAG = (bool, type(None))
_named = _tagged({
    "function": _fields({"type": _string, "function": _fields({"name": _string}, {})}, {}),
    "custom": _fields({"type": _string, "custom": _fields({"name": _string}, {})}, {}),
    "allowed_tools": _fields({"type": _string, "allowed_tools": _fields(
        {"mode": _enum("auto", "required"), "tools": _array(_object)}, {})}, {}),
}, "a tool choice")
_mode = _enum("none", "auto", "required")


def _tool_choice(value: Any, param: str) -> None:
    if isinstance(value, str):
        _mode(value, param)
    elif isinstance(value, dict):
        _named(value, param)
    else:
        raise _wrong_type(param, "a string or an object", value)


_call_mode = _enum("none", "auto")
_call_name = _fields({"name": _string}, {})


def _function_call(value: Any, param: str) -> None:
    if isinstance(value, str):
        _call_mode(value, param)
    elif isinstance(value, dict):
        _call_name(value, param)
    else:
        raise _wrong_type(param, "a string or an object", value)


def _stop(value: Any, param: str) -> None:
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidRequest(f"'{param}' must be a string or an array of strings", param=param)
    if not 1 <= len(value) <= 4:
        raise InvalidRequest(f"'{param}' must hold 1 to 4 strings", param=param)


def _tokens(value: Any, param: str) -> None:
    if value is not None and (not _is_int(value) or value < 1):
        raise InvalidRequest(f"'{param}' must be a positive integer", param=param)


def _short_id(value: Any, param: str) -> None:
    _string(value, param)
    if len(value) > 64:
        raise InvalidRequest(f"'{param}' must be at most 64 characters", param=param)


# ----------------------------------------------------------------------------------- top-level fields

_moderation_config = _nullable(_fields({"mode": _enum("score", "block")}, {}))
_FIELDS: dict[str, Check] = {
    "stream": _nullable(_boolean), "store": _nullable(_boolean), "logprobs": _nullable(_boolean),
    "parallel_tool_calls": _boolean,
    "max_tokens": _tokens, "max_completion_tokens": _tokens,
    "n": _nullable(_integer(1, 128)),
    "seed": _nullable(_integer(-9223372036854776000, 9223372036854776000)),
    "top_logprobs": _integer(0, 20),
    "temperature": _nullable(_number(0, 2)), "top_p": _nullable(_number(0, 1)),
    "presence_penalty": _nullable(_number(-2, 2)), "frequency_penalty": _nullable(_number(-2, 2)),
    "user": _string, "safety_identifier": _nullable(_short_id), "prompt_cache_key": _nullable(_string),
    "prompt_cache_retention": _nullable(_enum("in_memory", "24h")),
    "prompt_cache_options": _fields({}, {"ttl": _enum("30m"), "mode": _enum("implicit", "explicit")}),
    "moderation": _nullable(_fields({"model": _string}, {"policy": _nullable(_fields({}, {
        "input": _moderation_config, "output": _moderation_config}))})),
    "reasoning_effort": _nullable(_enum("none", "minimal", "low", "medium", "high", "xhigh", "max")),
    "verbosity": _nullable(_enum("low", "medium", "high")),
    "service_tier": _nullable(_enum("auto", "default", "flex", "scale", "priority", "fast")),
    "metadata": _nullable(_map(_string, "a string")),
    "logit_bias": _nullable(_map(_integer(None, None), "an integer")),
    "response_format": _tagged({
        "text": _fields({"type": _string}, {}), "json_object": _fields({"type": _string}, {}),
        "json_schema": _fields({"type": _string, "json_schema": _fields({"name": _string}, {
            "description": _string, "schema": _object, "strict": _nullable(_boolean)})}, {}),
    }, "a response format"),
    "modalities": _nullable(_array(_enum("text", "audio"))),
    "audio": _nullable(_fields({"voice": _one_of(_string, _fields({"id": _string}, {}, closed=True),
                                                 "a string or an object"),
                                "format": _enum("wav", "aac", "mp3", "flac", "opus", "pcm16")}, {})),
    "prediction": _nullable(_tagged({"content": _fields({"type": _string, "content": _text_content}, {})},
                                    "a prediction")),
    "stream_options": _nullable(_fields({}, {"include_usage": _boolean, "include_obfuscation": _boolean})),
    "web_search_options": _fields({}, {
        "user_location": _nullable(_fields({"type": _enum("approximate"), "approximate": _fields({}, {
            "country": _string, "region": _string, "city": _string, "timezone": _string})}, {})),
        "search_context_size": _enum("low", "medium", "high")}),
    "stop": _stop,
    "tools": _array(_tool),
    "tool_choice": _tool_choice,
    "function_call": _function_call,
    "functions": _array(_fields({"name": _string}, {"description": _string, "parameters": _object}), low=1, high=128),
}
_NO_CHECK = frozenset({"model", "messages"})
"""Checked first, in check_chat itself."""
