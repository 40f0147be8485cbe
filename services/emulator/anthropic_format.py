"""Anthropic Messages wire format for the emulator: validation, deterministic messages, stream events, errors."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from services.emulator import openai_format as oa
from services.emulator.anthropic_cache import CacheUsage
from services.emulator.openai_format import _text_pieces as text_pieces

ANTHROPIC_VERSION = "2023-06-01"
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
BLOCK_TYPES = ("text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking")
TOOL_CHOICES = ("auto", "any", "tool", "none")
ROLES = ("user", "assistant", "system")
"""Message roles; "system" turns are in the SDK's MessageParam (most callers use the top-level `system`)."""
_ENCODER = msgspec.json.Encoder()
THINKING_KINDS = ("enabled", "adaptive")
MIN_THINKING_BUDGET = 1024
REDACTED_THINKING_TRIGGER = ("ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_"
                             "46C9A13E193C177646C7398A98432ECCCE4C1253D5E2D82641AC0E52CC2876CB")
"""The string Anthropic documents for testing: a request holding it is answered with a redacted_thinking block
(https://docs.claude.com/en/docs/build-with-claude/extended-thinking#thinking-redaction)."""
_SIGNING_KEY = b"routeur-emulator-thinking"
NO_CACHE = CacheUsage()

Event = tuple[str, dict[str, Any]]


class ToolUse(msgspec.Struct, frozen=True):
    """The one tool the emulated model calls: `partial_json` is what the stream sends for `input`."""

    id: str
    name: str
    input: dict[str, Any]
    partial_json: str


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """The whole deterministic answer to one request; the body and the stream events are both built from it."""

    id: str
    model: str
    text: str | None
    tool_use: ToolUse | None
    stop_reason: str
    stop_sequence: str | None
    input_tokens: int  # what is left of the input once the cache buckets are taken out
    output_tokens: int
    thinking: str | None = None
    redacted_thinking: str | None = None
    cache: CacheUsage = NO_CACHE


def sign_thinking(thinking: str) -> str:
    """The signature of a thinking block (opaque to callers, checked when the block comes back in the history)."""
    mac = hashlib.blake2b(thinking.encode(), key=_SIGNING_KEY, digest_size=48).digest()
    return base64.b64encode(b"EmuThink" + mac).decode()


# --------------------------------------------------------------------------- errors


