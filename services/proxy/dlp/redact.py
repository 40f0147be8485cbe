"""Apply a policy to a request body (pure): redact sensitive values into placeholders, or block the request."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.proxy.dlp.detectors import detection_view
from services.proxy.dlp.errors import DlpBlocked, DlpError, failure_site
from services.proxy.dlp.policy import Policy
from services.proxy.dlp.walk import walk_request

# Tool-call arguments are JSON documents held in a string: they are scanned as they are and each value is
# replaced in place; a placeholder has no quote or backslash, so the JSON stays valid. The mapping holds the
# value a span stands for (JSON escapes decoded), so it restores into plain text and into JSON alike. Only a
# custom rule can match across a quote; then the document's strings are redacted one by one instead.


@dataclass(frozen=True, slots=True)
class Redaction:
    """The body to send upstream and what it takes to restore the answer."""

    body: dict[str, Any]  # a new dict (the caller's is never mutated); for `off`, the caller's own
    count: int  # substitutions made, each occurrence counted: the trace's `redactions`
    mapping: dict[str, str]  # placeholder -> original value
    restore: bool  # restore placeholders in the answer (restore_completion / StreamRestorer)


def apply(body: dict[str, Any], policy: Policy) -> Redaction:
    """Apply `policy` to a chat-completions or embeddings body.

    Raises DlpBlocked for a `block` policy that finds something, DlpError if the engine itself fails."""
    if policy.mode == "off":
        return Redaction(body=body, count=0, mapping={}, restore=False)
    try:
        if policy.mode == "block":
            return Redaction(body=walk_request(body, _Blocker(policy).visit), count=0, mapping={}, restore=False)
        redactor = _Redactor(policy)
        new_body = walk_request(body, redactor.visit)
        return Redaction(body=new_body, count=redactor.count, mapping=redactor.mapping, restore=policy.restore)
    except DlpBlocked:
        raise
    except Exception as exc:
        raise DlpError(failure_site(exc)) from None


def _json_value(raw: str) -> str:
    """The value a JSON-document span stands for (`a\\nb` -> a, newline, b), so it restores into either kind."""
    if "\\" not in raw:
        return raw
    try:
        value = json.loads(f'"{raw}"', strict=False)
    except ValueError:
        return raw
    return value if isinstance(value, str) else raw


class _Redactor:
    def __init__(self, policy: Policy) -> None:
        self.scanner = policy.scanner
        self.mapping: dict[str, str] = {}
        self.placeholders: dict[str, str] = {}  # original value -> placeholder
        self.numbers: dict[str, int] = {}  # label -> last number used
        self.count = 0

    def visit(self, text: str, is_json: bool) -> str:
        spans = self.scanner.find(text)
        if not spans:
            return text
        if is_json and any('"' in detection_view(text[start:end]) for start, end, _ in spans):
            redacted = self._leaves(text)  # a custom rule matched across a quote: in place, the JSON would break
            if redacted is not None:
                return redacted
        pieces: list[str] = []
        last = 0
        for start, end, name in spans:
            raw = text[start:end]
            value = _json_value(raw) if is_json else raw
            placeholder = self.placeholders.get(value)
            if placeholder is None:
                label = name.upper()
                number = self.numbers.get(label, 0) + 1
                self.numbers[label] = number
                placeholder = f"[{label}_{number}]"
                self.placeholders[value] = placeholder
                self.mapping[placeholder] = value
            pieces.append(text[last:start])
            pieces.append(placeholder)
            last = end
        pieces.append(text[last:])
        self.count += len(spans)
        return "".join(pieces)

    def _leaves(self, document: str) -> str | None:
        """The JSON document with each string (keys too) redacted on its own; None when it is not JSON."""
        try:
            parsed = json.loads(document)
        except ValueError:
            return None

        def redact(node: Any) -> Any:
            if isinstance(node, str):
                return self.visit(node, False)
            if isinstance(node, list):
                return [redact(item) for item in node]
            if isinstance(node, dict):
                return {self.visit(key, False): redact(value) for key, value in node.items()}
            return node

        return json.dumps(redact(parsed), ensure_ascii=False)


class _Blocker:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def visit(self, text: str, is_json: bool) -> str:
        spans = self.policy.scanner.find(text)
        if spans:
            names = tuple(dict.fromkeys(name for _, _, name in spans))
            raise DlpBlocked(detector=spans[0][2], detectors=names, policy=self.policy.name)
        return text
