"""Pure batching rules of the trace consumer: when a batch is due, and what a JetStream ack subject says."""

from __future__ import annotations

import msgspec


class FlushPolicy(msgspec.Struct, frozen=True):
    """Insert when `max_rows` traces are buffered or the oldest has waited `max_delay_s`, whichever is first.

    ClickHouse (chdb above all) pays a fixed cost per insert (a new part in `traces` and in each rollup), so
    fewer, bigger inserts are much cheaper per trace; `max_delay_s` bounds how stale `/v1/logs` can be.
    """

    max_rows: int
    max_delay_s: float

    def __post_init__(self) -> None:
        if self.max_rows < 1:
            raise ValueError("max_rows must be at least 1 (TRACER_BATCH_SIZE)")
        if self.max_delay_s <= 0:
            raise ValueError("max_delay_s must be positive (TRACER_FLUSH_INTERVAL_S)")

    @property
    def buffer_limit(self) -> int:
        """How many delivered messages may wait in memory: the next batch fills while one is being inserted."""
        return 2 * self.max_rows

    def due(self, buffered: int, oldest_age_s: float) -> bool:
        """Whether to insert now, with `buffered` messages waiting, the oldest for `oldest_age_s`."""
        return buffered >= self.max_rows or (buffered > 0 and oldest_age_s >= self.max_delay_s)

    def wait_s(self, oldest_age_s: float) -> float:
        """How long to wait for more messages before the oldest one is due."""
        return max(0.0, self.max_delay_s - oldest_age_s)


_V1_TOKENS = 9  # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>


def ack_info(reply: str) -> tuple[int, int, int]:
    """(times delivered, stream sequence, messages pending in the consumer) from a JetStream message's ack subject.

    Both forms: v1 `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>` and v2
    `$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>[.<token>]`.
    Raises ValueError for anything else.
    """
    tokens = reply.split(".")
    if not (len(tokens) == _V1_TOKENS or len(tokens) >= _V1_TOKENS + 2) or tokens[:2] != ["$JS", "ACK"]:
        raise ValueError(f"not a JetStream ack subject: {reply[:80]!r}")
    first = 4 if len(tokens) == _V1_TOKENS else 6
    return int(tokens[first]), int(tokens[first + 1]), int(tokens[first + 4])


def ack_counts(reply: str) -> tuple[int, int]:
    """(times delivered, messages pending in the consumer): `ack_info` without the stream sequence."""
    delivered, _, pending = ack_info(reply)
    return delivered, pending
