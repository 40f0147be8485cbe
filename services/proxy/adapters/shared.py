"""Pieces of OpenAI → provider translation that the block-based formats (Anthropic, Bedrock) share."""

from __future__ import annotations

import json
from typing import Any

from services.proxy.adapters.errors import TranslationError

JSON_OBJECT_INSTRUCTION = "Respond with one valid JSON object and nothing else: no prose and no code fences."


def texts(content: object, where: str, *, drop_blank: bool = False) -> list[str]:
    """The non-empty texts of a string or a list of text/refusal parts; `drop_blank` also drops
    whitespace-only texts (Converse rejects blank text blocks)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if (content.strip() if drop_blank else content) else []
    if not isinstance(content, list):
        raise TranslationError(f"'{where}' must be a string or an array of content parts", param=where)
    out = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise TranslationError(f"'{where}[{j}]' must be a text part here", param=f"{where}[{j}]")
        text = part.get("text", part.get("refusal"))
        if isinstance(text, str) and (text.strip() if drop_blank else text):
            out.append(text)
    return out


def append_turn(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add blocks as a turn, merging consecutive turns of one role (several tool results; both APIs
    require roles to alternate)."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def tool_arguments(value: object) -> str:
    """A tool call's input as OpenAI's compact JSON `arguments` string."""
    return json.dumps(value if value is not None else {}, ensure_ascii=False, separators=(",", ":"))
