"""Publishes trace events to JetStream off the response path; retries until acked, never drops."""

from __future__ import annotations

import asyncio
from collections import deque

from nats.js import JetStreamContext

from proto import codec, subjects
from proto.trace import TraceEvent
from services.common.logs import get_logger

log = get_logger()

_BATCH = 256


class TracePublisher:
    """A queue drained by one background task; each event is published with Nats-Msg-Id = request_id,
    so a retried publish is stored once (JetStream's duplicate window)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._pending: deque[TraceEvent] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.published = 0
        self.failures = 0

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="trace-publisher")

    def submit(self, event: TraceEvent) -> None:
        """Queue an event; returns at once."""
        self._pending.append(event)
        self._wakeup.set()

    async def _publish(self, event: TraceEvent) -> bool:
        try:
            await self._js.publish(subjects.TRACE_SUBJECT, codec.encode(event), timeout=5.0,
                                   stream=subjects.TRACE_STREAM, headers={"Nats-Msg-Id": event.request_id})
            return True
        except Exception as exc:  # NATS down or slow: keep the event and retry
            self.failures += 1
            log.warning("trace_publish_failed", error=type(exc).__name__, request_id=event.request_id)
            return False

    async def _run(self) -> None:
        delay = 0.1
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
            results = await asyncio.gather(*(self._publish(event) for event in batch))
            failed = [event for event, ok in zip(batch, results, strict=True) if not ok]
            self.published += len(batch) - len(failed)
            if failed:
                self._pending.extendleft(reversed(failed))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                delay = 0.1

    async def close(self, timeout: float) -> None:
        """Publish what is queued (up to `timeout` seconds), then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            log.error("trace_publisher_unflushed", backlog=len(self._pending))
            self._task.cancel()