def error_body(error_type: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """Anthropic's error shape: `{"type": "error", "error": {"type", "message"}, "request_id"}`."""
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def invalid(message: str) -> dict[str, Any]:
    return error_body("invalid_request_error", message)


def missing_key_body() -> dict[str, Any]:
    return error_body("authentication_error", "x-api-key header is required")


def missing_version_body() -> dict[str, Any]:
    return invalid("anthropic-version: header is required")


_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request (emulated fault)."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: {model}"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed the rate limit for your organization (emulated)."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


def status_error_body(
    status: int, *, model: str, error_type: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """The error body Anthropic sends with `status`; `error_type`/`message` override the defaults."""
    fallback = ("invalid_request_error" if status < 500 else "api_error", f"Emulated HTTP {status} error.")
    default_type, default_message = _STATUS_ERRORS.get(status, fallback)
    return error_body(error_type or default_type, message or default_message.format(model=model))


# --------------------------------------------------------------------------- validation


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_block(block: object, at: str) -> str | None:
    if not isinstance(block, dict):
        return f"{at}: Input should be a valid dictionary"
    kind = block.get("type")
    if kind not in BLOCK_TYPES:
        expected = ", ".join(f"'{t}'" for t in BLOCK_TYPES)
        return f"{at}: Input tag '{kind}' found using 'type' does not match any of the expected tags: {expected}"
    if kind == "text":
        if not isinstance(block.get("text"), str):
            return f"{at}.text: Field required"
        if not block["text"]:
            return "messages: text content blocks must be non-empty"
    if kind == "image":
        source = block.get("source")
        if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
            return f"{at}.source: Input tag found using 'type' does not match any of the expected tags: 'base64', 'url'"
        if source["type"] == "base64" and source.get("media_type") not in IMAGE_MEDIA_TYPES:
            return f"{at}.source.base64.media_type: Input should be " + " or ".join(f"'{m}'" for m in IMAGE_MEDIA_TYPES)
        if source["type"] == "base64" and not isinstance(source.get("data"), str):
            return f"{at}.source.base64.data: Field required"
    if kind == "tool_use":
        for field in ("id", "name"):
            if not isinstance(block.get(field), str):
                return f"{at}.{field}: Field required"
        if not isinstance(block.get("input"), dict):
            return f"{at}.input: Input should be a valid dictionary"
    if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
        return f"{at}.tool_use_id: Field required"
    if kind == "thinking" and (not isinstance(block.get("thinking"), str)
                               or block.get("signature") != sign_thinking(block["thinking"])):
        return f"{at}: Invalid `signature` in `thinking` block"
    if kind == "redacted_thinking" and not isinstance(block.get("data"), str):
        return f"{at}.data: Field required"
    return None


def _whitespace_only(content: object) -> bool:
    """Text that is all whitespace: a string, or text blocks none of which has anything else. The Messages API
    refuses it ("text content blocks must contain non-whitespace text"); a blank block beside real text passes."""
    if isinstance(content, str):
        return content.isspace()
    texts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"] \
        if isinstance(content, list) else []
    return bool(texts) and all(isinstance(t, str) and t.isspace() for t in texts)


def _ids(content: object, kind: str, key: str) -> list[str]:
    if not isinstance(content, list):
        return []
    return [b[key] for b in content if isinstance(b, dict) and b.get("type") == kind]


def _check_messages(messages: list[Any]) -> str | None:
    for i, message in enumerate(messages):
        at = f"messages.{i}"
        if not isinstance(message, dict):
            return f"{at}: Input should be a valid dictionary"
        role = message.get("role")
        if role not in ROLES:
            return f"{at}.role: Input should be 'user', 'assistant' or 'system'"
        content = message.get("content")
        if "content" not in message:
            return f"{at}.content: Field required"
        if not isinstance(content, (str, list)):
            return f"{at}.content: Input should be a valid list"
        if not content and not (i == len(messages) - 1 and role == "assistant"):
            # the API's words (quoted in anthropics/anthropic-sdk-python and langchain issues)
            return f"{at}: all messages must have non-empty content except for the optional final assistant message"
        for j, block in enumerate(content if isinstance(content, list) else []):
            if (error := _check_block(block, f"{at}.content.{j}")) is not None:
                return error
        if _whitespace_only(content):
            return "messages: text content blocks must contain non-whitespace text"
        uses = _ids(content, "tool_use", "id")
        following = messages[i + 1] if i + 1 < len(messages) and isinstance(messages[i + 1], dict) else {}
        answered = set(_ids(following.get("content"), "tool_result", "tool_use_id"))
        if i + 1 < len(messages) and (missing := [u for u in uses if u not in answered]):
            return (f"{at}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                    "in the next message.")
        previous = messages[i - 1] if i > 0 and isinstance(messages[i - 1], dict) else {}
        offered = set(_ids(previous.get("content"), "tool_use", "id"))
        if unknown := [r for r in _ids(content, "tool_result", "tool_use_id") if r not in offered]:
            return (f"{at}.content.0: unexpected `tool_use_id` found in `tool_result` blocks: {', '.join(unknown)}. "
                    "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.")
    return None


def _check_tools(body: Mapping[str, Any]) -> str | None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for j, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                return f"tools.{j}.name: Field required"
            if not isinstance(tool.get("input_schema"), dict):
                return f"tools.{j}.custom.input_schema: Field required"
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in TOOL_CHOICES:
            return "tool_choice: Input tag found using 'type' does not match any of the expected tags: " + ", ".join(
                f"'{c}'" for c in TOOL_CHOICES)
        if choice["type"] == "tool" and not isinstance(choice.get("name"), str):
            return "tool_choice.tool.name: Field required"
        if not tools:
            return "tool_choice may only be specified while providing tools."
    return None


def counting_max_tokens(body: Mapping[str, Any]) -> int:
    """The `max_tokens` a count_tokens body (which has none) is checked with: one more than a thinking budget."""
    thinking = body.get("thinking")
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    return budget + 1 if isinstance(budget, int) and not isinstance(budget, bool) else 1


def validate_request(body: object) -> dict[str, Any] | None:
    """An Anthropic error body for a request the Messages API would reject with 400, else None."""
    if not isinstance(body, dict):
        return invalid("There was an issue with the format or content of your request: the body must be a JSON object.")
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            return invalid(f"{field}: Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        return invalid("model: Input should be a valid string")
    if not _is_int(body["max_tokens"]):
        return invalid("max_tokens: Input should be a valid integer")
    if body["max_tokens"] < 1:
        return invalid("max_tokens: Input should be greater than or equal to 1")
    messages = body["messages"]
    if not isinstance(messages, list):
        return invalid("messages: Input should be a valid list")
    if not messages:
        return invalid("messages: at least one message is required")
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        return invalid("system: Input should be a valid string or a valid list")
    if "stream" in body and not isinstance(body["stream"], bool):
        return invalid("stream: Input should be a valid boolean")
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            return invalid(f"{name}: Input should be a valid number")
        if value is not None and not 0 <= value <= 1:
            return invalid(f"{name}: Input should be less than or equal to 1" if value > 1
                           else f"{name}: Input should be greater than or equal to 0")
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        return invalid("stop_sequences: Input should be a valid list of strings")
    if _whitespace_only(system):
        return invalid("system: text content blocks must contain non-whitespace text")
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget: int = thinking.get("budget_tokens")  # type: ignore[assignment]  # checked on the next line
        if not _is_int(budget) or budget < MIN_THINKING_BUDGET:
            return invalid(f"thinking.enabled.budget_tokens: Input should be greater than or equal to "
                           f"{MIN_THINKING_BUDGET}")
        if body["max_tokens"] <= budget:
            return invalid("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                           "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
                           "#max-tokens-and-context-window-size")
    error = _check_messages(messages) or _check_tools(body)
    return invalid(error) if error is not None else None


# --------------------------------------------------------------------------- the deterministic message


def _result_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _projection(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request as the OpenAI-shaped body openai_format plans replies for (same seed, tokens and tool pick)."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": system if isinstance(system, str) else _result_text(system)})
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str) or message["role"] == "system":
            messages.append({"role": message["role"], "content": _result_text(content)})
            continue
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for block in content:
            kind = block["type"]
            if kind == "text":
                parts.append({"type": "text", "text": block["text"]})
            elif kind in ("image", "document"):
                parts.append({"type": "image"})
            elif kind == "thinking":
                parts.append({"type": "text", "text": block.get("thinking", "")})
            elif kind == "tool_use":
                arguments = _ENCODER.encode(block["input"]).decode()
                calls.append({"id": block["id"], "type": "function",
                              "function": {"name": block["name"], "arguments": arguments}})
            elif kind == "tool_result":
                messages.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                                 "content": _result_text(block.get("content"))})
        if parts or calls:
            messages.append({"role": message["role"], "content": parts, **({"tool_calls": calls} if calls else {})})
    projected: dict[str, Any] = {"model": body["model"], "messages": messages, "max_tokens": body["max_tokens"]}
    tools = body.get("tools")
    if tools:
        projected["tools"] = [{"type": "function", "function": {"name": t["name"], "parameters": t["input_schema"]}}
                              for t in tools]
        choice = body.get("tool_choice") or {"type": "auto"}
        kind = choice["type"]
        projected["tool_choice"] = ({"type": "function", "function": {"name": choice["name"]}} if kind == "tool"
                                    else {"any": "required"}.get(kind, kind))
    return projected


