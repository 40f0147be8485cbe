"""A pull consumer that keeps one JetStream pull request outstanding and buffers what it delivers.

nats-py's `PullSubscription.fetch` costs a task, a `wait_for` and a uuid per message; here every delivered
message is one callback that appends it to a list, so reading the stream costs a few µs per message.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.common.logs import get_logger

log = get_logger()

_STATUS = "Status"
_HEARTBEAT = "100"
_NO_RESPONDERS = "503"  # nobody serves the pull subject: the consumer (or its stream) does not exist
_ENDED_QUIETLY = ("404", "408")  # no messages / the request expired: the normal ends of an idle request
_GRACE_S = 2.0  # a pull request the server never ended (connection lost): issue a new one this much later
_BACKOFF_S = 0.5


class _PullRequest(msgspec.Struct, omit_defaults=True):
    batch: int
    expires: int  # nanoseconds


_encode = msgspec.json.Encoder().encode


class Puller:
    """Delivers up to `limit` messages of a durable pull consumer into memory; `take()` hands them out.

    One pull request is outstanding at a time, for at most `limit - buffered` messages and `expires_s`
    seconds, so memory stays bounded and the server holds the request (no polling) while the stream is idle.
    Messages are never acknowledged here: that is the caller's job once they are stored.
    """

    def __init__(self, nc: Client, *, stream: str, consumer: str, limit: int,
                 ensure_consumer: Callable[[], Awaitable[None]], expires_s: float = 2.0,
                 api_prefix: str = "$JS.API") -> None:
        self._nc = nc
        self._ensure_consumer = ensure_consumer
        self._next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._limit = limit
        self._expires_s = expires_s
        self._buffer: deque[Msg] = deque()
        self._oldest = 0.0  # monotonic arrival time of the oldest buffered message (approximately)
        self._want = 1
        self._enough = asyncio.Event()
        self._room = asyncio.Event()
        self._request_done = asyncio.Event()
        self._outstanding = 0
        self._status: str | None = None  # how the current request ended, when the server said so
        self._inbox = ""
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def oldest_age_s(self) -> float:
        return time.monotonic() - self._oldest if self._buffer else 0.0

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        self._task = asyncio.create_task(self._pull_loop(), name="trace-pull")

    async def wait(self, count: int, timeout: float | None) -> None:
        """Return once `count` messages are buffered, or after `timeout` seconds (None: no limit)."""
        if len(self._buffer) >= count:
            return
        self._want = count
        self._enough.clear()
        try:
            await asyncio.wait_for(self._enough.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._want = 1

    def take(self, count: int) -> list[Msg]:
        """Up to `count` buffered messages, oldest first."""
        buffer = self._buffer
        if count >= len(buffer):
            taken = list(buffer)
            buffer.clear()
        else:
            taken = [buffer.popleft() for _ in range(count)]
            self._oldest = time.monotonic()  # the rest arrived earlier, but a fresh batch waits its turn
        self._room.set()
        return taken

    async def stop(self) -> None:
        """Stop asking for messages and collect the ones already on their way (they stay in the buffer)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._sub is not None:
            try:
                await self._sub.drain()  # UNSUB + a round trip: whatever the server sent before is now buffered
            except Exception as exc:  # connection already closing: unacked messages are redelivered later
                log.warning("trace_pull_drain_failed", error=type(exc).__name__)
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        if not msg.reply and headers and _STATUS in headers:  # from the server itself: deliveries have an ack subject
            # 404/408: the request ended without (more) messages; 409: the server cut it short (e.g. a
            # leadership change); 100: an idle heartbeat, which we never ask for.
            if headers[_STATUS] != _HEARTBEAT:
                self._status = headers[_STATUS]
                self._request_done.set()
            return
        if not self._buffer:
            self._oldest = time.monotonic()
        self._buffer.append(msg)
        self._outstanding -= 1
        if self._outstanding <= 0:
            self._request_done.set()
        if len(self._buffer) >= self._want:
            self._enough.set()

    async def _pull_loop(self) -> None:
        expires_ns = int(self._expires_s * 1e9)
        while True:
            room = self._limit - len(self._buffer)
            if room <= self._limit // 4:  # wait for a useful amount of room rather than asking for a trickle
                self._room.clear()
                await self._room.wait()
                continue
            self._outstanding = room
            self._status = None
            self._request_done.clear()
            asked = time.monotonic()
            try:
                await self._nc.publish(self._next_subject, _encode(_PullRequest(batch=room, expires=expires_ns)),
                                       reply=self._inbox)
            except Exception as exc:  # disconnected: the client reconnects on its own; ask again shortly
                log.warning("trace_pull_request_failed", error=type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            try:
                await asyncio.wait_for(self._request_done.wait(), self._expires_s + _GRACE_S)
            except TimeoutError:
                pass  # the request was lost (reconnect); a duplicate at worst delivers a little more than `room`
            status = self._status
            if status is None or status in _ENDED_QUIETLY:
                continue
            # Ended at once by the server: never spin on it.
            if status == _NO_RESPONDERS:
                log.warning("trace_consumer_missing", action="creating it again")
                await asyncio.sleep(_BACKOFF_S)
                try:
                    await self._ensure_consumer()
                except Exception as exc:  # JetStream unavailable: the next round tries again
                    log.warning("trace_consumer_unavailable", error=type(exc).__name__)
            elif self._outstanding == room and time.monotonic() - asked < self._expires_s / 2:
                log.warning("trace_pull_refused", status=status)
                await asyncio.sleep(_BACKOFF_S)
