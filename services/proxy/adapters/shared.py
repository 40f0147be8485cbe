"""OpenAI → provider translation that the block-based formats (Anthropic, Bedrock) share: the walk over the
OpenAI messages (roles to alternating turns of blocks), tool calls, function tools and parameter checks.

Both APIs reject blank text blocks (Anthropic: "text content blocks must contain non-whitespace text"; Converse:
a ValidationException), so blank and whitespace-only texts are dropped everywhere, never sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from services.proxy.adapters.errors import TranslationError, UnsupportedParameter

JSON_OBJECT_INSTRUCTION = "Respond with one valid JSON object and nothing else: no prose and no code fences."

Blocks = list[dict[str, Any]]
UserBlocks = Callable[[object, str, str], Blocks]
"""(content, where, model) -> the blocks of a user message's content."""
AssistantBlocks = Callable[[Mapping[str, Any], str, str], Blocks]
"""(message, where, model) -> the blocks of an assistant message."""
ToolResult = Callable[[Mapping[str, Any], str], dict[str, Any]]
"""(message, where) -> the block answering one tool call."""


class ToolCall(NamedTuple):
    """One OpenAI assistant tool call, its arguments decoded."""

    id: str
    name: Any
    arguments: dict[str, Any]


class FunctionTool(NamedTuple):
    """One OpenAI function tool; `parameters` defaults to an empty object schema."""

    name: Any
    description: str | None
    parameters: dict[str, Any]


def nonblank(text: object) -> bool:
    """A string with something besides whitespace in it (the only text either API accepts in a block)."""
    return isinstance(text, str) and text != "" and not text.isspace()


def texts(content: object, where: str) -> list[str]:
    """The non-blank texts of a string or a list of text/refusal parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if nonblank(content) else []
    if not isinstance(content, list):
        raise TranslationError(f"'{where}' must be a string or an array of content parts", param=where)
    out: list[str] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise TranslationError(f"'{where}[{j}]' must be a text part here", param=f"{where}[{j}]")
        text = part.get("text", part.get("refusal"))
        if isinstance(text, str) and nonblank(text):
            out.append(text)
    return out


def append_turn(messages: Blocks, role: str, blocks: Blocks) -> None:
    """Add blocks as a turn, merging consecutive turns of one role (several tool results; both APIs
    require roles to alternate)."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def to_turns(body: Mapping[str, Any], model: str, *, user: UserBlocks, assistant: AssistantBlocks,
             tool_result: ToolResult, unsupported: type[UnsupportedParameter],
             api: str) -> tuple[list[str], Blocks]:
    """(system texts, alternating user/assistant turns) of an OpenAI request's messages.

    System and developer messages become system texts (plus the JSON instruction for `json_object`), tool
    results join the user turn after the call. Raises `unsupported` for an unknown role or when nothing but
    system messages is left (`api` names the provider in that message).
    """
    system: list[str] = []
    messages: Blocks = []
    for i, message in enumerate(body.get("messages") or []):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.extend(texts(message.get("content"), f"{where}.content"))
        elif role == "user":
            append_turn(messages, "user", user(message.get("content"), f"{where}.content", model))
        elif role == "assistant":
            append_turn(messages, "assistant", assistant(message, where, model))
        elif role == "tool":
            append_turn(messages, "user", [tool_result(message, where)])
        else:
            raise unsupported(f"{where}.role", model, f"role '{role}' cannot be translated")
    if not messages:
        raise unsupported("messages", model, f"{api} needs at least one user or assistant message with content "
                                             "besides system messages")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        system.append(JSON_OBJECT_INSTRUCTION)
    return system, messages


def tool_calls(message: Mapping[str, Any], where: str, model: str,
               unsupported: type[UnsupportedParameter]) -> list[ToolCall]:
    """The tool calls of an assistant message; the legacy `function_call` is refused."""
    if message.get("function_call") is not None:
        raise unsupported(f"{where}.function_call", model, "use tool_calls")
    calls = []
    for j, call in enumerate(message.get("tool_calls") or []):
        at = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise TranslationError(f"'{at}' must have an id and a function", param=at)
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (json.JSONDecodeError, TypeError):
            arguments = None
        if not isinstance(arguments, dict):
            raise TranslationError(f"'{at}.function.arguments' must be a JSON object",
                                   param=f"{at}.function.arguments")
        calls.append(ToolCall(call["id"], function.get("name"), arguments))
    return calls


def tool_call_id(message: Mapping[str, Any], where: str) -> str:
    """The `tool_call_id` a tool message answers."""
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise TranslationError(f"'{where}.tool_call_id' is required", param=f"{where}.tool_call_id")
    return call_id


def function_tools(tools: object, model: str, unsupported: type[UnsupportedParameter]) -> list[FunctionTool]:
    """The function tools of a request; any other tool type is refused."""
    if not isinstance(tools, list):
        raise TranslationError("'tools' must be an array", param="tools")
    out = []
    for j, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function":
            raise unsupported(f"tools[{j}].type", model, "only function tools can be translated")
        out.append(FunctionTool(function.get("name"), function.get("description") or None,
                                function.get("parameters") or {"type": "object", "properties": {}}))
    return out


def check_unsupported(body: Mapping[str, Any], model: str, neutral: Mapping[str, tuple[Any, ...]],
                      unsupported: type[UnsupportedParameter]) -> None:
    """Refuse the first parameter of `neutral` set to something other than its "not used" values."""
    for param, values in neutral.items():
        if param in body and body[param] not in values:
            raise unsupported(param, model)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text", "json_object"):
        raise unsupported("response_format", model, f"type '{fmt.get('type')}' cannot be translated; "
                                                    "use 'json_object' or a tool with the schema")


def tool_arguments(value: object) -> str:
    """A tool call's input as OpenAI's compact JSON `arguments` string."""
    return json.dumps(value if value is not None else {}, ensure_ascii=False, separators=(",", ":"))
