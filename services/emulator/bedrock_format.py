"""AWS Bedrock Converse wire format for the emulator: validation, deterministic answers, event-stream frames, errors."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from services.emulator import openai_format as oa
from services.emulator.eventstream import encode_message
from services.emulator.openai_format import _text_pieces as text_pieces

ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
AUTH_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.coral.service/"
EVENT_STREAM_TYPE = "application/vnd.amazon.eventstream"
SIGNING_NAME = "bedrock"
"""The SigV4 service name requests must be scoped to (not `bedrock-runtime`)."""
REQUEST_FIELDS = frozenset({
    "messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig", "additionalModelRequestFields",
    "promptVariables", "additionalModelResponseFieldPaths", "requestMetadata", "performanceConfig", "serviceTier",
    "outputConfig",
})
BLOCK_TYPES = frozenset({"text", "image", "document", "video", "audio", "toolUse", "toolResult", "guardContent",
                         "cachePoint", "reasoningContent", "citationsContent", "searchResult"})
RESULT_TYPES = frozenset({"json", "text", "image", "document", "video", "searchResult"})
"""The members of a ToolResultContentBlock."""
IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
DOCUMENT_FORMATS = ("pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_.:-]{1,64}$")
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_ENCODER = msgspec.json.Encoder()

_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "Invalid request (emulated fault)."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "The provided model identifier is invalid."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    424: ("ModelErrorException", "The model returned an error (emulated fault)."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an error processing the request."),
    503: ("ServiceUnavailableException", "The service is temporarily unable to handle the request."),
}
# The exceptions ConverseStream can send inside a started stream (`:exception-type` is the member name).
_STREAM_EXCEPTIONS = {400: "validationException", 429: "throttlingException", 503: "serviceUnavailableException"}


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """The whole deterministic answer to one request; the body and the stream events are both built from it."""

    text: str | None
    tool_use: dict[str, Any] | None
    partial_json: str
    stop_reason: str
    input_tokens: int
    output_tokens: int


# --------------------------------------------------------------------------- errors


def error_type_header(name: str) -> str:
    """The `x-amzn-ErrorType` value for exception `name`."""
    namespace = AUTH_ERROR_NAMESPACE if "Signature" in name or "Authentication" in name else ERROR_NAMESPACE
    return f"{name}:{namespace}"


def status_error(status: int, *, error_type: str | None = None, message: str | None = None) -> tuple[str, str]:
    """(exception name, message) Bedrock sends with `status`; `error_type`/`message` override the defaults."""
    fallback = ("InternalServerException" if status >= 500 else "ValidationException", f"Emulated HTTP {status} error.")
    name, default_message = _STATUS_ERRORS.get(status, fallback)
    return error_type or name, message or default_message


def stream_exception_type(status: int, error_type: str | None = None) -> str:
    """The ConverseStream exception member (`throttlingException`) an in-stream failure of `status` is sent as."""
    if error_type:
        return error_type[:1].lower() + error_type[1:]
    return _STREAM_EXCEPTIONS.get(status, "internalServerException" if status >= 500 else "modelStreamErrorException")


# --------------------------------------------------------------------------- validation


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _constraint(value: object, at: str, rule: str) -> str:
    shown = value if isinstance(value, (str, int, float)) else json.dumps(value)[:40]
    return f"1 validation error detected: Value '{shown}' at '{at}' failed to satisfy constraint: {rule}"


def _check_base64(value: object, at: str) -> str | None:
    try:
        base64.b64decode(value if isinstance(value, str) else "", validate=True)
    except (binascii.Error, ValueError):
        return f"Unable to parse request body: '{at}' must be base64-encoded bytes"
    return None if isinstance(value, str) and value else f"Unable to parse request body: '{at}' is required"


def _check_block(block: object, at: str, result: bool = False) -> str | None:
    allowed = RESULT_TYPES if result else BLOCK_TYPES
    kinds = [k for k in block if k in allowed] if isinstance(block, dict) else []
    if not isinstance(block, dict) or len(block) != 1 or len(kinds) != 1:
        union = "ToolResultContentBlock" if result else "ContentBlock"
        return f"Unable to parse request body: '{at}' must set exactly one member of {union}"
    kind, value = kinds[0], block[kinds[0]]
    if kind == "text" and (not isinstance(value, str) or not value.strip()):
        return (f"The text field in the ContentBlock object at {at} is blank. "
                "Add text to the text field, and try again.")
    if kind == "image":
        if not isinstance(value, dict) or value.get("format") not in IMAGE_FORMATS:
            return _constraint((value or {}).get("format") if isinstance(value, dict) else value, f"{at}.image.format",
                               "Member must satisfy enum value set: [png, jpeg, gif, webp]")
        return _check_base64((value.get("source") or {}).get("bytes"), f"{at}.image.source.bytes")
    if kind == "document":
        if not isinstance(value, dict) or value.get("format") not in DOCUMENT_FORMATS or not value.get("name"):
            return f"Unable to parse request body: '{at}.document' needs a name, a format and a source"
        return _check_base64((value.get("source") or {}).get("bytes"), f"{at}.document.source.bytes")
    if kind == "toolUse" and not result:
        if not isinstance(value, dict) or not _TOOL_USE_ID.match(str(value.get("toolUseId", ""))):
            return _constraint(value, f"{at}.toolUse.toolUseId", "Member must satisfy regular expression pattern: "
                                                                "[a-zA-Z0-9_.:-]+")
        if not _TOOL_NAME.match(str(value.get("name", ""))) or "input" not in value:
            return f"Unable to parse request body: '{at}.toolUse' needs a name and an input"
    if kind == "toolResult" and not result:
        if not isinstance(value, dict) or not _TOOL_USE_ID.match(str(value.get("toolUseId", ""))):
            return _constraint(value, f"{at}.toolResult.toolUseId", "Member must satisfy regular expression "
                                                                   "pattern: [a-zA-Z0-9_.:-]+")
        if value.get("status", "success") not in ("success", "error"):
            return _constraint(value["status"], f"{at}.toolResult.status",
                               "Member must satisfy enum value set: [success, error]")
        contents = value.get("content")
        if not isinstance(contents, list):
            return f"Unable to parse request body: '{at}.toolResult.content' is required"
        for k, item in enumerate(contents):
            if (error := _check_block(item, f"{at}.toolResult.content.{k}", result=True)) is not None:
                return error
    return None


def _ids(content: list[Any], kind: str) -> list[str]:
    return [b[kind]["toolUseId"] for b in content if isinstance(b, dict) and isinstance(b.get(kind), dict)]


def _check_messages(messages: object) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "A conversation must start with a user message. Try again with a conversation that starts with a " \
               "user message."
    previous_role: str | None = None
    offered: list[str] = []
    for i, message in enumerate(messages):
        at = f"messages.{i}"
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            return f"Unable to parse request body: '{at}' needs a role and a content list"
        role = message.get("role")
        if role not in ("user", "assistant"):
            return _constraint(role, f"{at}.member.role", "Member must satisfy enum value set: [user, assistant]")
        if i == 0 and role != "user":
            return "A conversation must start with a user message. Try again with a conversation that starts with " \
                   "a user message."
        if role == previous_role:
            return "A conversation must alternate between user and assistant roles. Make sure the conversation " \
                   "alternates between user and assistant roles and try again."
        for j, block in enumerate(message["content"]):
            if (error := _check_block(block, f"{at}.content.{j}")) is not None:
                return error
        answered = _ids(message["content"], "toolResult")
        if offered and (missing := [u for u in offered if u not in answered]):
            return f"Expected toolResult blocks at {at}.content for the following Ids: {', '.join(missing)}"
        if unknown := [r for r in answered if r not in offered]:
            return (f"The toolResult blocks at {at}.content contain toolUseIds that do not match a toolUse "
                    f"block of the previous turn: {', '.join(unknown)}")
        previous_role, offered = role, _ids(message["content"], "toolUse")
    return None


def _check_tools(body: Mapping[str, Any]) -> str | None:
    config = body.get("toolConfig")
    uses_tools = any(isinstance(b, dict) and ("toolUse" in b or "toolResult" in b)
                     for m in body["messages"] for b in m["content"])
    if config is None:
        return ("The toolConfig field must be defined when using toolUse and toolResult content blocks."
                if uses_tools else None)
    tools = config.get("tools") if isinstance(config, dict) else None
    if not isinstance(tools, list) or not tools:
        return _constraint(tools, "toolConfig.tools", "Member must have length greater than or equal to 1")
    names = []
    for j, tool in enumerate(tools):
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        if isinstance(tool, dict) and "cachePoint" in tool:
            continue
        if not isinstance(spec, dict) or not _TOOL_NAME.match(str(spec.get("name", ""))):
            return _constraint(spec, f"toolConfig.tools.{j}.member.toolSpec.name",
                               "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+")
        if not isinstance((spec.get("inputSchema") or {}).get("json"), dict):
            return f"Unable to parse request body: 'toolConfig.tools.{j}.toolSpec.inputSchema.json' is required"
        names.append(spec["name"])
    choice = config.get("toolChoice")
    if choice is not None:
        if not isinstance(choice, dict) or len(choice) != 1 or next(iter(choice)) not in ("auto", "any", "tool"):
            return "Unable to parse request body: 'toolConfig.toolChoice' must set exactly one of auto, any, tool"
        kind = next(iter(choice))
        if kind == "tool" and (choice["tool"] or {}).get("name") not in names:
            return "The tool named in toolConfig.toolChoice.tool.name is not defined in toolConfig.tools."
    return None


def _check_inference(config: object) -> str | None:
    if config is None:
        return None
    if not isinstance(config, dict):
        return "Unable to parse request body: 'inferenceConfig' must be an object"
    max_tokens = config.get("maxTokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        return _constraint(max_tokens, "inferenceConfig.maxTokens", "Member must have value greater than or equal "
                                                                    "to 1")
    for name in ("temperature", "topP"):
        value = config.get(name)
        if value is not None and (not _is_number(value) or not 0 <= value <= 1):
            return _constraint(value, f"inferenceConfig.{name}", "Member must have value less than or equal to 1")
    stops = config.get("stopSequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)):
        return _constraint(stops, "inferenceConfig.stopSequences",
                           "Member must satisfy constraint: [Member must have length greater than or equal to 1]")
    return None


def validate_request(body: object, model_id: str = "") -> str | None:
    """The ValidationException message for a request Bedrock would reject with 400 whatever the model (`model_id`'s
    own rules are bedrock_validate.check_model's), else None."""
    if not isinstance(body, dict):
        return "Unable to parse request body: the body must be a JSON object."
    if unknown := sorted(set(body) - REQUEST_FIELDS):
        return f"Unable to parse request body: unknown field '{unknown[0]}'"
    system = body.get("system")
    if system is not None and (not isinstance(system, list) or not all(
            isinstance(s, dict) and (("text" in s and isinstance(s["text"], str) and s["text"].strip())
                                     or "cachePoint" in s or "guardContent" in s) for s in system)):
        return "Unable to parse request body: 'system' must be a list of non-empty text blocks"
    return (_check_messages(body.get("messages")) or _check_tools(body)
            or _check_inference(body.get("inferenceConfig")))


# --------------------------------------------------------------------------- the deterministic answer


def _texts(blocks: list[Any]) -> str:
    return "".join(b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str))


