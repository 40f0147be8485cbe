"""The trace consumer's pure batching rules: when a batch is due, and what a JetStream ack subject says."""

from __future__ import annotations

import pytest

from services.tracer.batching import FlushPolicy, ack_counts

POLICY = FlushPolicy(max_rows=1000, max_delay_s=1.0)


def test_a_full_batch_is_due_at_once() -> None:
    assert POLICY.due(1000, 0.0) and POLICY.due(5000, 0.0)
    assert not POLICY.due(999, 0.5)


def test_a_partial_batch_is_due_when_its_oldest_trace_has_waited_long_enough() -> None:
    assert not POLICY.due(1, 0.99) and POLICY.due(1, 1.0)
    assert POLICY.wait_s(0.25) == 0.75 and POLICY.wait_s(3.0) == 0.0


def test_nothing_buffered_is_never_due() -> None:
    assert not POLICY.due(0, 100.0)


def test_the_buffer_holds_the_next_batch_while_one_is_inserted() -> None:
    assert POLICY.buffer_limit == 2000


@pytest.mark.parametrize("rows, delay, message", [(0, 1.0, "TRACER_BATCH_SIZE"), (10, 0.0, "TRACER_FLUSH_INTERVAL_S")])
def test_nonsense_settings_are_refused(rows: int, delay: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FlushPolicy(max_rows=rows, max_delay_s=delay)


def test_ack_subjects_in_both_forms() -> None:
    assert ack_counts("$JS.ACK.ROUTEUR_TRACES.tracer.1.120.118.1763900000123456789.42") == (1, 42)
    assert ack_counts("$JS.ACK.hub.ACCHASH.ROUTEUR_TRACES.tracer.3.120.118.1763900000123456789.0.tok") == (3, 0)
    assert ack_counts("$JS.ACK._.ACCHASH.ROUTEUR_TRACES.tracer.2.120.118.1763900000123456789.7") == (2, 7)


@pytest.mark.parametrize("reply", ["", "_INBOX.abc.def", "$JS.ACK.S.c.1.2.3", "$JS.ACK.a.S.c.1.2.3.4.5",
                                   "$JS.NAK.S.c.1.2.3.4.5"])
def test_anything_else_is_not_an_ack_subject(reply: str) -> None:
    with pytest.raises(ValueError, match="not a JetStream ack subject"):
        ack_counts(reply)
