"""A queue drained in batches by one background task that retries each item until its sender confirms it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from services.common.logs import get_logger

T = TypeVar("T")
log = get_logger()

# The proxy's background senders (traces, settlements, attempt reports) linger until the same ticks of this
# period: one socket write per tick for all of them rather than one per message, for at most 20 ms of delay.
SEND_TICK_S = 0.02

SendOne = Callable[[T], Awaitable[bool]]
SendBatch = Callable[[list[T]], Awaitable[Sequence[bool]]]


def until_tick(period_s: float, now: float) -> float:
    """Seconds from `now` (the event loop's clock) to the next multiple of `period_s`, in whole milliseconds.

    Background senders that linger until a shared tick, rather than `period_s` after their own first item,
    wake up in the same event-loop iteration, so their NATS messages leave in one socket write. Milliseconds,
    because uvloop's timers have that resolution: a float modulo would scatter them over adjacent ones.
    """
    period_ms = max(1, round(period_s * 1000))
    return (period_ms - round(now * 1000) % period_ms) / 1000


class RetryQueue(Generic[T]):
    """`submit` returns at once; items are handed to the sender in batches of up to `batch` and retried with
    capped back-off until it confirms them. Nothing is dropped while the process lives.

    The sender is either `send(item) -> bool` (the items of a batch are sent concurrently) or
    `send_batch(items) -> [bool, …]` (one result per item, in order). With `linger_s` > 0 a batch that is not
    full waits for company until the next multiple of `linger_s` on the loop's clock (`until_tick`): items
    submitted close together share one batch, and queues with the same linger send at the same moment (for
    NATS, one socket write instead of one per message), at the price of up to `linger_s` of delay.
    """

    def __init__(self, send: SendOne[T] | None = None, *, name: str, batch: int = 256, linger_s: float = 0.0,
                 send_batch: SendBatch[T] | None = None) -> None:
        if (send is None) == (send_batch is None):
            raise ValueError("give RetryQueue exactly one of send= and send_batch=")
        self._send_batch: SendBatch[T] = send_batch or self._concurrently(send)  # type: ignore[arg-type]
        self._name = name
        self._batch = batch
        self._linger_s = linger_s
        self._pending: deque[T] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._lingering: asyncio.Future[None] | None = None  # set early by close()
        self.delivered = 0

    @staticmethod
    def _concurrently(send: SendOne[T]) -> SendBatch[T]:
        async def send_all(items: list[T]) -> list[bool]:
            return list(await asyncio.gather(*(send(item) for item in items)))

        return send_all

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    def submit(self, item: T) -> None:
        self._pending.append(item)
        if not self._wakeup.is_set():
            self._wakeup.set()

    async def _run(self) -> None:
        delay = 0.1
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._linger_s > 0 and not self._closing and len(self._pending) < self._batch:
                await self._linger()
            batch = [self._pending.popleft() for _ in range(min(self._batch, len(self._pending)))]
            try:
                results = await self._send_batch(batch)
            except Exception as exc:  # a sender bug must not lose the batch: keep it and retry
                log.error("queue_send_failed", queue=self._name, error=type(exc).__name__)
                results = [False] * len(batch)
            failed = [item for item, ok in zip(batch, results, strict=True) if not ok]
            self.delivered += len(batch) - len(failed)
            if failed:
                self._pending.extendleft(reversed(failed))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                delay = 0.1

    async def _linger(self) -> None:
        """Sleep until the next tick, like asyncio.sleep (so every sender on that tick resumes in the same loop
        iteration), unless close() cuts it short."""
        loop = asyncio.get_running_loop()
        self._lingering = waiter = loop.create_future()
        timer = loop.call_later(until_tick(self._linger_s, loop.time()), _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._lingering = None

    async def close(self, timeout: float) -> None:
        """Deliver what is queued (up to `timeout` seconds, without lingering), then stop."""
        self._closing = True
        if self._lingering is not None:
            _wake(self._lingering)
        self._wakeup.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            log.error("queue_undelivered", queue=self._name, backlog=len(self._pending))
            self._task.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
