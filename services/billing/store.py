"""The ledger's only I/O: append events to ROUTEUR_LEDGER, follow the stream in order, snapshot to a file."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
from pathlib import Path

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from proto import codec, subjects
from proto.billing import LedgerEvent, decode_event, event_msg_id
from services.billing.errors import LedgerUnavailable
from services.billing.ledger import Ledger
from services.billing.state import LedgerState
from services.common.logs import get_logger

log = get_logger()

_SNAPSHOT_FILE = "billing-ledger.snapshot.json"
_SNAPSHOT_VERSION = 1


class Snapshot(msgspec.Struct):
    """The ledger state after stream sequence `seq` of the stream created at `stream_created`."""

    version: int
    stream_created: str
    seq: int
    state: LedgerState


class LedgerStore:
    """Every change is published first and applied only when the follower reads it back from the stream.

    So the in-memory state is always exactly "snapshot + stream replay", in stream order, whether the
    process has been running for a month or just restarted after SIGKILL; nothing is acknowledged to a
    caller before JetStream has stored it.
    """

    def __init__(self, js: JetStreamContext, ledger: Ledger, *, publish_timeout_s: float,
                 data_dir: Path | None = None, snapshot_every: int = 10_000) -> None:
        self._js = js
        self.ledger = ledger
        self._timeout = publish_timeout_s
        self._snapshot_path = None if data_dir is None else data_dir / _SNAPSHOT_FILE
        self._snapshot_every = snapshot_every
        self._stream_created = ""
        self.applied_seq = 0
        self._since_snapshot = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tie = itertools.count()
        self._sub: Subscription | None = None
        self._snapshot_task: asyncio.Task[None] | None = None
        self.undecodable = 0
        self._uncertain = 0  # writes not acknowledged since the last full catch-up: stored all the same?

    @property
    def following(self) -> bool:
        return self._sub is not None

    async def start(self, *, timeout: float = 300.0) -> int:
        """Load the snapshot, replay the stream up to its current end, then keep following it."""
        info = await self._js.stream_info(subjects.LEDGER_STREAM)
        self._stream_created = str(info.created)
        last_seq = info.state.last_seq
        snapshot = await asyncio.to_thread(self._read_snapshot)
        if snapshot is not None and snapshot.stream_created == self._stream_created and snapshot.seq <= last_seq:
            self.ledger.restore(snapshot.state)
            self.applied_seq = snapshot.seq
            log.info("ledger_snapshot_loaded", seq=snapshot.seq, events=snapshot.state.events)
        elif snapshot is not None:
            log.warning("ledger_snapshot_ignored", reason="belongs to another stream or is ahead of it",
                        snapshot_seq=snapshot.seq, stream_last_seq=last_seq)
        start_seq = self.applied_seq
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq + 1,
                                inactive_threshold=60.0)
        self._sub = await self._js.subscribe(subjects.LEDGER_SUBJECT, stream=subjects.LEDGER_STREAM,
                                             cb=self._on_event, ordered_consumer=True, idle_heartbeat=1.0,
                                             config=config, pending_msgs_limit=-1, pending_bytes_limit=-1)
        if last_seq > self.applied_seq:
            await self._caught_up(last_seq, timeout)
        log.info("ledger_replayed", events=self.applied_seq - start_seq, seq=self.applied_seq,
                 orgs=len(self.ledger.state.orgs), keys=len(self.ledger.state.keys))
        return self.applied_seq - start_seq

    async def stop(self) -> None:
        """Stop following and write a final snapshot."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        if self._snapshot_task is not None:
            await self._snapshot_task
        await self.snapshot()

    async def append(self, event: LedgerEvent) -> bool:
        """Store `event` durably and wait until it is applied; True when JetStream saw it before (duplicate).

        Raises LedgerUnavailable when JetStream did not acknowledge in time: nothing may be reported
        as done then, and the caller retries with the same ids (the retry is deduplicated).
        """
        try:
            ack = await self._js.publish(subjects.LEDGER_SUBJECT, codec.encode(event), timeout=self._timeout,
                                         stream=subjects.LEDGER_STREAM,
                                         headers={"Nats-Msg-Id": event_msg_id(event)})
        except Exception as exc:  # timeout, no responders, disconnected: all mean "not stored", retry
            self._uncertain += 1
            raise LedgerUnavailable(f"the ledger stream did not acknowledge the write ({type(exc).__name__}); "
                                    "retry with the same request") from None
        try:
            await self._caught_up(ack.seq, self._timeout)
        except LedgerUnavailable:  # stored but not applied yet: a retry must not be judged on this view
            self._uncertain += 1
            raise
        return bool(ack.duplicate)

    async def settled_view(self) -> None:
        """Before deciding what is already settled: if a write went unacknowledged it may be stored anyway,
        so first follow the stream to its current end (a retry of it is then seen as settled, not written
        twice). Raises LedgerUnavailable while JetStream cannot say."""
        uncertain = self._uncertain
        if not uncertain:
            return
        try:
            info = await self._js.stream_info(subjects.LEDGER_STREAM)
        except Exception as exc:
            raise LedgerUnavailable(f"the ledger stream cannot be read ({type(exc).__name__}); retry") from None
        await self._caught_up(info.state.last_seq, self._timeout)
        if self._uncertain == uncertain:  # no write failed meanwhile (that one may be stored after last_seq)
            self._uncertain = 0

    async def _caught_up(self, seq: int, timeout: float) -> None:
        if self.applied_seq >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._tie), future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise LedgerUnavailable("the write is stored but the ledger has not caught up with the stream yet; "
                                    "retry with the same request") from None

    async def _on_event(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.applied_seq:
            return
        try:
            event = decode_event(msg.data)
        except msgspec.DecodeError as exc:
            self.undecodable += 1
            log.error("ledger_event_undecodable", seq=seq, error=str(exc)[:200])
        else:
            self.ledger.apply(event)
        self.applied_seq = seq
        waiters = self._waiters
        while waiters and waiters[0][0] <= seq:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(None)
        self._since_snapshot += 1
        if self._snapshot_path is not None and self._since_snapshot >= self._snapshot_every and (
                self._snapshot_task is None or self._snapshot_task.done()):
            self._snapshot_task = asyncio.create_task(self.snapshot(), name="ledger-snapshot")

    async def snapshot(self) -> None:
        """Write the state and its stream sequence atomically (encoded here, written off the event loop)."""
        if self._snapshot_path is None or not self._stream_created:
            return
        self._since_snapshot = 0
        data = codec.encode(Snapshot(version=_SNAPSHOT_VERSION, stream_created=self._stream_created,
                                     seq=self.applied_seq, state=self.ledger.state))
        try:
            await asyncio.to_thread(_write_atomically, self._snapshot_path, data)
        except OSError as exc:
            log.error("ledger_snapshot_failed", error=str(exc)[:200])

    def _read_snapshot(self) -> Snapshot | None:
        if self._snapshot_path is None or not self._snapshot_path.exists():
            return None
        try:
            snapshot = codec.decode(self._snapshot_path.read_bytes(), Snapshot)
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("ledger_snapshot_unreadable", error=str(exc)[:200])
            return None
        return snapshot if snapshot.version == _SNAPSHOT_VERSION else None


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
