"""Per-route health: sliding-window error ratio, latency EWMA and a circuit breaker (pure, injectable clock)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

import msgspec

from proto.routing import CLOSED, HALF_OPEN, OPEN, AttemptReport, RouteHealth
from services.router.outcomes import counts_for_health, retry_reason


class BreakerConfig(msgspec.Struct, frozen=True):
    """Breaker defaults; each is overridable with a ROUTER_BREAKER_* variable (services/router/settings.py).

    closed → open   when, over the last `window_s` seconds (at most `window_max` outcomes), at least
                    `min_requests` outcomes were seen and failures/outcomes ≥ `error_ratio` or the latency
                    EWMA ≥ `slow_ms`; or after `consecutive_failures` failures in a row, whatever the count.
    open → half-open after the cool-down: `cooldown_s` × `cooldown_factor`^(openings so far), at most
                    `max_cooldown_s`. Openings count up until the route stays closed for `window_s`.
    half-open       the first outcome of an attempt started since the opening decides: success (and
                    faster than `slow_ms`) closes, failure re-opens with the next, longer cool-down.
    """

    window_s: float = 60.0
    window_max: int = 100
    min_requests: int = 5
    error_ratio: float = 0.5
    consecutive_failures: int = 10  # 0: off
    slow_ms: float = 30_000.0  # latency = TTFT when streamed, full latency otherwise; 0: off
    ewma_alpha: float = 0.3
    cooldown_s: float = 10.0
    cooldown_factor: float = 2.0
    max_cooldown_s: float = 300.0
    probe_timeout_s: float = 30.0  # a half-open probe not reported within this may be repeated


class Transition(msgspec.Struct, frozen=True):
    route: str
    before: str
    after: str
    reason: str  # error_ratio | consecutive_failures | slow | cooldown_elapsed | probe_ok | probe_failed
    cooldown_s: float = 0.0


class _Route:
    """Mutable state of one route's breaker and window."""

    __slots__ = ("state", "open_until", "opened_at", "closed_at", "since", "opens", "window", "failures",
                 "streak", "ewma", "sampled_at", "probe_at")

    def __init__(self) -> None:
        self.state = CLOSED
        self.open_until = 0.0
        self.opened_at = 0.0
        self.closed_at: float | None = None
        self.since = 0.0  # attempts started before this say nothing about the current state
        self.opens = 0
        self.window: deque[tuple[float, bool]] = deque()
        self.failures = 0
        self.streak = 0
        self.ewma: float | None = None
        self.sampled_at = 0.0
        self.probe_at: float | None = None


