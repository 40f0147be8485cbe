"""Publishes trace events to JetStream off the response path; retries until acked, never drops."""

from __future__ import annotations

from nats.js import JetStreamContext

from proto import codec, subjects
from proto.trace import TraceEvent
from services.common.logs import get_logger
from services.common.retry_queue import RetryQueue

log = get_logger()


class TracePublisher:
    """Each event is published with Nats-Msg-Id = request_id, so a retried publish is stored once
    (JetStream's duplicate window)."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._queue: RetryQueue[TraceEvent] = RetryQueue(self._publish, name="trace-publisher")
        self.failures = 0

    @property
    def backlog(self) -> int:
        return self._queue.backlog

    @property
    def published(self) -> int:
        return self._queue.delivered

    def start(self) -> None:
        self._queue.start()

    def submit(self, event: TraceEvent) -> None:
        """Queue an event; returns at once."""
        self._queue.submit(event)

    async def _publish(self, event: TraceEvent) -> bool:
        try:
            await self._js.publish(subjects.TRACE_SUBJECT, codec.encode(event), timeout=5.0,
                                   stream=subjects.TRACE_STREAM, headers={"Nats-Msg-Id": event.request_id})
            return True
        except Exception as exc:  # NATS down or slow: keep the event and retry
            self.failures += 1
            log.warning("trace_publish_failed", error=type(exc).__name__, request_id=event.request_id)
            return False

    async def close(self, timeout: float) -> None:
        """Publish what is queued (up to `timeout` seconds), then stop."""
        await self._queue.close(timeout)
