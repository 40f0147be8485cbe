"""The router's only JetStream use: the KV bucket holding the last published snapshot."""

from __future__ import annotations

import asyncio

import msgspec
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from proto import subjects
from proto.routing import HealthSnapshot
from services.common.logs import get_logger

log = get_logger()
_SNAPSHOT = msgspec.json.Decoder(HealthSnapshot)


class SnapshotStore:
    """`ROUTEUR_ROUTING` / `snapshot`: one value, latest only; proxies read it at start, a restarted router
    takes its version, breaker states and last good rules from it."""

    def __init__(self, js: JetStreamContext, *, replicas: int = 1, timeout_s: float = 2.0) -> None:
        self._js = js
        self._replicas = replicas
        self._timeout_s = timeout_s
        self._kv: KeyValue | None = None
        self.last_error: str | None = None

    async def start(self) -> HealthSnapshot | None:
        """Create the bucket when missing; return the stored snapshot, if any (None when unreadable)."""
        try:
            self._kv = await self._js.key_value(subjects.ROUTER_KV_BUCKET)
        except BucketNotFoundError:
            self._kv = await self._js.create_key_value(KeyValueConfig(
                bucket=subjects.ROUTER_KV_BUCKET, history=1, storage=StorageType.FILE, replicas=self._replicas,
                description="Routeur router: the last published routing snapshot"))
        try:
            entry = await self._kv.get(subjects.ROUTER_KV_KEY)
        except KeyNotFoundError:
            return None
        try:
            return _SNAPSHOT.decode(entry.value or b"")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("stored_snapshot_ignored", error=str(exc)[:200])
            return None

    async def put(self, data: bytes) -> bool:
        """Store the encoded snapshot; False (and `last_error`) when JetStream did not acknowledge in time."""
        if self._kv is None:
            raise RuntimeError("call SnapshotStore.start() before put()")
        try:
            await asyncio.wait_for(self._kv.put(subjects.ROUTER_KV_KEY, data), self._timeout_s)
        except Exception as exc:  # timeout, disconnected, no responders: the next publish tries again
            if self.last_error is None:
                log.warning("snapshot_store_failed", error=type(exc).__name__)
            self.last_error = type(exc).__name__
            return False
        if self.last_error is not None:
            log.info("snapshot_store_recovered")
        self.last_error = None
        return True