def count_input_tokens(body: Mapping[str, Any]) -> int:
    """input_tokens for a validated request (what /v1/messages/count_tokens answers, too)."""
    return oa.prompt_tokens(_projection(body))


def _thinks(body: Mapping[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in THINKING_KINDS


def _thinking_text(projected: Mapping[str, Any]) -> str:
    """A short deterministic thought about the last user turn."""
    last: Mapping[str, Any] = next(
        (m for m in reversed(projected["messages"]) if m.get("role") in ("user", "tool")), {})
    content = last.get("content")
    text = content if isinstance(content, str) else " ".join(
        p.get("text", "") for p in content or [] if isinstance(p, dict))
    words = len(text.split())
    return f"The user wrote {words} words. I should answer directly and keep it brief."


def plan_message(body: Mapping[str, Any], *, message_id: str, cache: CacheUsage = NO_CACHE) -> Message:
    """The deterministic answer to a request that passed `validate_request`; `cache` is what the prompt cache
    read and wrote for it (taken out of input_tokens)."""
    projected = _projection(body)
    reply = oa.plan_reply(projected)
    tool_use: ToolUse | None = None
    text: str | None = None
    stop_sequence: str | None = None
    stop_reason = {"length": "max_tokens", "tool_calls": "tool_use"}.get(reply.finish_reason, "end_turn")
    output_tokens = reply.completion_tokens
    if reply.tool_call is not None:
        call = reply.tool_call
        try:
            arguments = json.loads(call.arguments)
        except json.JSONDecodeError:  # cut short by max_tokens: the stream still sends the partial JSON
            arguments = {}
        tool_id = "toolu_01" + call.id.removeprefix("call_")[:22]
        tool_use = ToolUse(id=tool_id, name=call.name, input=arguments if isinstance(arguments, dict) else {},
                           partial_json=call.arguments)
    else:
        text = reply.content or ""
        hits = [(text.find(s), s) for s in body.get("stop_sequences") or [] if s and s in text]
        if hits:
            position, stop_sequence = min(hits)
            text, stop_reason = text[:position], "stop_sequence"
            output_tokens = oa.count_tokens(text)
    thinking: str | None = None
    redacted: str | None = None
    if _thinks(body):
        if REDACTED_THINKING_TRIGGER in _ENCODER.encode(body["messages"][-1]).decode():
            redacted = base64.b64encode(hashlib.blake2b(message_id.encode(), digest_size=48).digest()).decode()
            output_tokens += 16
        else:
            thinking = _thinking_text(projected)
            output_tokens += oa.count_tokens(thinking)
    input_tokens = max(0, reply.prompt_tokens - cache.read - cache.write)
    return Message(id=message_id, model=body["model"], text=text, tool_use=tool_use, stop_reason=stop_reason,
                   stop_sequence=stop_sequence, input_tokens=input_tokens, output_tokens=output_tokens,
                   thinking=thinking, redacted_thinking=redacted, cache=cache)


# --------------------------------------------------------------------------- bodies and events


def usage_body(message: Message, *, output_tokens: int | None = None) -> dict[str, Any]:
    """The `usage` object of a message (non-streaming, and message_start with the output so far)."""
    return {
        "input_tokens": message.input_tokens,
        "cache_creation_input_tokens": message.cache.write,
        "cache_read_input_tokens": message.cache.read,
        "cache_creation": {"ephemeral_5m_input_tokens": message.cache.write_5m,
                           "ephemeral_1h_input_tokens": message.cache.write_1h},
        "output_tokens": message.output_tokens if output_tokens is None else output_tokens,
        "service_tier": "standard",
    }


def _thoughts(message: Message) -> list[dict[str, Any]]:
    if message.redacted_thinking is not None:
        return [{"type": "redacted_thinking", "data": message.redacted_thinking}]
    if message.thinking is not None:
        return [{"type": "thinking", "thinking": message.thinking, "signature": sign_thinking(message.thinking)}]
    return []


def _content(message: Message) -> list[dict[str, Any]]:
    if message.tool_use is not None:
        use = message.tool_use
        return [*_thoughts(message), {"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]
    return [*_thoughts(message), {"type": "text", "text": message.text or ""}]


def message_body(message: Message) -> dict[str, Any]:
    """The non-streaming `message` object."""
    return {"id": message.id, "type": "message", "role": "assistant", "model": message.model,
            "content": _content(message), "stop_reason": message.stop_reason,
            "stop_sequence": message.stop_sequence, "usage": usage_body(message)}


def stream_events(message: Message, *, chunk_words: int = 3) -> Iterator[Event]:
    """The (event, data) pairs Anthropic streams for `message`, in order, ping after the first block start.

    message_start carries input_tokens and 1 output token; message_delta carries the cumulative final usage,
    so the streamed usage equals the non-streamed one.
    """
    start = {**message_body(message), "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": usage_body(message, output_tokens=min(1, message.output_tokens))}
    yield "message_start", {"type": "message_start", "message": start}
    index = 0
    for thought in _thoughts(message):
        if thought["type"] == "redacted_thinking":
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": thought}
        else:
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": empty}
            for piece in text_pieces(thought["thinking"], max(1, chunk_words)):
                yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                              "delta": {"type": "thinking_delta", "thinking": piece}}
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "signature_delta", "signature": thought["signature"]}}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
        index += 1
    if message.tool_use is not None:
        use = message.tool_use
        block: dict[str, Any] = {"type": "tool_use", "id": use.id, "name": use.name, "input": {}}
        size = max(1, chunk_words) * 4
        fragments = [use.partial_json[i : i + size] for i in range(0, len(use.partial_json), size)]
        deltas = [{"type": "input_json_delta", "partial_json": f} for f in ["", *fragments]]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in text_pieces(message.text or "", max(1, chunk_words))]
    yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
    yield "ping", {"type": "ping"}
    for delta in deltas:
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": index}
    usage = {k: v for k, v in usage_body(message).items() if k not in ("cache_creation", "service_tier")}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": message.stop_reason, "stop_sequence": message.stop_sequence},
                            "usage": usage}
    yield "message_stop", {"type": "message_stop"}


def encode_event(event: str, data: Mapping[str, Any]) -> bytes:
    """One SSE event as Anthropic writes it: an `event:` line, a `data:` line, a blank line."""
    return b"event: " + event.encode() + b"\ndata: " + _ENCODER.encode(data) + b"\n\n"