class HealthBook:
    """Every route's breaker. Feed it outcomes (`record`, `record_attempt`), call `tick` to let cool-downs
    elapse, read `snapshot`. `clock` returns seconds (time.time in the router; a fake in tests)."""

    def __init__(self, config: BreakerConfig | None = None, *, clock: Callable[[], float] = time.time,
                 max_routes: int = 10_000) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._max_routes = max_routes
        self._routes: dict[str, _Route] = {}

    def state(self, route: str) -> str:
        entry = self._routes.get(route)
        return entry.state if entry is not None else CLOSED

    def record_attempt(self, report: AttemptReport) -> tuple[str, list[Transition]]:
        """Classify a proxy's report (`ok`, `failure` or `ignored`) and record it."""
        if not counts_for_health(report.status_code, report.error_type):
            return "ignored", []
        failed = retry_reason(report.status_code, report.error_type) is not None
        latency = report.ttft_ms if report.ttft_ms is not None else report.latency_ms
        started = report.timestamp_ms / 1000 if report.timestamp_ms else None
        return ("failure" if failed else "ok"), self.record(report.route, ok=not failed,
                                                            latency_ms=None if failed else latency, started=started)

    def record(self, route: str, *, ok: bool, latency_ms: float | None = None,
               started: float | None = None) -> list[Transition]:
        """One outcome; returns the state changes it caused, in order (a cool-down that elapsed unnoticed
        comes first). `started`: when the attempt began (outcomes of attempts begun before the current
        state are stale evidence and only age out)."""
        entry = self._routes.get(route)
        if entry is None:
            if len(self._routes) >= self._max_routes:
                return []
            entry = self._routes[route] = _Route()
        now = self._clock()
        changes = [t for t in (self._advance(route, entry, now),) if t is not None]
        if started is not None and started < entry.since:
            return changes
        config = self.config
        if entry.state == HALF_OPEN:
            slow = bool(config.slow_ms) and latency_ms is not None and latency_ms >= config.slow_ms
            if ok and not slow:
                return [*changes, self._close(route, entry, now, latency_ms)]
            return [*changes, self._open(route, entry, now, "probe_failed")]
        self._push(entry, now, ok, latency_ms)
        if entry.state != CLOSED:
            return changes
        count = len(entry.window)
        reason = None
        if config.consecutive_failures and entry.streak >= config.consecutive_failures:
            reason = "consecutive_failures"
        elif count >= config.min_requests and entry.failures / count >= config.error_ratio:
            reason = "error_ratio"
        elif config.slow_ms and count >= config.min_requests and entry.ewma is not None \
                and entry.ewma >= config.slow_ms:
            reason = "slow"
        return [self._open(route, entry, now, reason)] if reason else []

    def allow(self, route: str) -> bool:
        """Single-process probe gate: closed lets everything through, open nothing, half-open one probe
        (again after `probe_timeout_s` when its outcome never came)."""
        entry = self._routes.get(route)
        if entry is None:
            return True
        now = self._clock()
        self._advance(route, entry, now)
        if entry.state == CLOSED:
            return True
        if entry.state == OPEN:
            return False
        if entry.probe_at is None or now - entry.probe_at >= self.config.probe_timeout_s:
            entry.probe_at = now
            return True
        return False

    def tick(self) -> list[Transition]:
        """Let cool-downs elapse: open routes whose time has come turn half-open."""
        now = self._clock()
        changes = []
        for route, entry in self._routes.items():
            transition = self._advance(route, entry, now)
            if transition is not None:
                changes.append(transition)
        return changes

    def snapshot(self) -> tuple[RouteHealth, ...]:
        """Every known route's health now (windows trimmed to `window_s`)."""
        now = self._clock()
        out = []
        for route, entry in self._routes.items():
            self._trim(entry, now)
            recent = entry.ewma is not None and now - entry.sampled_at <= self.config.window_s
            out.append(RouteHealth(
                route=route, state=entry.state, opens=entry.opens, requests=len(entry.window),
                failures=entry.failures, latency_ms=round(entry.ewma, 3) if recent and entry.ewma is not None else None,
                retry_in_s=round(max(entry.open_until - now, 0.0), 3) if entry.state == OPEN else 0.0,
                open_until=entry.open_until if entry.state != CLOSED else 0.0))
        return tuple(out)

    def restore(self, routes: Iterable[RouteHealth], *, published_at: float) -> None:
        """Take over breaker states and latencies from a previous router's snapshot (windows start empty)."""
        for health in routes:
            entry = self._routes.setdefault(health.route, _Route())
            entry.state, entry.opens = health.state, health.opens
            if health.state != CLOSED:
                entry.open_until = health.open_until
                entry.opened_at = entry.since = min(published_at, health.open_until)
            if health.latency_ms is not None:
                entry.ewma, entry.sampled_at = health.latency_ms, published_at

    # ------------------------------------------------------------------------------------ internals

    def _advance(self, route: str, entry: _Route, now: float) -> Transition | None:
        if entry.state == OPEN and now >= entry.open_until:
            entry.state, entry.probe_at = HALF_OPEN, None
            return Transition(route, OPEN, HALF_OPEN, "cooldown_elapsed")
        return None

    def _push(self, entry: _Route, now: float, ok: bool, latency_ms: float | None) -> None:
        entry.window.append((now, not ok))
        entry.failures += not ok
        entry.streak = 0 if ok else entry.streak + 1
        if ok and latency_ms is not None:
            alpha = self.config.ewma_alpha
            entry.ewma = latency_ms if entry.ewma is None else alpha * latency_ms + (1 - alpha) * entry.ewma
            entry.sampled_at = now
        self._trim(entry, now)

    def _trim(self, entry: _Route, now: float) -> None:
        window, horizon = entry.window, now - self.config.window_s
        while window and (len(window) > self.config.window_max or window[0][0] < horizon):
            entry.failures -= window.popleft()[1]

    def _open(self, route: str, entry: _Route, now: float, reason: str) -> Transition:
        config = self.config
        if entry.state == CLOSED and entry.closed_at is not None and now - entry.closed_at > config.window_s:
            entry.opens = 0  # stayed healthy long enough: the cool-down starts small again
        cooldown = min(config.cooldown_s * config.cooldown_factor ** entry.opens, config.max_cooldown_s)
        before = entry.state
        entry.opens += 1
        entry.state, entry.opened_at, entry.open_until, entry.probe_at = OPEN, now, now + cooldown, None
        entry.since = now
        return Transition(route, before, OPEN, reason, cooldown_s=cooldown)

    def _close(self, route: str, entry: _Route, now: float, latency_ms: float | None) -> Transition:
        entry.state, entry.closed_at, entry.since, entry.probe_at = CLOSED, now, now, None
        entry.window.clear()
        entry.failures = entry.streak = 0
        entry.open_until = 0.0
        if latency_ms is not None:
            entry.ewma, entry.sampled_at = latency_ms, now
        return Transition(route, HALF_OPEN, CLOSED, "probe_ok")
