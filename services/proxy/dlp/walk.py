"""Walking OpenAI bodies (pure): visit every text a DLP policy covers, copying only what a visit changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Visited: chat `messages[].content` (a string, or the `text` of text parts; image/audio parts are left
# alone), the assistant's `refusal`, `tool_calls[].function.arguments` and the deprecated
# `function_call.arguments` (these two are JSON documents held in a string), and an embeddings `input`
# (a string or a list of strings; token-id arrays are left alone). Names are left alone. The same walk
# serves a request's messages and a completion's `choices[].message`.
# Anthropic Messages bodies (/v1/messages, served natively on Claude routes) share `messages[].content` text
# blocks; also visited there: the top-level `system` (a string or text blocks), `tool_result` content (a string or
# blocks) and the string values inside a `tool_use` block's `input`. Thinking blocks are never visited: their
# signature covers their text, and the API refuses a changed one.

Visit = Callable[[str, bool], str]  # (text, is_json_document) -> the same text object, or a new one


def walk_request(body: dict[str, Any], visit: Visit) -> dict[str, Any]:
    """A shallow copy of a chat-completions or embeddings request body with every covered text visited."""
    out = dict(body)
    messages = body.get("messages")
    if isinstance(messages, list):
        new_messages = each(messages, lambda m: walk_message(m, visit))
        if new_messages is not messages:
            out["messages"] = new_messages
    system = body.get("system")
    if isinstance(system, str):
        out["system"] = visit(system, False)
    elif isinstance(system, list):
        out["system"] = each(system, lambda part: _part(part, visit))
    value = body.get("input")
    if isinstance(value, str):
        out["input"] = visit(value, False)
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        out["input"] = each(value, lambda v: visit(v, False))
    return out


def each(items: list[Any], change: Callable[[Any], Any]) -> list[Any]:
    """`items` itself when `change` returned every item unchanged, else a new list."""
    new: list[Any] | None = None
    for index, item in enumerate(items):
        changed = change(item)
        if changed is not item:
            if new is None:
                new = list(items)
            new[index] = changed
    return items if new is None else new


def walk_message(message: Any, visit: Visit) -> Any:
    """A chat message with its covered texts visited: the same object when no visit changed anything."""
    if not isinstance(message, dict):
        return message
    out: dict[str, Any] | None = None

    def put(key: str, value: Any) -> None:
        nonlocal out
        if value is not message[key]:
            if out is None:
                out = dict(message)
            out[key] = value

    content = message.get("content")
    if isinstance(content, str):
        put("content", visit(content, False))
    elif isinstance(content, list):
        put("content", each(content, lambda part: _part(part, visit)))
    if isinstance(message.get("refusal"), str):
        put("refusal", visit(message["refusal"], False))
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        put("tool_calls", each(tool_calls, lambda call: _call(call, visit)))
    function_call = message.get("function_call")
    if isinstance(function_call, dict):
        put("function_call", _arguments(function_call, visit))
    return message if out is None else out


def _part(part: Any, visit: Visit) -> Any:
    if not isinstance(part, dict):
        return part
    key = part.get("type")
    if key == "tool_result":
        content = part.get("content")
        if isinstance(content, str):
            text = visit(content, False)
            return part if text is content else {**part, "content": text}
        if isinstance(content, list):
            blocks = each(content, lambda block: _part(block, visit))
            return part if blocks is content else {**part, "content": blocks}
        return part
    if key == "tool_use":
        value = visit_strings(part.get("input"), visit)
        return part if value is part.get("input") else {**part, "input": value}
    if key not in ("text", "refusal") or not isinstance(part.get(key), str):
        return part
    text = visit(part[key], False)
    return part if text is part[key] else {**part, key: text}


def _call(call: Any, visit: Visit) -> Any:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return call
    function = _arguments(call["function"], visit)
    return call if function is call["function"] else {**call, "function": function}


def _arguments(function: dict[str, Any], visit: Visit) -> dict[str, Any]:
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        return function
    text = visit(arguments, True)
    return function if text is arguments else {**function, "arguments": text}


def visit_strings(value: Any, visit: Visit) -> Any:
    """`value` (decoded JSON) with every string in it visited as plain text; the same object when none changed."""
    if isinstance(value, str):
        return visit(value, False)
    if isinstance(value, list):
        return each(value, lambda item: visit_strings(item, visit))
    if isinstance(value, dict):
        changed = {key: visit_strings(item, visit) for key, item in value.items()}
        return value if all(changed[key] is value[key] for key in value) else changed
    return value
