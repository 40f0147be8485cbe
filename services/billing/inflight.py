"""Settlements being written right now: a retry that arrives meanwhile waits for the first write's outcome.

A proxy whose settle request timed out sends the same settlements again, often in a batch of another
shape (so JetStream's Nats-Msg-Id cannot recognise it). If billing checked "already settled?" while the
first write was still waiting for its ack, both writes would be stored. So a handler claims its request
ids before writing; another handler touching any of them waits until that write is stored or has failed,
then decides again from the ledger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager


class InFlight:
    def __init__(self) -> None:
        self._writing: dict[str, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._writing)

    async def settle(self, request_ids: Iterable[str], view: Callable[[], Awaitable[None]]) -> None:
        """Return once none of `request_ids` is being written and `view()` (the ledger catching up with the
        stream) has run after the last such write ended. The caller then decides and claims with no await
        in between, so nothing can slip in."""
        ids = tuple(request_ids)
        while True:
            busy = {self._writing[rid] for rid in ids if rid in self._writing}
            if busy:
                await asyncio.wait(busy)
                continue
            await view()
            if not any(rid in self._writing for rid in ids):
                return

    @contextmanager
    def writing(self, request_ids: Iterable[str]) -> Iterator[None]:
        """Claim `request_ids` for the duration of one write; the waiters wake when it ends, however."""
        ids = tuple(request_ids)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for rid in ids:
            self._writing[rid] = future
        try:
            yield
        finally:
            for rid in ids:
                if self._writing.get(rid) is future:
                    del self._writing[rid]
            future.set_result(None)
