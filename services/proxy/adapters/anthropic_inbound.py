"""Inbound /v1/messages: Anthropic-format callers served by OpenAI-format routes (requests, replies, streams)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgspec

from services.proxy.adapters.anthropic import (
    ERROR_TYPES_BY_STATUS,
    TokenUsage,
    TranslationError,
    UnsupportedParameter,
)
from services.proxy.adapters.shared import tool_arguments as _arguments

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
         "content_filter": "refusal"}
"""OpenAI finish_reason -> Anthropic stop_reason."""


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def check_request(body: object) -> dict[str, Any]:
    """A /v1/messages body checked for what every route needs; raises TranslationError naming the field."""
    if not isinstance(body, dict):
        raise TranslationError("request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise TranslationError("model: Field required", param="model")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise TranslationError("max_tokens: a positive integer is required", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages: at least one message is required", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant", "system"):
            raise TranslationError(f"messages.{i}.role: Input should be 'user' or 'assistant'",
                                   param=f"messages.{i}.role")
        if not isinstance(message.get("content"), (str, list)):
            raise TranslationError(f"messages.{i}.content: Field required", param=f"messages.{i}.content")
        _check_blocks(message["content"], f"messages.{i}.content")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise TranslationError("stream: Input should be a valid boolean", param="stream")
    system = body.get("system")
    if system is not None:
        if not isinstance(system, (str, list)):
            raise TranslationError("system: Input should be a valid string or a valid list", param="system")
        _check_blocks(system, "system")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value <= 1):
            raise TranslationError(f"{name}: Input should be a number from 0 to 1", param=name)
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops)):
        raise TranslationError("stop_sequences: Input should be a valid list of strings", param="stop_sequences")
    for name, kind, label in (("metadata", dict, "dictionary"), ("tool_choice", dict, "dictionary"),
                              ("tools", list, "list")):
        if body.get(name) is not None and not isinstance(body[name], kind):
            raise TranslationError(f"{name}: Input should be a valid {label}", param=name)
    for j, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) \
                or not isinstance(tool.get("input_schema", {}), dict):
            raise TranslationError(f"tools.{j}: a tool has a string 'name' and an 'input_schema' object",
                                   param=f"tools.{j}")
    return body


# The fields each block type must carry, with their types (Anthropic answers 400 for anything else).
_BLOCK_FIELDS: dict[str, dict[str, type]] = {
    "text": {"text": str}, "tool_use": {"id": str, "name": str, "input": dict},
    "tool_result": {"tool_use_id": str}, "image": {"source": dict}, "document": {"source": dict},
}


def _check_blocks(content: object, where: str) -> None:
    """Content blocks are objects with a string `type` and, for the types Routeur translates, their fields."""
    if isinstance(content, str):
        return
    for j, block in enumerate(content if isinstance(content, list) else []):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise TranslationError(f"{where}.{j}: Input should be a valid content block", param=f"{where}.{j}")
        for field, kind in _BLOCK_FIELDS.get(block["type"], {}).items():
            if not isinstance(block.get(field), kind):
                raise TranslationError(f"{where}.{j}.{field}: a {kind.__name__} is required",
                                       param=f"{where}.{j}.{field}")
        if block["type"] == "tool_result" and not isinstance(block.get("content", ""), (str, list)):
            raise TranslationError(f"{where}.{j}.content: Input should be a string or a list",
                                   param=f"{where}.{j}.content")


def _plain(content: object, where: str, model: str) -> str | list[dict[str, Any]]:
    """A system prompt or tool result (string or text blocks) as OpenAI content: a string or text parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError(f"'{where}' must be a string or an array of text blocks", param=where)
    parts = []
    for j, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            kind = block.get("type") if isinstance(block, dict) else None
            raise UnsupportedParameter(f"{where}.{j}.type", model, f"'{kind}' blocks cannot be translated here")
        parts.append(_text_block(str(block.get("text") or "")))
    return parts[0]["text"] if len(parts) == 1 else parts


def _user_message(parts: list[dict[str, Any]]) -> dict[str, Any]:
    single_text = len(parts) == 1 and parts[0]["type"] == "text"
    return {"role": "user", "content": parts[0]["text"] if single_text else parts}