def openai_view(model_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI-shaped body whose `openai_format` reply and token counts this Converse request gets."""
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _texts(body["system"])})
    for message in body["messages"]:
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for block in message["content"]:
            if "text" in block:
                parts.append({"type": "text", "text": block["text"]})
            elif "image" in block or "document" in block:
                parts.append({"type": "image"})
            elif "toolUse" in block:
                use = block["toolUse"]
                calls.append({"id": use["toolUseId"], "type": "function",
                              "function": {"name": use["name"], "arguments": _ENCODER.encode(use["input"]).decode()}})
            elif "toolResult" in block:
                result = block["toolResult"]
                content = "".join(c["text"] if "text" in c else _ENCODER.encode(c.get("json")).decode()
                                  for c in result["content"] if "text" in c or "json" in c)
                messages.append({"role": "tool", "tool_call_id": result["toolUseId"], "content": content})
        if parts or calls:
            messages.append({"role": message["role"], "content": parts, **({"tool_calls": calls} if calls else {})})
    view: dict[str, Any] = {"model": model_id, "messages": messages}
    max_tokens = (body.get("inferenceConfig") or {}).get("maxTokens")
    if max_tokens is not None:
        view["max_tokens"] = max_tokens
    config = body.get("toolConfig")
    if config:
        view["tools"] = [{"type": "function", "function": {"name": t["toolSpec"]["name"],
                                                           "parameters": t["toolSpec"]["inputSchema"]["json"]}}
                         for t in config["tools"] if "toolSpec" in t]
        choice = config.get("toolChoice") or {"auto": {}}
        view["tool_choice"] = ({"type": "function", "function": {"name": choice["tool"]["name"]}} if "tool" in choice
                               else "required" if "any" in choice else "auto")
    return view


def plan(model_id: str, body: Mapping[str, Any]) -> Answer:
    """The deterministic answer to a request that passed `validate_request`."""
    reply = oa.plan_reply(openai_view(model_id, body))
    stop_reason = {"length": "max_tokens", "tool_calls": "tool_use"}.get(reply.finish_reason, "end_turn")
    output_tokens = reply.completion_tokens
    if reply.tool_call is not None:
        call = reply.tool_call
        try:
            arguments = json.loads(call.arguments)
        except json.JSONDecodeError:  # cut short by maxTokens: the stream still sends the partial JSON
            arguments = {}
        tool_id = "tooluse_" + base64.urlsafe_b64encode(hashlib.blake2b(call.id.encode(), digest_size=16)
                                                        .digest()).decode()[:22]
        use = {"toolUseId": tool_id, "name": call.name, "input": arguments if isinstance(arguments, dict) else {}}
        return Answer(text=None, tool_use=use, partial_json=call.arguments, stop_reason=stop_reason,
                      input_tokens=reply.prompt_tokens, output_tokens=output_tokens)
    text = reply.content or ""
    stops = (body.get("inferenceConfig") or {}).get("stopSequences") or []
    hits = [(text.find(s), s) for s in stops if s in text]
    if hits:
        text, stop_reason = text[: min(hits)[0]], "stop_sequence"
        output_tokens = oa.count_tokens(text)
    return Answer(text=text, tool_use=None, partial_json="", stop_reason=stop_reason,
                  input_tokens=reply.prompt_tokens, output_tokens=output_tokens)


# --------------------------------------------------------------------------- bodies and events


def usage_body(answer: Answer) -> dict[str, Any]:
    """The `usage` object: identical in the Converse body and in the stream's metadata event."""
    return {"inputTokens": answer.input_tokens, "outputTokens": answer.output_tokens,
            "totalTokens": answer.input_tokens + answer.output_tokens,
            "cacheReadInputTokens": 0, "cacheWriteInputTokens": 0}


def response_body(answer: Answer, *, latency_ms: int) -> dict[str, Any]:
    """The non-streaming Converse response."""
    content = [{"toolUse": answer.tool_use}] if answer.tool_use is not None else [{"text": answer.text or ""}]
    return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": answer.stop_reason,
            "usage": usage_body(answer), "metrics": {"latencyMs": latency_ms}}


