"""What the emulator's route modules share: its state (fault plans, request log), the caller's key, body
decoding and the timing helpers behind latency, hang and drop faults."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from typing import Any

import msgspec
from aiohttp import web

from services.emulator.faults import FaultPlan, FaultRegistry
from services.emulator.settings import Settings

RECORDED_REQUESTS = 1000
HANG_POLL_S = 0.05

_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key"})
INVALID = object()
"""The body of a request whose bytes are not JSON."""


class RequestLog:
    """The last requests received on /v1, newest last, with credential headers removed.

    A streamed answer also records its progress on its entry while it runs: `chunks_sent`, `bytes_sent` and,
    once it ends, `outcome` — `completed`, `client_closed` (the client went away mid-stream), `dropped`
    (a drop fault) or `stalled` (a stall fault, until the client gave up).
    """

    def __init__(self, maxlen: int = RECORDED_REQUESTS) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._seq = 0

    def add(self, request: web.Request, raw: bytes, body: object) -> dict[str, Any]:
        """Record a request; the entry is returned so a stream can note its progress on it."""
        self._seq += 1
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
        entry = {
            "seq": self._seq,
            "received_at": time.time(),
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": headers,
            "key_sha256": _key_fingerprint(request),
            "body": None if body is INVALID else body,
            "raw_body": raw.decode("utf-8", "replace") if body is INVALID and raw else None,
        }
        self._entries.append(entry)
        request[ENTRY] = entry
        return entry

    def last(self, limit: int | None = None) -> list[dict[str, Any]]:
        entries = list(self._entries)
        return entries if limit is None else entries[len(entries) - limit :] if limit else []

    def clear(self) -> None:
        self._entries.clear()


class EmulatorState:
    """Everything the handlers share, owned by one app (no module-level mutable state)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.faults = FaultRegistry(fallback=FaultPlan(latency_ms=settings.latency_ms), plans=settings.faults)
        self.requests = RequestLog()
        self.stopping = asyncio.Event()


STATE = web.AppKey("emulator_state", EmulatorState)
ENTRY = web.RequestKey("emulator_request_log_entry", dict)  # the request's RequestLog entry


def _key_fingerprint(request: web.Request) -> str | None:
    """First 16 hex of sha256(bearer token), so tests can tell which upstream key was used."""
    token = bearer(request)
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else None


def bearer(request: web.Request) -> str:
    """The caller's key: `Authorization: Bearer …`, or Azure OpenAI's `api-key` header."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else request.headers.get("api-key", "").strip()


def decode(raw: bytes) -> object:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return INVALID


def drop_connection(request: web.Request) -> web.Response:
    """Close the socket without a (complete) response; aiohttp then skips the reply quietly."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response()


async def sleep_ms(ms: int) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


async def hang(request: web.Request, stopping: asyncio.Event) -> None:
    """Never answer: wait until the client gives up or the emulator shuts down."""
    while not stopping.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(HANG_POLL_S)
