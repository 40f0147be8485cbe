"""The tracer's pure ingest core: what a batch of deliveries holds (events, undecodable messages, whether it may
replay stored rows), where the consumer stands in the stream, and whether inserts are healthy. No I/O: the consumer
loop (service.py) pulls, calls these, inserts and acks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from proto.trace import TraceEvent
from services.tracer.batching import ack_info

_TRACE = msgspec.json.Decoder(TraceEvent)

# /readyz turns false after this many insert attempts in a row failed, or once they have failed for this long.
MAX_FAILED_INSERTS = 3
MAX_FAILING_S = 10.0


@dataclass(frozen=True)
class Batch:
    """What a batch of deliveries holds, in delivery order."""

    events: list[TraceEvent]
    good: list[int]  # indices of the deliveries behind `events` (acked once stored)
    bad: list[int]  # indices of undecodable deliveries (terminated: they never decode)
    redelivered: bool  # it may hold rows already stored: check them first (Tracer.store_events)
    top_seq: int  # the highest stream sequence among `good`
    pending: int  # messages the consumer still had to deliver after the last one of the batch


def delivery(reply: str) -> tuple[int, int, int]:
    """(times delivered, stream sequence, messages pending) of a delivery's ack subject; anything that is not a
    JetStream delivery counts as a redelivery (the careful path)."""
    try:
        return ack_info(reply)
    except ValueError:
        return 2, 0, 0


class Cursor:
    """Where this process stands in the stream: the highest sequence it has stored, and whether its consumer is
    replaying the stream (created anew: some of what it delivers may be stored already)."""

    def __init__(self) -> None:
        self.replaying = False
        self.stored_seq = 0

    def consumer_created(self) -> None:
        """A new consumer replays the stream, which may be a new stream too (sequences from 1 again)."""
        self.replaying = True
        self.stored_seq = 0

    def sort(self, deliveries: Sequence[tuple[bytes, str]]) -> Batch:
        """Decode a batch of (data, ack subject) deliveries. A first delivery at or below the highest sequence this
        process stored is a replay (the server lost its acks): the batch is then `redelivered`."""
        events: list[TraceEvent] = []
        good: list[int] = []
        bad: list[int] = []
        redelivered = self.replaying
        top_seq = 0
        for index, (data, reply) in enumerate(deliveries):
            try:
                events.append(_TRACE.decode(data))
            except msgspec.DecodeError:  # ValidationError included
                bad.append(index)
                continue
            good.append(index)
            delivered, seq, _ = delivery(reply)
            top_seq = max(top_seq, seq)
            redelivered = redelivered or delivered > 1 or seq <= self.stored_seq
        pending = delivery(deliveries[-1][1])[2] if deliveries else 0
        return Batch(events, good, bad, redelivered, top_seq, pending)

    def stored(self, batch: Batch) -> None:
        """The batch is stored: a consumer that had nothing left to deliver has caught up with its replay."""
        self.stored_seq = max(self.stored_seq, batch.top_seq)
        if batch.pending == 0:
            self.replaying = False


class InsertHealth:
    """Failed insert attempts in a row: unhealthy after `max_failures` of them or `max_failing_s` seconds of only
    failures; healthy again at the next success. Pure: the caller passes `now` (monotonic seconds)."""

    def __init__(self, *, max_failures: int = MAX_FAILED_INSERTS, max_failing_s: float = MAX_FAILING_S) -> None:
        self.max_failures = max_failures
        self.max_failing_s = max_failing_s
        self.failures = 0
        self.last_error: str | None = None
        self._since = math.inf

    def failed(self, now: float, error: str) -> None:
        self.failures += 1
        self.last_error = error
        self._since = min(self._since, now)

    def succeeded(self) -> None:
        self.failures = 0
        self.last_error = None
        self._since = math.inf

    def failing_for_s(self, now: float) -> float:
        return max(0.0, now - self._since) if self.failures else 0.0

    def healthy(self, now: float) -> bool:
        return self.failures < self.max_failures and self.failing_for_s(now) < self.max_failing_s