def stream_events(answer: Answer, *, latency_ms: int, chunk_words: int = 3) -> Iterator[tuple[str, dict[str, Any]]]:
    """The (event type, payload) pairs ConverseStream sends, in order.

    Text blocks get no contentBlockStart (as on Bedrock); a toolUse block does, then its input as JSON
    fragments. metadata comes last with exactly the usage of the non-streaming body.
    """
    yield "messageStart", {"role": "assistant"}
    if answer.tool_use is not None:
        start = {"toolUse": {"toolUseId": answer.tool_use["toolUseId"], "name": answer.tool_use["name"]}}
        yield "contentBlockStart", {"start": start, "contentBlockIndex": 0}
        size = max(1, chunk_words) * 4
        for i in range(0, len(answer.partial_json), size):
            yield "contentBlockDelta", {"delta": {"toolUse": {"input": answer.partial_json[i : i + size]}},
                                        "contentBlockIndex": 0}
    else:
        for piece in text_pieces(answer.text or "", max(1, chunk_words)):
            yield "contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": 0}
    yield "contentBlockStop", {"contentBlockIndex": 0}
    yield "messageStop", {"stopReason": answer.stop_reason}
    yield "metadata", {"usage": usage_body(answer), "metrics": {"latencyMs": latency_ms}}


def encode_event(event_type: str, payload: Mapping[str, Any], index: int = 0) -> bytes:
    """One event frame; like Bedrock, the JSON carries a `p` field of padding so sizes do not reveal tokens."""
    padding = _PADDING[: 1 + hashlib.blake2b(f"{event_type}:{index}".encode(), digest_size=1).digest()[0] % 60]
    data = _ENCODER.encode({**payload, "p": padding})
    return encode_message({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
                          data)


def encode_exception(exception_type: str, message: str) -> bytes:
    """An in-stream exception frame (`:message-type: exception`), e.g. `throttlingException`."""
    return encode_message({":exception-type": exception_type, ":content-type": "application/json",
                           ":message-type": "exception"}, _ENCODER.encode({"message": message}))
