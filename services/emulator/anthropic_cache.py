"""Prompt caching for the emulator's Anthropic Messages (on /v1/messages and Bedrock InvokeModel), deterministic.

As the prompt-caching guide describes (https://docs.claude.com/en/docs/build-with-claude/prompt-caching): the prompt
is read in the order tools, system, messages; a block with `cache_control` ends a cacheable prefix; a request whose
prefix was written earlier (within its TTL: 5 minutes, or 1 hour with `"ttl": "1h"`) reads it from the cache, and
the prefixes after the longest one read are written. So the first request with a breakpoint reports
`cache_creation_input_tokens` for its prefix and an identical second one reports `cache_read_input_tokens`.
Simplifications: a prefix's tokens are its share of the request's input tokens by encoded size, and there is no
minimum cacheable length (the API caches nothing under 1024-4096 tokens, by model).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec

TTL_S = {"5m": 300.0, "1h": 3600.0}
_ENCODER = msgspec.json.Encoder(order="sorted")


class CacheUsage(msgspec.Struct, frozen=True):
    """The cache buckets of one request: input_tokens is what is left of the input once they are taken out."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0

    @property
    def write(self) -> int:
        return self.write_5m + self.write_1h


class Breakpoint(msgspec.Struct, frozen=True):
    key: bytes
    size: int  # encoded bytes of the prefix it ends
    ttl: str


def _pieces(body: Mapping[str, Any]) -> Iterator[dict[str, Any] | str]:
    """The prompt's blocks in cache order: tools, system blocks, then each message's blocks."""
    yield from body.get("tools") or []
    system = body.get("system")
    if isinstance(system, str):
        yield system
    elif isinstance(system, list):
        yield from system
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            yield from ({**block, "role": message.get("role")} if isinstance(block, dict) else block
                        for block in content)
        elif content is not None:
            yield {"role": message.get("role"), "content": content}


def breakpoints(body: Mapping[str, Any], *, model: str) -> tuple[list[Breakpoint], int]:
    """The request's cache breakpoints (prefix key, prefix size, TTL) and the prompt's whole encoded size."""
    digest = hashlib.blake2b(model.encode(), digest_size=16)
    size = 0
    points = []
    for piece in _pieces(body):
        marker = piece.get("cache_control") if isinstance(piece, dict) else None
        plain = {k: v for k, v in piece.items() if k != "cache_control"} if isinstance(piece, dict) else piece
        encoded = _ENCODER.encode(plain)
        digest.update(encoded)
        size += len(encoded)
        if isinstance(marker, dict):
            points.append(Breakpoint(digest.copy().digest(), size, "1h" if marker.get("ttl") == "1h" else "5m"))
    return points, size


class PromptCache:
    """Prefixes written, each until its expiry (a read refreshes it); `clock` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._expiry: dict[bytes, float] = {}

    def use(self, body: Mapping[str, Any], *, model: str, input_tokens: int) -> CacheUsage:
        """Read the longest cached prefix, write the longer ones, and say how many of `input_tokens` each took."""
        points, total = breakpoints(body, model=model)
        if not points or total == 0:
            return CacheUsage()
        now = self._clock()

        def tokens(size: int) -> int:
            return input_tokens * size // total

        read_size = 0
        for point in points:
            if self._expiry.get(point.key, 0.0) > now:
                read_size = max(read_size, point.size)
                self._expiry[point.key] = now + TTL_S[point.ttl]
        written = [p for p in points if p.size > read_size]
        for point in written:
            self._expiry[point.key] = now + TTL_S[point.ttl]
        read = tokens(read_size)
        end_1h = max((p.size for p in written if p.ttl == "1h"), default=read_size)
        end = max((p.size for p in written), default=read_size)
        write_1h = tokens(max(end_1h, read_size)) - read
        write_5m = tokens(max(end, end_1h, read_size)) - read - write_1h
        return CacheUsage(read=read, write_5m=write_5m, write_1h=write_1h)
