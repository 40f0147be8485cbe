"""RetryQueue batching: what goes out together, what is retried, and that nothing is dropped."""

from __future__ import annotations

import asyncio

import pytest

from services.common.retry_queue import RetryQueue, until_tick


class Sender:
    """Records each batch; fails an item the first `failures[item]` times it is sent."""

    def __init__(self, failures: dict[int, int] | None = None) -> None:
        self.batches: list[list[int]] = []
        self.failures = dict(failures or {})

    async def send_batch(self, items: list[int]) -> list[bool]:
        self.batches.append(list(items))
        results = []
        for item in items:
            left = self.failures.get(item, 0)
            self.failures[item] = left - 1
            results.append(left <= 0)
        return results


async def _drained(queue: RetryQueue[int], n: int) -> None:
    while queue.delivered < n:
        await asyncio.sleep(0.01)


async def test_items_submitted_together_share_a_batch() -> None:
    sender = Sender()
    queue = RetryQueue(send_batch=sender.send_batch, name="t", batch=4, linger_s=0.05)
    queue.start()
    for item in range(6):
        queue.submit(item)
    await asyncio.wait_for(_drained(queue, 6), 10)
    assert sender.batches == [[0, 1, 2, 3], [4, 5]]  # a full batch goes at once, the rest after the linger
    await queue.close(1.0)


async def test_failed_items_are_retried_in_order_until_confirmed() -> None:
    sender = Sender(failures={1: 2, 3: 1})
    queue = RetryQueue(send_batch=sender.send_batch, name="t", batch=10)
    queue.start()
    for item in range(5):
        queue.submit(item)
    await asyncio.wait_for(_drained(queue, 5), 10)
    assert sender.batches == [[0, 1, 2, 3, 4], [1, 3], [1]]
    assert queue.backlog == 0
    await queue.close(1.0)


async def test_one_item_senders_are_sent_concurrently_per_batch() -> None:
    sent: list[int] = []

    async def send(item: int) -> bool:
        sent.append(item)
        return True

    queue = RetryQueue(send, name="t", batch=3)
    queue.start()
    for item in range(7):
        queue.submit(item)
    await asyncio.wait_for(_drained(queue, 7), 10)
    assert sent == list(range(7))
    await queue.close(1.0)


async def test_close_delivers_what_is_queued_without_lingering() -> None:
    sender = Sender()
    queue = RetryQueue(send_batch=sender.send_batch, name="t", linger_s=3600)
    queue.start()
    queue.submit(1)
    queue.submit(2)
    await asyncio.sleep(0)  # the queue is now lingering for an hour
    await queue.close(10.0)
    assert queue.delivered == 2 and sender.batches[-1] == [1, 2]


async def test_a_sender_that_raises_keeps_its_batch() -> None:
    calls = 0

    async def flaky(items: list[int]) -> list[bool]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug")
        return [True] * len(items)

    queue = RetryQueue(send_batch=flaky, name="t")
    queue.start()
    queue.submit(1)
    await asyncio.wait_for(_drained(queue, 1), 10)
    assert calls == 2
    await queue.close(1.0)


def test_exactly_one_sender() -> None:
    with pytest.raises(ValueError, match="exactly one of send= and send_batch="):
        RetryQueue(name="t")


@pytest.mark.parametrize("now, expected", [(12674.157, 0.003), (12674.160, 0.02), (12674.1799, 0.02), (0.0, 0.02)])
def test_senders_linger_until_the_same_millisecond_tick(now: float, expected: float) -> None:
    assert until_tick(0.02, now) == pytest.approx(expected)
