"""The rollup reconciler's bookkeeping (reconcile.py): which (organization, minute) buckets are suspect and when
each is due for a check, and the suspect window. Pure: the caller passes the monotonic time."""

from __future__ import annotations

import math
from collections.abc import Iterable

from proto.trace import TraceEvent

Bucket = tuple[str, int]  # (organization_id, start of the bucket in Unix seconds, UTC)
MINUTE_S, HOUR_S, DAY_S = 60, 3_600, 86_400
MAX_PENDING = 100_000  # suspect buckets remembered at most (a 7-day stream replay of a lost consumer is ~10k per org)
MAX_HOURS_PER_ROUND = 8  # a round checks the due buckets of at most this many distinct hours (one query pair each)


def minutes_of(events: Iterable[TraceEvent]) -> set[Bucket]:
    """The (organization, minute) buckets these traces fall in."""
    return {(event.organization_id, event.timestamp_ms // 60_000 * MINUTE_S) for event in events}


class Suspects:
    """Suspect (organization, minute) buckets and when each is due for a check, plus the suspect window.

    A bucket is due `delay_s` after it was first marked; marking it again while it waits does not postpone it (a
    check is exact whenever it runs, since it runs between this tracer's inserts, and a later fault marks the
    bucket again after the check). Pure: the caller passes `now` (monotonic seconds).
    """

    def __init__(self, *, delay_s: float, window_s: float, limit: int = MAX_PENDING) -> None:
        if not (delay_s >= 0 and window_s >= 0 and limit > 0):
            raise ValueError("delay_s and window_s must be ≥ 0 and limit positive")
        self.delay_s = delay_s
        self.window_s = window_s
        self.limit = limit
        self.dropped = 0  # marks refused because `limit` buckets were already waiting
        self._due: dict[Bucket, float] = {}
        self._verifying: set[Bucket] = set()  # marked only to confirm a rebuild held
        self._next_due = math.inf
        self._window_until = -math.inf

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, bucket: object) -> bool:
        return bucket in self._due

    def waiting(self) -> set[Bucket]:
        """The buckets waiting for a check (a copy)."""
        return set(self._due)

    def open_window(self, now: float) -> None:
        """Every batch inserted from now until `now + window_s` marks its buckets."""
        self._window_until = max(self._window_until, now + self.window_s)

    def in_window(self, now: float) -> bool:
        return now < self._window_until

    def mark(self, buckets: Iterable[Bucket], now: float, *, verify: bool = False) -> None:
        """Check these buckets `delay_s` from now (or when already due, if they wait already). `verify`: only to
        confirm a rebuild, so a drift found then is repaired without scheduling yet another check."""
        due = now + self.delay_s
        waiting = self._due
        added = False
        for bucket in buckets:
            if bucket in waiting:
                if not verify:
                    self._verifying.discard(bucket)
                continue
            if len(waiting) >= self.limit:
                self.dropped += 1
                continue
            waiting[bucket] = due
            added = True
            if verify:
                self._verifying.add(bucket)
        if added and due < self._next_due:
            self._next_due = due

    def due(self, now: float) -> bool:
        """Whether a check is due: O(1), called on every turn of the consumer loop."""
        return now >= self._next_due

    def take_due(self, now: float, *, max_hours: int = MAX_HOURS_PER_ROUND,
                 everything: bool = False) -> list[tuple[Bucket, bool]]:
        """Remove and return the due buckets of at most `max_hours` distinct hours (all due buckets of an hour go
        together), each with whether it is only a verification. `everything`: waiting ones too, due or not."""
        if not everything and now < self._next_due:
            return []
        hours: set[int] = set()
        taken: list[Bucket] = []
        next_due = math.inf
        for bucket, due in self._due.items():
            hour = bucket[1] // HOUR_S
            if (everything or due <= now) and (hour in hours or len(hours) < max_hours):
                hours.add(hour)
                taken.append(bucket)
            elif due < next_due:
                next_due = due
        out = []
        for bucket in taken:
            del self._due[bucket]
            verifying = bucket in self._verifying
            self._verifying.discard(bucket)
            out.append((bucket, verifying))
        self._next_due = next_due
        return out
