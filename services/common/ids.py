"""ULID request ids: 48-bit millisecond time + 80 random bits, Crockford base32, sortable by time."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid(now_ms: int | None = None) -> str:
    """A new 26-character ULID."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_ulid(text: str) -> bool:
    """True when `text` has the shape of a ULID (26 Crockford base32 characters, first ≤ '7')."""
    return len(text) == 26 and text[0] <= "7" and all(c in _ALPHABET for c in text)


def ulid_time_ms(text: str) -> int:
    """The millisecond timestamp inside a ULID (its first 10 characters); ValueError when `text` is not a ULID."""
    if not is_ulid(text):
        raise ValueError("not a ULID: expected 26 Crockford base32 characters")
    value = 0
    for char in text[:10]:
        value = value * 32 + _ALPHABET.index(char)
    return value