def _openai_user(content: list[Any], where: str, model: str) -> list[dict[str, Any]]:
    """A user turn's blocks as OpenAI messages: each tool_result becomes a `tool` message, in order."""
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        source = (block.get("source") if isinstance(block, dict) else None) or {}
        if kind == "tool_result":
            if parts:
                out.append(_user_message(parts))
                parts = []
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"),
                        "content": _plain(block.get("content") or "", f"{at}.content", model)})
        elif kind == "text":
            parts.append(_text_block(str(block.get("text") or "")))
        elif kind in ("image", "document") and source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
            parts.append({"type": "image_url", "image_url": {"url": url}} if kind == "image"
                         else {"type": "file", "file": {"filename": "document.pdf", "file_data": url}})
        elif kind == "image" and source.get("type") == "url":
            parts.append({"type": "image_url", "image_url": {"url": source.get("url")}})
        elif kind == "document" and source.get("type") == "text":
            parts.append(_text_block(str(source.get("data") or "")))
        else:
            raise UnsupportedParameter(f"{at}.type", model, f"'{kind}' blocks cannot be translated")
    if parts:
        out.append(_user_message(parts))
    return out


def _openai_assistant(content: list[Any], where: str, model: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": _arguments(block.get("input"))}})
        elif kind not in ("thinking", "redacted_thinking"):
            raise UnsupportedParameter(f"{where}.content.{j}.type", model, f"'{kind}' blocks cannot be translated")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _openai_tool_choice(choice: Mapping[str, Any], model: str) -> str | dict[str, Any]:
    kind = choice.get("type")
    if kind in ("auto", "none"):
        return str(kind)
    if kind == "any":
        return "required"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise UnsupportedParameter("tool_choice.type", model, f"'{kind}' cannot be translated")


_TRANSLATED = frozenset({"model", "max_tokens", "messages", "system", "tools", "tool_choice", "temperature", "top_p",
                         "stop_sequences", "metadata", "stream"})
"""The top-level Messages API fields request_to_openai carries over; any other is refused unless `_NEUTRAL`."""
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "thinking": (None, {"type": "disabled"}),
    "service_tier": (None, "auto"),  # the API's default
    "speed": (None, "standard"),  # the API's default
    "output_config": (None, {}),
    "mcp_servers": (None, []),
}
"""Fields that pass only with the values that ask for nothing (absent or the API's default); the rest of
MessageCreateParams (top_k, cache_control, container, diagnostics, inference_geo, output_config's format and
effort, speed "fast", user_profile_id, workspace_id, ...) and unknown fields are a 400 naming them."""


def _refuse_untranslated(body: Mapping[str, Any], model: str) -> None:
    for param, value in body.items():
        if param in _TRANSLATED or value is None or value in _NEUTRAL.get(param, ()):
            continue
        if param == "output_config" and isinstance(value, dict):  # name the setting asked for: format, effort
            settings = [key for key, setting in value.items() if setting is not None]
            if not settings:
                continue
            param = f"output_config.{settings[0]}"
        raise UnsupportedParameter(param, model, "Routeur cannot honour it on this route; remove it")


