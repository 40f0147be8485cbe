"""The proxy's side of routing: hold the router's latest snapshot, decide locally, report attempts."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from catalog.schema import Catalog
from proto import codec, subjects
from proto.routing import CLOSED, HALF_OPEN, OPEN, AttemptBatch, AttemptReport, HealthSnapshot, RouteHealth
from services.common.logs import get_logger
from services.common.retry_queue import SEND_TICK_S, until_tick
from services.router import policy
from services.router.policy import CatalogIndex, Decision
from services.router.rules import EMPTY, CompiledRules, RequestFacts, parse_tags, request_facts

__all__ = ["Decision", "RequestFacts", "RoutingView", "encode_batches", "parse_tags", "request_facts"]

log = get_logger()
_SNAPSHOT = msgspec.json.Decoder(HealthSnapshot)

# One tick's reports leave as one AttemptBatch unless that would be bigger than this: then as several, each
# within both limits (NATS' default max_payload is 1 MiB; a report is ~150 bytes, so 2,000 fit ~300 KiB).
MAX_BATCH_REPORTS = 2_000
MAX_BATCH_BYTES = 512 * 1024


def encode_batches(reports: Sequence[AttemptReport], *, max_reports: int = MAX_BATCH_REPORTS,
                   max_bytes: int = MAX_BATCH_BYTES) -> list[tuple[bytes, int]]:
    """`reports`, in order, as encoded AttemptBatch messages of at most `max_reports` reports and `max_bytes`
    bytes each; with each message, how many reports it holds. Each chunk of `max_reports` is encoded once;
    only a chunk found too large is split evenly into as many parts as its size calls for and re-encoded. A
    single report larger than `max_bytes` still gets a batch of its own (the publish may then refuse it)."""
    if max_reports < 1:
        raise ValueError("max_reports must be at least 1")
    batches: list[tuple[bytes, int]] = []
    for start in range(0, len(reports), max_reports):
        _encode_within(reports[start:start + max_reports], max_bytes, batches)
    return batches


def _encode_within(reports: Sequence[AttemptReport], max_bytes: int, batches: list[tuple[bytes, int]]) -> None:
    data = codec.encode(AttemptBatch(tuple(reports)))
    if len(data) <= max_bytes or len(reports) == 1:
        batches.append((data, len(reports)))
        return
    parts = min(len(reports), max(2, -(-len(data) // max_bytes)))
    size, extra = divmod(len(reports), parts)
    start = 0
    for part in range(parts):
        end = start + size + (part < extra)
        _encode_within(reports[start:end], max_bytes, batches)
        start = end


class RoutingView:
    """Routes requests from the router's last snapshot, with no network hop on the request path.

    Start: subscribes to ROUTER_SNAPSHOT and reads the last snapshot from the KV bucket. Without any
    snapshot (router never ran) it routes by the catalog (primary route first, no rules). When the router
    stops publishing it keeps routing on the last snapshot — open breakers turn half-open as their
    cool-downs elapse — and `status()` says `stale since …`.
    """

    def __init__(self, nc: Client, *, catalog: Catalog, providers: Collection[str], stale_after_s: float = 3.0,
                 kv_timeout_s: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, rand: Callable[[], float] = random.random) -> None:
        self._nc = nc
        self._index = CatalogIndex(catalog)
        self._available = frozenset(providers)
        self._stale_after_s = stale_after_s
        self._kv_timeout_s = kv_timeout_s
        self._clock, self._wall, self._rand = clock, wall, rand
        self._snapshot: HealthSnapshot | None = None
        self._health: dict[str, RouteHealth] = {}
        self._rules: CompiledRules = EMPTY
        self._published_mono = 0.0  # the snapshot's publish time on our monotonic clock
        self._heard_mono = 0.0
        self._heard_wall = 0.0
        self._probes: dict[str, tuple[float, float]] = {}  # route -> (open period id, probe sent at)
        self._sub: Subscription | None = None
        self._outbox: list[AttemptReport] = []  # prepared reports waiting for the next tick's batch
        self._sending: asyncio.Task[None] | None = None
        self.reports_dropped = 0

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(subjects.ROUTER_SNAPSHOT, cb=self._on_snapshot)
        try:
            data = await asyncio.wait_for(self._read_kv(), self._kv_timeout_s)
        except Exception as exc:  # no bucket, no key, JetStream down: route by the catalog until a snapshot comes
            log.info("routing_snapshot_unavailable", error=type(exc).__name__)
            return
        self._receive(data, "kv")

    async def stop(self) -> None:
        """Unsubscribe and hand queued reports to the connection's buffer (call before nc.drain())."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        if self._sending is not None:
            self._sending.cancel()
            await asyncio.gather(self._sending, return_exceptions=True)
            self._sending = None
        await self._send_outbox()

    @property
    def snapshot(self) -> HealthSnapshot | None:
        return self._snapshot

    @property
    def live(self) -> bool:
        """A snapshot was heard within `stale_after_s` (at least three of the router's publish periods)."""
        snapshot = self._snapshot
        if snapshot is None:
            return False
        return self._clock() - self._heard_mono <= max(self._stale_after_s, 3 * snapshot.publish_interval_s)

    def set_providers(self, providers: Collection[str]) -> None:
        self._available = frozenset(providers)

    def decide(self, facts: RequestFacts) -> Decision:
        """The routes for one request (see services/router/policy.py). Raises UnknownModel / NoAvailableRoute."""
        now = self._clock()
        decision = policy.decide(facts, self._index, self._rules, self._health, self._available,
                                 elapsed_s=now - self._published_mono, probing=self._probing(now) if self._probes
                                 else (), rand=self._rand)
        first = decision.candidates[0]
        if first.state == HALF_OPEN:
            self._probes[first.key] = (self._period(first.key), now)
        return decision

    def release(self, decision: Decision) -> None:
        """Give back the half-open probe `decision` claimed when no attempt is made (e.g. billing refused)."""
        first = decision.candidates[0]
        if first.state == HALF_OPEN:
            self._probes.pop(first.key, None)

    async def report(self, attempt: AttemptReport) -> None:
        """Publish one attempt's outcome to the router now, as a batch of one (core NATS, no acknowledgement);
        never raises. `timestamp_ms` (the attempt's start) is filled in from `latency_ms` when left at 0."""
        await self._send([self._prepare(attempt)])

    def report_nowait(self, attempt: AttemptReport) -> None:
        """`report` from synchronous code (e.g. where the proxy appends a trace Attempt): queued, and published
        at the next `SEND_TICK_S` tick in one AttemptBatch with every other report queued meanwhile (and in the
        same socket write as the proxy's other background messages)."""
        self._outbox.append(self._prepare(attempt))
        if self._sending is None:
            self._sending = asyncio.get_running_loop().create_task(self._send_soon(), name="attempt-reports")

    def _prepare(self, attempt: AttemptReport) -> AttemptReport:
        """Claim the half-open probe the attempt was (local bookkeeping) and stamp its start."""
        key = attempt.route
        health = self._health.get(key)
        now = self._clock()
        if health is not None and policy.effective_state(health, now - self._published_mono, False) == HALF_OPEN:
            self._probes.setdefault(key, (self._period(key), now))
        if not attempt.timestamp_ms:
            attempt = msgspec.structs.replace(attempt, timestamp_ms=int(self._wall() * 1000 - attempt.latency_ms))
        return attempt

    async def _send_soon(self) -> None:
        try:  # on the same ticks as the proxy's other background senders: one socket write for all of them
            await asyncio.sleep(until_tick(SEND_TICK_S, asyncio.get_running_loop().time()))
        finally:
            self._sending = None
        await self._send_outbox()

    async def _send_outbox(self) -> None:
        outbox, self._outbox = self._outbox, []
        if outbox:
            await self._send(outbox)

    async def _send(self, reports: Sequence[AttemptReport]) -> None:
        """Publish `reports` as AttemptBatch messages on ROUTER_ATTEMPTS_BATCH (one unless too large)."""
        try:
            batches = encode_batches(reports)
        except Exception as exc:  # cannot happen with well-typed reports; health is best effort all the same
            self._dropped(len(reports), exc)
            return
        for data, count in batches:
            try:
                await self._nc.publish(subjects.ROUTER_ATTEMPTS_BATCH, data)
            except Exception as exc:  # disconnected with a full buffer, closed connection: health is best effort
                self._dropped(count, exc)

    def _dropped(self, count: int, exc: Exception) -> None:
        """Count `count` reports lost; log when the total reaches 1, 10, 100, 1000 or passes a multiple of 10,000."""
        before = self.reports_dropped
        self.reports_dropped = after = before + count
        if any(before < mark <= after for mark in (1, 10, 100, 1000)) or after // 10_000 > before // 10_000:
            log.warning("attempt_report_dropped", error=type(exc).__name__, dropped=after, batch=count)

    def status(self) -> dict[str, object]:
        """Readiness detail: `router` is `live`, `stale since <time>` or `no snapshot yet`. No booleans, so
        it never flips the proxy's readiness: routing goes on from the last snapshot either way."""
        snapshot = self._snapshot
        if snapshot is None:
            return {"router": "no snapshot yet (routing by catalog order)", "reports_dropped": self.reports_dropped}
        elapsed = self._clock() - self._published_mono
        state = "live" if self.live else "stale since " + datetime.fromtimestamp(
            self._heard_wall, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        unhealthy = sorted(key for key, health in self._health.items()
                           if policy.effective_state(health, elapsed, False) != CLOSED)
        return {"router": state, "routing_version": snapshot.version, "rules_digest": snapshot.rules_digest,
                "rules_error": snapshot.rules_error, "routes_not_closed": unhealthy,
                "reports_dropped": self.reports_dropped}

    # ------------------------------------------------------------------------------------ internals

    async def _read_kv(self) -> bytes:
        kv = await self._nc.jetstream().key_value(subjects.ROUTER_KV_BUCKET)
        entry = await kv.get(subjects.ROUTER_KV_KEY)
        return entry.value or b""

    async def _on_snapshot(self, msg: Msg) -> None:
        self._receive(msg.data, "subject")

    def _receive(self, data: bytes, source: str) -> None:
        try:
            snapshot = _SNAPSHOT.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("routing_snapshot_undecodable", source=source, error=str(exc)[:200])
            return
        # A published snapshot is fresh (no clock comparison across hosts); a stored one is as old as it says.
        age = max(self._wall() - snapshot.published_at, 0.0) if source == "kv" and snapshot.published_at else 0.0
        self.apply(snapshot, age_s=age)

    def apply(self, snapshot: HealthSnapshot, *, age_s: float = 0.0) -> bool:
        """Take `snapshot` (published `age_s` ago) unless it is older than the one held; True when taken."""
        current = self._snapshot
        if current is not None and (snapshot.version < current.version if snapshot.router_id == current.router_id
                                    else snapshot.published_at < current.published_at):
            return False
        now, wall = self._clock(), self._wall()
        age = min(age_s, 86_400.0)
        self._published_mono = now - age
        self._heard_mono, self._heard_wall = now - age, wall - age
        self._health = {health.route: health for health in snapshot.routes}
        if current is None or snapshot.rules_digest != current.rules_digest or snapshot.rules != current.rules:
            self._rules = CompiledRules(snapshot.rules, digest=snapshot.rules_digest)
        if self._probes:
            self._probes = {key: probe for key, probe in self._probes.items() if probe[0] == self._period(key)}
        self._snapshot = snapshot
        return True

    def _period(self, key: str) -> float:
        health = self._health.get(key)
        return health.open_until if health is not None else 0.0

    def _probing(self, now: float) -> frozenset[str]:
        timeout = self._snapshot.probe_timeout_s if self._snapshot is not None else 30.0
        return frozenset(key for key, (period, sent) in self._probes.items()
                         if now - sent < timeout and period == self._period(key) and
                         self._health.get(key, _CLOSED).state in (OPEN, HALF_OPEN))


_CLOSED = RouteHealth(route="")
