"""Restore placeholders in the model's answer (pure): a whole chat.completion, or an SSE stream event by event."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from services.proxy.dlp.errors import DlpError, failure_site
from services.proxy.dlp.walk import each, walk_message

PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9_]*_[1-9][0-9]*\]")

# A chunk can only hold a placeholder, or the start of one, where a '[' is followed by a capital letter
# or ends a string ('["'). Every chunk has a '[' (`"choices":[{`), so this, not a bare '[', is the fast test.
_MAYBE_PLACEHOLDER = re.compile(rb'\[[A-Z"]')

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

_Key = tuple[int, str, int]  # (choice index, field, tool-call index or -1)


def _json_escaped(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


def restore_text(text: str, mapping: Mapping[str, str], is_json: bool = False) -> str:
    """`text` with each known placeholder replaced by its original (JSON-escaped inside a JSON document);
    unknown bracketed text is left as it is. Returns `text` itself when nothing was replaced."""
    if "[" not in text:
        return text
    replaced = False

    def original(match: re.Match[str]) -> str:
        nonlocal replaced
        value = mapping.get(match.group())
        if value is None:
            return match.group()
        replaced = True
        return _json_escaped(value) if is_json else value

    restored = PLACEHOLDER.sub(original, text)
    return restored if replaced else text


def restore_completion(body: dict[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """A non-streaming `chat.completion` with placeholders restored in every choice's message content, refusal
    and tool-call arguments (kept valid JSON). The caller's dict is not mutated; raises DlpError on failure."""
    if not mapping:
        return body
    try:
        choices = body.get("choices")
        if not isinstance(choices, list):
            return body

        def visit(text: str, is_json: bool) -> str:
            return restore_text(text, mapping, is_json)

        def choice(item: Any) -> Any:
            if not isinstance(item, dict) or not isinstance(item.get("message"), dict):
                return item
            message = walk_message(item["message"], visit)
            return item if message is item["message"] else {**item, "message": message}

        restored = each(choices, choice)
        return body if restored is choices else {**body, "choices": restored}
    except Exception as exc:
        raise DlpError(failure_site(exc)) from None


class StreamRestorer:
    """Restores placeholders in a chat-completions SSE stream, one complete raw event at a time.

    A delta text ending in what could still become one of the mapping's placeholders (`[EMA`) is held back
    per (choice, field, tool call) and put in front of the next delta of that position; a choice's
    `finish_reason` flushes what it holds into that event, and `finish()` (called before `[DONE]`) returns
    a chunk carrying anything still held. Events that are not JSON chunks with choices pass through."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._mapping = dict(mapping)
        self._prefixes = frozenset(p[:i] for p in self._mapping for i in range(1, len(p)))
        self._held: dict[_Key, str] = {}
        self._head: dict[str, Any] = {}

    def event(self, raw: bytes) -> bytes:
        """The event with placeholders restored; `raw` itself when nothing changed. Raises DlpError on failure."""
        if not self._mapping or (not self._held and not _MAYBE_PLACEHOLDER.search(raw)):
            return raw
        try:
            return self._event(raw)
        except Exception as exc:
            raise DlpError(failure_site(exc)) from None

    def finish(self) -> bytes:
        """A chunk carrying the text still held back (empty bytes when none); send it before `data: [DONE]`."""
        if not self._held:
            return b""
        try:
            choices: dict[int, dict[str, Any]] = {}
            for key, text in self._held.items():
                delta = choices.setdefault(key[0], {})
                _put(delta, key, text)
            self._held.clear()
            chunk = {"id": self._head.get("id", ""), "object": "chat.completion.chunk",
                     "created": self._head.get("created", 0), "model": self._head.get("model", ""),
                     "choices": [{"index": index, "delta": delta, "finish_reason": None}
                                 for index, delta in sorted(choices.items())]}
            return b"data: " + _encoder.encode(chunk) + b"\n\n"
        except Exception as exc:
            raise DlpError(failure_site(exc)) from None

    def _event(self, raw: bytes) -> bytes:
        payload = raw.strip()
        if not payload.startswith(b"data:") or b"\n" in payload:
            return raw
        try:
            chunk = _decoder.decode(payload[5:])
        except msgspec.DecodeError:
            return raw
        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
            return raw
        self._head = {k: chunk[k] for k in ("id", "created", "model") if k in chunk}
        changed = False
        for position, choice in enumerate(chunk["choices"]):
            if isinstance(choice, dict):
                changed = self._choice(choice, position) or changed
        return b"data: " + _encoder.encode(chunk) + b"\n\n" if changed else raw

    def _choice(self, choice: dict[str, Any], position: int) -> bool:
        index = choice.get("index", position)
        if not isinstance(index, int):
            index = position
        finishing = choice.get("finish_reason") is not None
        delta = choice.get("delta")
        changed = False
        if isinstance(delta, dict):
            for field in ("content", "refusal"):
                if isinstance(delta.get(field), str):
                    changed = self._field(delta, field, (index, field, -1), False, finishing) or changed
            tool_calls = delta.get("tool_calls")
            for number, call in enumerate(tool_calls if isinstance(tool_calls, list) else ()):
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    call_index = call.get("index", number)
                    key = (index, "tool_calls", call_index if isinstance(call_index, int) else number)
                    changed = self._field(function, "arguments", key, True, finishing) or changed
            function_call = delta.get("function_call")
            if isinstance(function_call, dict) and isinstance(function_call.get("arguments"), str):
                key = (index, "function_call", -1)
                changed = self._field(function_call, "arguments", key, True, finishing) or changed
        if finishing:
            for key in [k for k in self._held if k[0] == index]:
                if not isinstance(delta, dict):
                    delta = choice["delta"] = {}
                _put(delta, key, self._held.pop(key))
                changed = True
        return changed

    def _field(self, holder: dict[str, Any], name: str, key: _Key, is_json: bool, finishing: bool) -> bool:
        """Restore `holder[name]`, first prepending what `key` held and then holding back a trailing partial
        placeholder (unless the choice is finishing). Whether `holder[name]` changed."""
        held = self._held.pop(key, "")
        original: str = holder[name]
        text = held + original if held else original
        cut = text.rfind("[")
        if not finishing and cut >= 0 and text[cut:] in self._prefixes:
            self._held[key] = text[cut:]
            text = text[:cut]
        restored = restore_text(text, self._mapping, is_json)
        if restored is original:
            return False
        holder[name] = restored
        return True


def _put(delta: dict[str, Any], key: _Key, text: str) -> None:
    """Add held `text` to `delta` at the stream position `key`, creating the tool call or field if needed."""
    _, field, tool_index = key
    if field in ("content", "refusal"):
        delta[field] = text + (delta.get(field) or "")
        return
    if field == "function_call":
        function = delta.setdefault("function_call", {})
    else:
        calls = delta.setdefault("tool_calls", [])
        call = next((c for c in calls if isinstance(c, dict) and c.get("index") == tool_index), None)
        if call is None:
            call = {"index": tool_index, "function": {}}
            calls.append(call)
        function = call.setdefault("function", {})
    function["arguments"] = text + (function.get("arguments") or "")
