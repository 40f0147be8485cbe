"""Dashboard sessions ended by sign-out, shared by every proxy: a JetStream KV bucket (key: the session id,
value: when the session would have expired) that each proxy watches into a local set, so checking a cookie
costs a dict lookup and no bus round trip. Entries expire with the bucket's max age (the session lifetime
and a margin), by which time the cookies they name have expired anyway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from proto import subjects
from services.common.logs import get_logger

log = get_logger()
MARGIN_S = 300  # the bucket keeps an entry this long after the longest session would have expired
RETRY_S = 1.0


class RevokedSessions:
    """The session ids signed out, each until its session would have expired (pure; an injectable clock)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._until: dict[str, int] = {}
        self._clock = clock

    def add(self, session_id: str, expires_s: int) -> None:
        if expires_s > self._clock():
            self._until[session_id] = max(expires_s, self._until.get(session_id, 0))
        if len(self._until) % 1024 == 0:
            self.prune()

    def __contains__(self, session_id: object) -> bool:
        return isinstance(session_id, str) and session_id in self._until

    def prune(self) -> None:
        now = self._clock()
        self._until = {sid: until for sid, until in self._until.items() if until > now}

    def __len__(self) -> int:
        return len(self._until)


class LocalRevocations:
    """Sign-outs kept by this process alone: for a proxy app built without NATS (in-process tests)."""

    def __init__(self) -> None:
        self.revoked = RevokedSessions()

    async def revoke(self, session_id: str, expires_s: int) -> None:
        self.revoked.add(session_id, expires_s)


class SessionRevocations:
    """The bucket's I/O: `revoke` writes an entry (and applies it here at once); a watcher applies every
    proxy's entries, restarting (and replaying the whole bucket) if it stops."""

    def __init__(self, js: JetStreamContext, *, ttl_s: int, replicas: int = 1,
                 revoked: RevokedSessions | None = None, timeout_s: float = 2.0) -> None:
        self._js = js
        self._ttl_s = ttl_s
        self._replicas = replicas
        self._timeout_s = timeout_s
        self.revoked = revoked or RevokedSessions()
        self._kv: KeyValue | None = None
        self._watching: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()  # the bucket's entries at start have been applied

    async def start(self) -> None:
        """Create the bucket when missing and start watching it."""
        try:
            self._kv = await self._js.key_value(subjects.SESSION_REVOCATIONS_BUCKET)
        except BucketNotFoundError:
            self._kv = await self._js.create_key_value(KeyValueConfig(
                bucket=subjects.SESSION_REVOCATIONS_BUCKET, history=1, ttl=float(self._ttl_s + MARGIN_S),
                storage=StorageType.FILE, replicas=self._replicas,
                description="Routeur dashboard: sessions ended by sign-out"))
        self._watching = asyncio.create_task(self._watch(self._kv), name="session-revocations")

    async def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)

    async def revoke(self, session_id: str, expires_s: int) -> None:
        """End a session on every proxy; raises when the bucket did not acknowledge (the caller says so)."""
        self.revoked.add(session_id, expires_s)
        if self._kv is None:
            raise RuntimeError("call SessionRevocations.start() before revoke()")
        await asyncio.wait_for(self._kv.put(session_id, str(expires_s).encode()), self._timeout_s)

    async def _watch(self, kv: KeyValue) -> None:
        while True:
            try:
                watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is None:  # the bucket's current entries have all been delivered
                        self.synced.set()
                        continue
                    if entry.operation is None and entry.value:
                        try:
                            self.revoked.add(entry.key, int(entry.value))
                        except ValueError:
                            log.warning("session_revocation_unreadable")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # disconnected: watch again (the replay restores every entry)
                log.warning("session_revocations_watch_failed", error=type(exc).__name__)
            await asyncio.sleep(RETRY_S)
