"""Restore DLP placeholders in Anthropic Messages answers (pure): a whole `message`, or its stream event by event.

Text blocks and `tool_use` inputs are restored; thinking blocks never are (their signature covers their text, and a
caller that sends them back changed gets a 400). In a stream a placeholder may be split across deltas: the tail of
a block's text that could still become one is held back until the next delta, or sent before its
content_block_stop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from services.proxy.dlp.errors import DlpError, failure_site
from services.proxy.dlp.restore import restore_text
from services.proxy.dlp.walk import visit_strings

_LONGEST_HELD = 64
"""A held tail longer than this cannot be a placeholder (they are `[NAME_n]`, well under it)."""
_OPEN = re.compile(r"\[[A-Z0-9_]*\Z")


def restore_message(message: dict[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """A non-streamed `message` with placeholders restored in its text blocks and tool inputs (a new dict)."""
    if not mapping or not isinstance(message.get("content"), list):
        return message
    try:
        def visit(text: str, is_json: bool) -> str:
            return restore_text(text, mapping, is_json)

        content = []
        for block in message["content"]:
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                block = {**block, "text": visit(block["text"], False)}
            elif isinstance(block, dict) and block.get("type") == "tool_use":
                block = {**block, "input": visit_strings(block.get("input"), visit)}
            content.append(block)
        return {**message, "content": content}
    except Exception as exc:
        raise DlpError(failure_site(exc)) from None


def _split(text: str) -> tuple[str, str]:
    """(what can be sent now, the tail that may be the start of a placeholder)."""
    match = _OPEN.search(text[-_LONGEST_HELD:])
    if match is None:
        return text, ""
    cut = len(text) - (len(text[-_LONGEST_HELD:]) - match.start())
    return text[:cut], text[cut:]


_FIELDS = {"text_delta": ("text", False), "input_json_delta": ("partial_json", True)}


class EventRestorer:
    """Anthropic stream events in, the same events with placeholders restored out (pending tails held)."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._mapping = mapping
        self._held: dict[int, tuple[str, str]] = {}  # block index -> (delta type, held text)

    def event(self, kind: str, data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]] | None:
        """The events to send for one event, or None to send the event's bytes unchanged."""
        try:
            if kind == "content_block_delta":
                return self._delta(data)
            if kind == "content_block_stop":
                flushed = self._flush(data.get("index", 0))
                return None if flushed is None else [flushed, (kind, data)]
            return None
        except Exception as exc:
            raise DlpError(failure_site(exc)) from None

    def _delta(self, data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]] | None:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind not in _FIELDS:
            return None
        field, is_json = _FIELDS[kind]
        index = data.get("index", 0)
        text = self._held.pop(index, (kind, ""))[1] + str(delta.get(field) or "")
        ready, held = _split(text)
        if held:
            self._held[index] = (kind, held)
        restored = restore_text(ready, self._mapping, is_json)
        if restored == delta.get(field):
            return None
        if not restored:
            return []
        return [("content_block_delta", {**data, "delta": {**delta, field: restored}})]

    def _flush(self, index: int) -> tuple[str, dict[str, Any]] | None:
        held = self._held.pop(index, None)
        if held is None:
            return None
        kind, text = held
        field, is_json = _FIELDS[kind]
        return "content_block_delta", {"type": "content_block_delta", "index": index,
                                       "delta": {"type": kind, field: restore_text(text, self._mapping, is_json)}}
