"""Publishes trace events to JetStream off the response path, in pipelined batches; retries until acked."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from nats.js import JetStreamContext

from proto import codec, subjects
from proto.trace import TraceEvent
from services.common.logs import get_logger
from services.common.retry_queue import SEND_TICK_S, RetryQueue

log = get_logger()

BATCH = 512
ACK_TIMEOUT_S = 5.0


class TracePublisher:
    """Each event is published with Nats-Msg-Id = request_id, so a retried publish is stored once
    (JetStream's duplicate window). A batch is written at once and its acks are awaited together, instead
    of one request/reply round trip per trace."""

    def __init__(self, js: JetStreamContext, *, linger_s: float = SEND_TICK_S, batch: int = BATCH,
                 ack_timeout_s: float = ACK_TIMEOUT_S) -> None:
        self._js = js
        self._ack_timeout_s = ack_timeout_s
        self._queue: RetryQueue[TraceEvent] = RetryQueue(send_batch=self._publish, name="trace-publisher",
                                                         batch=batch, linger_s=linger_s)
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

    async def _publish(self, events: list[TraceEvent]) -> Sequence[bool]:
        """Publish a batch without waiting between messages, then wait for all the acks (up to the timeout)."""
        acks: list[asyncio.Future[Any] | None] = []
        error: BaseException | None = None
        for event in events:
            try:
                # No Nats-Expected-Stream header: the subject belongs to TRACE_STREAM by proto.subjects.STREAMS,
                # and every header costs the proxy, nats-server and the tracer a little per trace.
                acks.append(await self._js.publish_async(subjects.TRACE_SUBJECT, codec.encode(event),
                                                         headers={"Nats-Msg-Id": event.request_id}))
            except Exception as exc:  # disconnected with a full buffer: keep the event and retry
                acks.append(None)
                error = exc
        waiting = [ack for ack in acks if ack is not None]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self._ack_timeout_s)
            for ack in late:
                ack.cancel()  # frees its slot in the client's table of pending publishes
        results = [ack is not None and not ack.cancelled() and ack.exception() is None for ack in acks]
        failed = results.count(False)
        if failed:
            self.failures += failed
            if error is None:
                error = next((ack.exception() for ack in acks if ack is not None and not ack.cancelled()
                              and ack.exception() is not None), None)
            log.warning("trace_publish_failed", failed=failed, batch=len(events),
                        error=type(error).__name__ if error is not None else "TimeoutError")
        return results

    async def close(self, timeout: float) -> None:
        """Publish what is queued (up to `timeout` seconds), then stop."""
        await self._queue.close(timeout)
