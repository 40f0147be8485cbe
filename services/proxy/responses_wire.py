"""Pure translation between OpenAI's Responses API and the chat-completions form every dialect speaks: the
request (checked, then turned into a chat body), the reply (`chat.completion` → `response`) and the stream
(chat chunks → the typed `response.*` events). No I/O; tested without a socket."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from proto import codec
from services.proxy import openai_wire as wire
from services.proxy.errors import InvalidRequest

# CreateResponse's top-level fields (../shared/specs/openai-openapi.yaml); any other is refused on every route.
_FIELDS = frozenset({
    "background", "context_management", "conversation", "include", "input", "instructions", "max_output_tokens",
    "max_tool_calls", "metadata", "model", "moderation", "parallel_tool_calls", "previous_response_id", "prompt",
    "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "reasoning", "safety_identifier",
    "service_tier", "store", "stream", "stream_options", "temperature", "text", "tool_choice", "tools",
    "top_logprobs", "top_p", "truncation", "user",
})
# What a route translated to chat completions honours; the other fields are refused there by name (_REFUSED),
# and passed through on routes that serve the Responses API themselves.
_TRANSLATED = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "max_output_tokens", "temperature", "top_p",
    "reasoning", "text", "metadata", "stream", "store", "parallel_tool_calls", "user", "safety_identifier",
    "prompt_cache_key", "service_tier", "truncation", "include", "stream_options",
})
_STATE = "this route's provider speaks chat completions and keeps no responses (OpenAI and Azure OpenAI routes do)"
_REFUSED = {
    "previous_response_id": f"{_STATE}; send the whole conversation in 'input' instead",
    "conversation": f"{_STATE}; send the whole conversation in 'input' instead",
    "background": f"background responses need server-side state: {_STATE}",
    "prompt": "stored prompt templates live on OpenAI's servers; send 'instructions' and 'input'",
    "max_tool_calls": "this route runs no built-in tools to cap",
    "top_logprobs": "this route does not return log probabilities through /v1/responses",
    "prompt_cache_retention": "this route cannot set a prompt cache retention",
    "prompt_cache_options": "this route cannot set prompt cache options",
    "context_management": "this route cannot compact the context server-side",
    "moderation": "this route cannot moderate server-side",
}
_MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})
_TOOL_CHOICE_MODES = frozenset({"auto", "none", "required"})
_DEFAULT_ECHO: dict[str, Any] = {
    "instructions": None, "max_output_tokens": None, "metadata": {}, "parallel_tool_calls": True,
    "previous_response_id": None, "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto",
    "truncation": "disabled",
}


def _unsupported(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' is not supported on /v1/responses for this route: {why}.", param=param,
                          code="unsupported_parameter")


def _bad(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


# ------------------------------------------------------------------------------------------------ request


def check_request(body: Any) -> dict[str, Any]:
    """A CreateResponse body every route can be tried with (a JSON object naming its model and input, only
    CreateResponse's fields): InvalidRequest otherwise. What a translated route cannot honour is `refusal`'s."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "'model' is required and must be a non-empty string")
    unknown = sorted(name for name in body if name not in _FIELDS)
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {', '.join(unknown)}", param=unknown[0])
    if body.get("input") is None and body.get("previous_response_id") is None \
            and body.get("conversation") is None and body.get("prompt") is None:
        raise _bad("input", "'input' is required: a string or an array of input items")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise _bad("stream", "'stream' must be a boolean")
    value = body.get("max_output_tokens")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise _bad("max_output_tokens", "'max_output_tokens' must be a positive integer")
    for name in ("metadata", "reasoning", "text"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise _bad(name, f"'{name}' must be an object")
    return body


def refusal(body: dict[str, Any]) -> InvalidRequest | None:
    """The 400 naming the first thing in a checked body a route translated to chat completions cannot honour."""
    try:
        _refuse_settings(body)
        to_chat(body)
    except InvalidRequest as exc:
        return exc
    return None


def _refuse_settings(body: dict[str, Any]) -> None:
    for name, value in body.items():
        if name in _REFUSED and value is not None:
            raise _unsupported(name, _REFUSED[name])
    if body.get("store"):
        raise _unsupported("store", "Routeur retains no bodies, and this route's provider stores no responses; "
                                    "send store=false or leave it out (OpenAI and Azure OpenAI routes take it)")
    if body.get("include"):
        raise _unsupported("include", "this route cannot add extra output data; leave 'include' out")
    if body.get("truncation") not in (None, "disabled"):
        raise _unsupported("truncation", "this route cannot truncate the input to fit; leave 'truncation' out")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_obfuscation"}):
        raise _unsupported("stream_options", "only 'include_obfuscation' is understood (Routeur adds no "
                                             "obfuscation padding)")
    for name, value in (body.get("reasoning") or {}).items():
        if name != "effort" and value is not None:
            raise _unsupported(f"reasoning.{name}", "this route returns no reasoning summaries or context")


def translatable(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the part of a checked body a chat translation can carry, whether any caller text was left out): what
    the pipeline routes, reserves and screens. Settings and items without a chat counterpart are left out."""
    out = {name: value for name, value in body.items() if name in _TRANSLATED and name not in (
        "store", "include", "truncation", "stream_options")}
    out["reasoning"] = {"effort": (body.get("reasoning") or {}).get("effort")}
    if isinstance(body.get("tools"), list):
        out["tools"] = [t for t in body["tools"] if isinstance(t, dict) and t.get("type") == "function"]
    choice = body.get("tool_choice")
    if choice is not None and not ((isinstance(choice, str) and choice in _TOOL_CHOICE_MODES) or (
            isinstance(choice, dict) and choice.get("type") == "function")):
        del out["tool_choice"]
    items = body.get("input")
    dropped = False
    if isinstance(items, list):
        kept = []
        for item in items:
            kind = item.get("type", "message") if isinstance(item, dict) else None
            if kind == "message" and isinstance(item.get("content"), list):
                parts = [p for p in item["content"] if isinstance(p, dict) and (
                    p.get("type") in ("input_text", "output_text", "refusal")
                    or (p.get("type") == "input_image" and isinstance(p.get("image_url"), str)))]
                dropped = dropped or len(parts) != len(item["content"])
                kept.append({**item, "content": parts})
            elif kind in ("message", "function_call", "function_call_output"):
                kept.append(item)
            else:
                dropped = dropped or kind != "reasoning" or bool(item.get("summary") or item.get("content"))
        out["input"] = kept or ""
    elif items is None:
        out["input"] = ""
    return out, dropped


def to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """The chat-completions body for a checked CreateResponse body (the caller's `model` kept)."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad("instructions", "'instructions' must be a string")
        messages.append({"role": "system", "content": instructions})
    items = body["input"]
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    elif isinstance(items, list) and items:
        for index, item in enumerate(items):
            _add_item(messages, item, f"input[{index}]")
    elif isinstance(items, list):
        messages.append({"role": "user", "content": ""})  # nothing left to translate: an empty turn
    else:
        raise _bad("input", "'input' must be a string or an array of input items")
    out: dict[str, Any] = {"model": body["model"], "messages": messages}
    for name in ("temperature", "top_p", "parallel_tool_calls", "service_tier", "prompt_cache_key",
                 "safety_identifier", "user"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("max_output_tokens") is not None:
        out["max_completion_tokens"] = body["max_output_tokens"]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None:
        out["reasoning_effort"] = effort
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _tool_choice(body["tool_choice"])
    _text(body.get("text"), out)
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _add_item(messages: list[dict[str, Any]], item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise _bad(where, f"'{where}' must be an input item object")
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            raise _bad(f"{where}.role", f"'{where}.role' must be one of user, system, developer, assistant")
        content = _content(item.get("content"), f"{where}.content", assistant=role == "assistant")
        messages.append({"role": "system" if role == "developer" else role, "content": content})
    elif kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise _bad(f"{where}.{name}", f"'{where}.{name}' must be a string")
        call = {"id": item["call_id"], "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]}}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise _bad(f"{where}.call_id", f"'{where}.call_id' must be a string")
        output = item.get("output")
        if isinstance(output, list):
            output = _text_only(output, f"{where}.output")
        if not isinstance(output, str):
            raise _bad(f"{where}.output", f"'{where}.output' must be a string or an array of input_text parts")
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
    elif kind == "reasoning":
        raise _unsupported(f"{where}.type", "reasoning items cannot be sent to this route; leave them out of the "
                                            "input")
    else:
        raise _unsupported(f"{where}.type", f"input items of type '{kind}' (built-in tools, item references) "
                                            "have no chat-completions counterpart")


def _text_only(parts: list[Any], where: str) -> str:
    texts = []
    for index, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text") \
                or not isinstance(part.get("text"), str):
            raise _unsupported(f"{where}[{index}]", "only text parts can be sent here")
        texts.append(part["text"])
    return "".join(texts)


def _content(content: Any, where: str, *, assistant: bool) -> Any:
    """A message item's content as chat content: a string, text parts, image parts; assistant turns as text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(where, f"'{where}' must be a string or an array of content parts")
    if assistant:
        texts = []
        for index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("output_text", "input_text") and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "refusal" and isinstance(part.get("refusal"), str):
                texts.append(part["refusal"])
            else:
                raise _unsupported(f"{where}[{index}]", "an assistant message takes output_text or refusal parts")
        return "".join(texts)
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "input_text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") not in (None, "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_image":
            raise _unsupported(f"{where}[{index}].file_id", "images by file id need OpenAI's file store; send "
                                                           "'image_url' (a URL or a data URL)")
        else:
            raise _unsupported(f"{where}[{index}].type", f"content parts of type '{kind}' cannot be translated; "
                                                          "send input_text or input_image")
    return parts


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools", "'tools' must be an array")
    out = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _unsupported(f"tools[{index}].type", f"built-in tools ('{kind}') run only on OpenAI's servers; "
                                                        "this route takes function tools")
        if not isinstance(tool.get("name"), str):
            raise _bad(f"tools[{index}].name", f"'tools[{index}].name' must be a string")
        function: dict[str, Any] = {"name": tool["name"]}
        for name in ("description", "parameters"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        if tool.get("strict"):
            function["strict"] = True
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str) and choice in _TOOL_CHOICE_MODES:
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _unsupported("tool_choice", "this route takes 'auto', 'none', 'required' or a function by name")


def _text(text: Any, out: dict[str, Any]) -> None:
    if text is None:
        return
    if not isinstance(text, dict):
        raise _bad("text", "'text' must be an object")
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    fmt = text.get("format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("name"), str) \
            and isinstance(fmt.get("schema"), dict):
        schema = {name: fmt[name] for name in ("name", "schema", "description", "strict") if name in fmt}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    else:
        raise _bad("text.format", "'text.format' must be {type: text}, {type: json_object} or {type: json_schema, "
                                  "name, schema}")


def output_budget(body: Mapping[str, Any]) -> int | None:
    """The caller's `max_output_tokens`, when it set one."""
    value = body.get("max_output_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ------------------------------------------------------------------------------------------------ reply


def echo(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request's settings a `response` object repeats back (OpenAI's defaults where the caller set none)."""
    out = dict(_DEFAULT_ECHO)
    for name in _DEFAULT_ECHO:
        if body.get(name) is not None:
            out[name] = body[name]
    if isinstance(body.get("user"), str):
        out["user"] = body["user"]
    reasoning = body.get("reasoning") or {}
    out["reasoning"] = {"effort": reasoning.get("effort"), "summary": None}
    text = dict(body.get("text") or {})
    text.setdefault("format", {"type": "text"})
    out["text"] = text
    out["tools"] = [{"type": "function", "name": t["name"], "description": t.get("description"),
                     "parameters": t.get("parameters"), "strict": bool(t.get("strict", True))}
                    for t in body.get("tools") or []]
    return out


def usage(chat_usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A chat `usage` as a Responses `usage` (cached and reasoning tokens carried over)."""
    if not chat_usage:
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    details = chat_usage.get("prompt_tokens_details") or {}
    cached, written = details.get("cached_tokens") or 0, details.get("cache_write_tokens") or 0
    reasoning = ((chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens")) or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": int(chat_usage.get("total_tokens") or prompt + completion)}


def _status(finish_reason: Any) -> tuple[str, dict[str, Any] | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _message_item(item_id: str, text: str | None, refusal: str | None, status: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _call_item(call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def response_object(response_id: str, model: str, created: int, settings: Mapping[str, Any], *,
                    status: str, output: list[dict[str, Any]], usage_: dict[str, Any] | None = None,
                    incomplete: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `response` object: id, status, output items and usage, with the request's settings echoed."""
    reply = {"id": response_id, "object": "response", "created_at": created, "status": status,
             "completed_at": int(time.time()) if status == "completed" else None, "error": error,
             "incomplete_details": incomplete, "model": model, "output": output, **settings}
    if usage_ is not None:
        reply["usage"] = usage_
    return reply


def from_completion(completion: Mapping[str, Any], *, response_id: str, model: str,
                    settings: Mapping[str, Any]) -> dict[str, Any]:
    """A `chat.completion` as the `response` object the caller asked for."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    status, incomplete = _status(choice.get("finish_reason"))
    output: list[dict[str, Any]] = []
    text, refusal = message.get("content"), message.get("refusal")
    if text or refusal:
        output.append(_message_item(f"msg_{response_id[5:]}", text, refusal, "completed"))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(_call_item(call.get("id", ""), function.get("name", ""), function.get("arguments") or "",
                                 "completed"))
    created = int(completion.get("created") or time.time())
    return response_object(response_id, model, created, settings, status=status, output=output,
                           usage_=usage(completion.get("usage")), incomplete=incomplete)


# ------------------------------------------------------------------------------------------------ stream


class _InputDetails(msgspec.Struct):
    cached_tokens: int | None = 0


class _OutputDetails(msgspec.Struct):
    reasoning_tokens: int | None = 0


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: _InputDetails | None = None
    output_tokens_details: _OutputDetails | None = None


class _Reply(msgspec.Struct):
    usage: _Usage | None = None


class EventInfo(msgspec.Struct):
    """What the proxy reads of a passed-through Responses stream event."""

    type: str = ""
    sequence_number: int | None = None
    response: _Reply | None = None


_reply_decoder = msgspec.json.Decoder(_Reply)
_event_decoder = msgspec.json.Decoder(EventInfo)
TERMINAL = frozenset({"response.completed", "response.incomplete"})
FAILED = frozenset({"response.failed", "error"})


def chat_usage(usage_: _Usage | None) -> wire.Usage | None:
    """A Responses `usage` as the trace's usage (input → prompt, output → completion, cached, reasoning)."""
    if usage_ is None:
        return None
    cached = (usage_.input_tokens_details.cached_tokens or 0) if usage_.input_tokens_details else 0
    reasoning = (usage_.output_tokens_details.reasoning_tokens or 0) if usage_.output_tokens_details else 0
    return wire.Usage(prompt_tokens=usage_.input_tokens, completion_tokens=usage_.output_tokens,
                      total_tokens=usage_.total_tokens or usage_.input_tokens + usage_.output_tokens,
                      prompt_tokens_details=wire.PromptDetails(cached_tokens=cached),
                      completion_tokens_details=wire.CompletionDetails(reasoning_tokens=reasoning))


def reply_usage(raw: bytes) -> wire.Usage | None:
    """The usage of a non-streamed `response` body, if it has one."""
    try:
        return chat_usage(_reply_decoder.decode(raw).usage)
    except msgspec.DecodeError:
        return None


class _Delta(msgspec.Struct):
    type: str = ""
    delta: str | None = None


_delta_decoder = msgspec.json.Decoder(_Delta)


def estimate_usage(events: list[bytes], *, prompt_bytes: int) -> wire.Usage:
    """Tokenizer-free usage (≈ 4 characters a token) of a Responses stream that ended without its usage: the
    prompt from the request's size, the output from the text and argument deltas sent."""
    characters = 0
    for event in events:
        for line in event.split(b"\n"):
            if line.startswith(b"data:") and b"delta" in line:
                try:
                    characters += len(_delta_decoder.decode(line[5:].strip()).delta or "")
                except msgspec.DecodeError:
                    pass
    prompt, completion = -(-prompt_bytes // 4), -(-characters // 4)
    return wire.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def event_info(event: bytes) -> EventInfo | None:
    """The type, sequence number and usage of one Responses SSE event (its `data:` line), or None."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                return _event_decoder.decode(line[5:].strip())
            except msgspec.DecodeError:
                return None
    return None


def encode_event(event: Mapping[str, Any]) -> bytes:
    """One Responses SSE event (`event:` line named for its type)."""
    return b"event: " + event["type"].encode() + b"\ndata: " + codec.encode(event) + b"\n\n"


class StreamToResponses:
    """Chat chunks in, the Responses stream's typed events out, each with its `sequence_number`.

    `feed` takes one decoded chat chunk, `finish` closes open items and ends with `response.completed` (or
    `response.incomplete`), `fail` ends with an `error` event and `response.failed`."""

    def __init__(self, *, response_id: str, model: str, settings: Mapping[str, Any], created: int) -> None:
        self.response_id, self.model, self.settings, self.created = response_id, model, settings, created
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []
        self.text: dict[str, Any] | None = None  # the open message item: {index, id, text}
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool-call index → the open call item
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(self.response_id, self.model, self.created, self.settings, status=status,
                               output=[item for item in self.output if item is not None], **extra)

    def start(self) -> list[dict[str, Any]]:
        if self.started:
            return []
        self.started = True
        return [self._event("response.created", response=self._response("in_progress")),
                self._event("response.in_progress", response=self._response("in_progress"))]

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        events = self.start()
        if chunk.get("usage"):
            self.usage = usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text_delta(delta["content"])
            for call in delta.get("tool_calls") or []:
                events += self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _text_delta(self, delta: str) -> list[dict[str, Any]]:
        events = []
        if self.text is None:
            index = len(self.output)
            item_id = f"msg_{self.response_id[5:]}_{index}" if index else f"msg_{self.response_id[5:]}"
            self.text = {"index": index, "id": item_id, "text": ""}
            self.output.append(None)  # type: ignore[arg-type]  # filled when the item is done
            events.append(self._event("response.output_item.added", output_index=index,
                                      item=_message_item(item_id, None, None, "in_progress")))
            events.append(self._event("response.content_part.added", item_id=item_id, output_index=index,
                                      content_index=0, part=_text_part("")))
        self.text["text"] += delta
        events.append(self._event("response.output_text.delta", item_id=self.text["id"],
                                  output_index=self.text["index"], content_index=0, delta=delta, logprobs=[]))
        return events

    def _close_text(self) -> list[dict[str, Any]]:
        if self.text is None:
            return []
        index, item_id, text = self.text["index"], self.text["id"], self.text["text"]
        self.text = None
        item = _message_item(item_id, text, None, "completed")
        self.output[index] = item
        return [self._event("response.output_text.done", item_id=item_id, output_index=index, content_index=0,
                            text=text, logprobs=[]),
                self._event("response.content_part.done", item_id=item_id, output_index=index, content_index=0,
                            part=_text_part(text)),
                self._event("response.output_item.done", output_index=index, item=item)]

    def _call_delta(self, call: Mapping[str, Any]) -> list[dict[str, Any]]:
        events = self._close_text()
        position = int(call.get("index") or 0)
        function = call.get("function") or {}
        item = self.calls.get(position)
        if item is None:
            index = len(self.output)
            item = {"index": index, "call_id": call.get("id") or f"call_{self.response_id[5:]}_{position}",
                    "name": function.get("name") or "", "arguments": ""}
            self.calls[position] = item
            self.output.append(None)  # type: ignore[arg-type]
            events.append(self._event("response.output_item.added", output_index=index,
                                      item=_call_item(item["call_id"], item["name"], "", "in_progress")))
        if function.get("arguments"):
            item["arguments"] += function["arguments"]
            events.append(self._event("response.function_call_arguments.delta", item_id=f"fc_{item['call_id']}",
                                      output_index=item["index"], delta=function["arguments"]))
        return events

    def _close_calls(self) -> list[dict[str, Any]]:
        events = []
        for item in self.calls.values():
            done = _call_item(item["call_id"], item["name"], item["arguments"], "completed")
            self.output[item["index"]] = done
            events.append(self._event("response.function_call_arguments.done", item_id=done["id"],
                                      name=item["name"], output_index=item["index"], arguments=item["arguments"]))
            events.append(self._event("response.output_item.done", output_index=item["index"], item=done))
        self.calls = {}
        return events

    def finish(self) -> list[dict[str, Any]]:
        """The upstream stream completed: close what is open, then the final response with its usage."""
        events = self.start() + self._close_text() + self._close_calls()
        status, incomplete = _status(self.finish_reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self._event(kind, response=self._response(status, usage_=self.usage, incomplete=incomplete)))
        return events

    def fail(self, error: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The upstream stream broke (or failed before its first event): `error`, then `response.failed`."""
        message = str(error.get("message") or "stream error")
        code = error.get("code")
        events = self.start()
        events.append(self._event("error", code=code if isinstance(code, str) else None, message=message,
                                  param=error.get("param") if isinstance(error.get("param"), str) else None))
        events.append(self._event("response.failed", response=self._response(
            "failed", usage_=self.usage, error={"code": "server_error", "message": message})))
        return events

    def own_event(self, kind: str, **fields: Any) -> dict[str, Any]:
        """An event of Routeur's own (`routeur_trace`), numbered in the same sequence."""
        return self._event(kind, **fields)


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def parse(raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the checked CreateResponse body, the chat-completions translation of its translatable part)."""
    body = check_request(wire.decode_json(raw))
    return body, wire.check_chat(to_chat(translatable(body)[0]))
