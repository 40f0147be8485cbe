"""A queue drained by one background task that retries each item until its sender confirms it."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from services.common.logs import get_logger

T = TypeVar("T")
log = get_logger()


class RetryQueue(Generic[T]):
    """`submit` returns at once; `send(item) -> bool` is retried with capped back-off until it returns True.
    Items are sent concurrently in batches; nothing is dropped while the process lives."""

    def __init__(self, send: Callable[[T], Awaitable[bool]], *, name: str, batch: int = 256) -> None:
        self._send = send
        self._name = name
        self._batch = batch
        self._pending: deque[T] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.delivered = 0

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    def submit(self, item: T) -> None:
        self._pending.append(item)
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
            batch = [self._pending.popleft() for _ in range(min(self._batch, len(self._pending)))]
            results = await asyncio.gather(*(self._send(item) for item in batch))
            failed = [item for item, ok in zip(batch, results, strict=True) if not ok]
            self.delivered += len(batch) - len(failed)
            if failed:
                self._pending.extendleft(reversed(failed))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                delay = 0.1

    async def close(self, timeout: float) -> None:
        """Deliver what is queued (up to `timeout` seconds), then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            log.error("queue_undelivered", queue=self._name, backlog=len(self._pending))
            self._task.cancel()
