"""The emulator's OpenAI Responses API (pure): a CreateResponse body read as the conversation it carries (plus a
stored response's, for `previous_response_id`), the deterministic answer (openai_format.plan_reply), and the
`response` object and typed stream events OpenAI sends for it."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

from services.emulator import openai_format as oa

STORED_RESPONSES = 1024
"""How many stored responses the emulator remembers for `previous_response_id` (oldest forgotten first)."""


class ResponseStore:
    """Stored responses (OpenAI stores unless `store` is false): id → the conversation up to and with its output."""

    def __init__(self, size: int = STORED_RESPONSES) -> None:
        self._items: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._size = size

    def get(self, response_id: str) -> list[dict[str, Any]] | None:
        return self._items.get(response_id)

    def put(self, response_id: str, messages: list[dict[str, Any]]) -> None:
        self._items[response_id] = messages
        while len(self._items) > self._size:
            self._items.popitem(last=False)


def previous_not_found(response_id: str) -> dict[str, Any]:
    """OpenAI's 400 for a `previous_response_id` it does not hold."""
    return oa.error_body(f"Previous response with id '{response_id}' not found.", param="previous_response_id",
                         code="previous_response_not_found")


def _text(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        if isinstance(part, dict) and part.get("type") in ("input_text", "output_text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif isinstance(part, dict) and part.get("type") == "input_image":
            parts.append({"type": "image_url", "image_url": {"url": part.get("image_url") or ""}})
    return parts


def conversation(body: Mapping[str, Any], history: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The chat-shaped messages a (spec-valid) CreateResponse body carries, after a stored response's `history`."""
    messages = list(history or [])
    if isinstance(body.get("instructions"), str):
        messages.insert(0, {"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    for item in items or []:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role", "user"), "content": _text(item.get("content"))})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")}}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else "".join(
                p.get("text", "") for p in output or [] if isinstance(p, dict))
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
    return messages


def chat_view(body: Mapping[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat-completions request plan_reply answers (function tools only; the others are never called)."""
    view: dict[str, Any] = {"model": body["model"], "messages": messages or [{"role": "user", "content": ""}]}
    tools = [{"type": "function", "function": {"name": t["name"], "parameters": t.get("parameters")}}
             for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    if tools:
        view["tools"] = tools
    choice = body.get("tool_choice")
    if choice in ("none", "auto", "required"):
        view["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        view["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    if isinstance(body.get("max_output_tokens"), int):
        view["max_completion_tokens"] = body["max_output_tokens"]
    return view


def _ids(response_id: str) -> tuple[str, str, str]:
    digest = hashlib.blake2b(response_id.encode(), digest_size=16).hexdigest()
    return f"msg_{digest}", f"fc_{digest}", f"rs_{digest}"


def usage(reply: oa.Reply) -> dict[str, Any]:
    return {"input_tokens": reply.prompt_tokens,
            "input_tokens_details": {"cached_tokens": reply.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": reply.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


def output_items(reply: oa.Reply, response_id: str) -> list[dict[str, Any]]:
    """The finished output: a reasoning item for a reasoning model, then the message or the function call."""
    message_id, call_id, reasoning_id = _ids(response_id)
    items: list[dict[str, Any]] = []
    if reply.reasoning_tokens:
        items.append({"type": "reasoning", "id": reasoning_id, "summary": []})
    if reply.tool_call is not None:
        call = reply.tool_call
        items.append({"type": "function_call", "id": call_id, "call_id": call.id, "name": call.name,
                      "arguments": call.arguments, "status": "completed"})
    else:
        items.append({"type": "message", "id": message_id, "status": "completed", "role": "assistant",
                      "content": [_text_part(reply.content or "")]})
    return items


def _pieces(text: str, words: int) -> list[str]:
    """`text` in pieces of `words` words whose concatenation is exactly `text`."""
    parts = text.split(" ")
    pieces = [" ".join(parts[start:start + words]) for start in range(0, len(parts), words)]
    return [piece if index == 0 else " " + piece for index, piece in enumerate(pieces)] if text else []


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def response_body(reply: oa.Reply, body: Mapping[str, Any], *, response_id: str, created: int,
                  status: str | None = None, output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The `response` object (its request settings echoed as OpenAI does)."""
    final = status is None
    status = status or ("incomplete" if reply.finish_reason == "length" else "completed")
    tools = [{"type": "function", "name": t["name"], "description": t.get("description"),
              "parameters": t.get("parameters"), "strict": t.get("strict", True)}
             for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    out: dict[str, Any] = {
        "id": response_id, "object": "response", "created_at": created, "status": status,
        "completed_at": created if status == "completed" else None, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": reply.model, "output": output_items(reply, response_id) if output is None else output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}}, "tool_choice": body.get("tool_choice", "auto"),
        "tools": tools, "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation", "disabled"),
        "metadata": body.get("metadata") or {},
    }
    if final:
        out["usage"] = usage(reply)
    return out


def stream_events(reply: oa.Reply, body: Mapping[str, Any], *, response_id: str, created: int,
                  chunk_words: int = 3) -> Iterator[dict[str, Any]]:
    """The typed events OpenAI streams for `reply`, numbered by `sequence_number` (no `[DONE]` follows)."""
    sequence = 0

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        nonlocal sequence
        sequence += 1
        return {"type": kind, "sequence_number": sequence - 1, **fields}

    pending = response_body(reply, body, response_id=response_id, created=created, status="in_progress", output=[])
    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    for index, item in enumerate(output_items(reply, response_id)):
        if item["type"] == "reasoning":
            yield event("response.output_item.added", output_index=index, item=item)
        elif item["type"] == "function_call":
            yield event("response.output_item.added", output_index=index,
                        item={**item, "arguments": "", "status": "in_progress"})
            size = max(1, chunk_words) * 4
            for start in range(0, len(item["arguments"]), size):
                yield event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                            delta=item["arguments"][start:start + size])
            yield event("response.function_call_arguments.done", item_id=item["id"], name=item["name"],
                        output_index=index, arguments=item["arguments"])
        else:
            text = item["content"][0]["text"]
            yield event("response.output_item.added", output_index=index,
                        item={**item, "status": "in_progress", "content": []})
            yield event("response.content_part.added", item_id=item["id"], output_index=index, content_index=0,
                        part=_text_part(""))
            for piece in _pieces(text, max(1, chunk_words)):
                yield event("response.output_text.delta", item_id=item["id"], output_index=index, content_index=0,
                            delta=piece, logprobs=[])
            yield event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                        text=text, logprobs=[])
            yield event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                        part=_text_part(text))
        yield event("response.output_item.done", output_index=index, item=item)
    final = response_body(reply, body, response_id=response_id, created=created)
    kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
    yield event(kind, response=final)


def stored_messages(messages: list[dict[str, Any]], reply: oa.Reply) -> list[dict[str, Any]]:
    """The conversation a stored response hands to its successor: its messages plus its answer."""
    if reply.tool_call is not None:
        call = reply.tool_call
        answer = {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]}
    else:
        answer = {"role": "assistant", "content": reply.content or ""}
    return [*(m for m in messages if m.get("role") != "system"), answer]