def request_to_openai(body: Mapping[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat request (a /v1/messages caller of another family).

    Raises UnsupportedParameter naming any top-level field it does not translate (set to more than its default).
    """
    model = str(body.get("model") or "")
    _refuse_untranslated(body, model)
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _plain(body["system"], "system", model)})
    for i, message in enumerate(body.get("messages") or []):
        where, role, content = f"messages.{i}", message.get("role"), message.get("content")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
        elif role == "system":
            messages.append({"role": "system", "content": _plain(content, f"{where}.content", model)})
        elif not isinstance(content, list):
            raise TranslationError(f"'{where}.content' must be a string or an array", param=f"{where}.content")
        elif role == "assistant":
            messages.append(_openai_assistant(content, where, model))
        else:
            messages.extend(_openai_user(content, where, model))
    out: dict[str, Any] = {"model": model, "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    tools = body.get("tools")
    if tools:
        functions = []
        for j, tool in enumerate(tools):
            if tool.get("type") not in (None, "custom"):
                raise UnsupportedParameter(f"tools.{j}.type", model, f"server tool '{tool.get('type')}'")
            function = {"name": tool.get("name"), "parameters": tool.get("input_schema") or {"type": "object"}}
            if tool.get("description"):
                function["description"] = tool["description"]
            functions.append({"type": "function", "function": function})
        out["tools"] = functions
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            out["tool_choice"] = _openai_tool_choice(choice, model)
            if choice.get("disable_parallel_tool_use"):
                out["parallel_tool_calls"] = False
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user:
        out["user"] = user
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _message_id(openai_id: object) -> str:
    text = str(openai_id or "unknown")
    return text if text.startswith("msg_") else "msg_" + text.removeprefix("chatcmpl-")


def _tool_input(arguments: object) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except json.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}


def usage_from_openai(usage: Mapping[str, Any] | None) -> TokenUsage:
    """TokenUsage from an OpenAI CompletionUsage object."""
    usage = usage or {}
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return TokenUsage(prompt_tokens=usage.get("prompt_tokens") or 0,
                      completion_tokens=usage.get("completion_tokens") or 0,
                      cached_tokens=prompt_details.get("cached_tokens") or 0,
                      reasoning_tokens=completion_details.get("reasoning_tokens") or 0)


def _anthropic_usage(usage: TokenUsage) -> dict[str, int]:
    return {"input_tokens": usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cached_tokens, "output_tokens": usage.completion_tokens}


def response_from_openai(resp: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    """An OpenAI `chat.completion` as an Anthropic message answering for the public `model` id."""
    choice = (resp.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if isinstance(message.get("content"), str) and message["content"]:
        content.append(_text_block(message["content"]))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                        "input": _tool_input(function.get("arguments"))})
    return {"id": _message_id(resp.get("id")), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": _STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
            "stop_sequence": None, "usage": _anthropic_usage(usage_from_openai(resp.get("usage")))}


def encode_event(event: str, data: Mapping[str, Any]) -> bytes:
    """One Anthropic SSE event: `event:` line, `data:` line, blank line."""
    return b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


class StreamToAnthropic:
    """OpenAI chunks in, Anthropic (event, data) pairs out: message_start, ping, blocks, message_delta, message_stop.

    Input usage is only known at the end of an OpenAI stream, so message_start carries zeros and
    message_delta carries every count (Anthropic's message_delta usage is cumulative and overrides).
    """

    def __init__(self, *, model: str, message_id: str | None = None) -> None:
        self._model = model
        self._id = message_id
        self._started = False
        self._open: int | None = None
        self._open_kind = ""
        self._blocks = 0
        self._tool_blocks: dict[int, int] = {}
        self._stop = "end_turn"
        self.usage = TokenUsage()
        self.done = False

    def _start(self, chunk: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        self._started = True
        if self._id is None:
            self._id = _message_id(chunk.get("id"))
        message: dict[str, Any] = {"id": self._id, "type": "message", "role": "assistant", "model": self._model,
                                   "content": [], "stop_reason": None, "stop_sequence": None,
                                   "usage": _anthropic_usage(TokenUsage())}
        return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        if self._open is None:
            return []
        index, self._open, self._open_kind = self._open, None, ""
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _begin(self, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = self._close()
        self._open, self._open_kind = self._blocks, block["type"]
        self._blocks += 1
        events.append(("content_block_start", {"type": "content_block_start", "index": self._open,
                                               "content_block": block}))
        return events

    def _delta(self, index: int, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}

    def feed(self, chunk: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The events for one OpenAI chunk."""
        events = [] if self._started else self._start(chunk)
        if isinstance(chunk.get("usage"), dict):
            self.usage = usage_from_openai(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self._open_kind != "text":
                    events += self._begin(_text_block(""))
                assert self._open is not None
                events.append(self._delta(self._open, {"type": "text_delta", "text": delta["content"]}))
            for call in delta.get("tool_calls") or []:
                tool, function = call.get("index", 0), call.get("function") or {}
                if tool not in self._tool_blocks:
                    events += self._begin({"type": "tool_use", "id": call.get("id") or f"toolu_{tool}",
                                           "name": function.get("name") or "", "input": {}})
                    self._tool_blocks[tool] = self._blocks - 1
                if function.get("arguments"):
                    events.append(self._delta(self._tool_blocks[tool],
                                              {"type": "input_json_delta", "partial_json": function["arguments"]}))
            if choice.get("finish_reason"):
                self._stop = _STOP.get(choice["finish_reason"], "end_turn")
                events += self._close()
        return events

    def finish(self) -> list[tuple[str, dict[str, Any]]]:
        """The closing events, once the OpenAI stream ended (`[DONE]`): message_delta with usage, message_stop."""
        events = ([] if self._started else self._start({})) + self._close()
        events.append(("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": self._stop, "stop_sequence": None},
                                         "usage": _anthropic_usage(self.usage)}))
        events.append(("message_stop", {"type": "message_stop"}))
        self.done = True
        return events


def error_body(error_type: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """An Anthropic error body."""
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def error_from_openai(status: int, body: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI error body (Routeur's own or an upstream's) in Anthropic's shape, for /v1/messages callers."""
    error: Mapping[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
    code = error.get("code")
    error_type = ("rate_limit_error" if code == "rate_limit_exceeded"
                  else ERROR_TYPES_BY_STATUS.get(status, "api_error" if status >= 500 else "invalid_request_error"))
    return error_body(error_type, str(error.get("message") or f"HTTP {status}"))

