"""The breaker state machine and health window, driven by a fake clock; outcome classification."""

from __future__ import annotations

import pytest

from proto.routing import CLOSED, HALF_OPEN, OPEN, AttemptReport
from services.router.health import BreakerConfig, HealthBook
from services.router.outcomes import backoff_s, counts_for_health, retry_reason

ROUTE = "openai/gpt-4o-mini"


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def book(clock: FakeClock, **config: float) -> HealthBook:
    defaults: dict[str, float] = {"min_requests": 5, "error_ratio": 0.5, "cooldown_s": 10.0, "cooldown_factor": 2.0,
                                  "max_cooldown_s": 60.0, "window_s": 60.0, "consecutive_failures": 0}
    return HealthBook(BreakerConfig(**{**defaults, **config}), clock=clock)  # type: ignore[arg-type]


def fail(health: HealthBook, times: int = 1, route: str = ROUTE) -> list[str]:
    return [change.after for _ in range(times) for change in health.record(route, ok=False)]


def test_opens_after_min_requests_at_the_error_ratio_not_before() -> None:
    clock = FakeClock()
    health = book(clock)
    assert fail(health, 4) == [] and health.state(ROUTE) == CLOSED  # 4 < min_requests
    (transition,) = health.record(ROUTE, ok=False)
    assert (transition.before, transition.after) == (CLOSED, OPEN)
    assert transition.reason == "error_ratio" and transition.cooldown_s == 10.0
    assert health.state(ROUTE) == OPEN and not health.allow(ROUTE)


def test_a_healthy_majority_keeps_it_closed() -> None:
    health = book(FakeClock())
    for _ in range(6):
        health.record(ROUTE, ok=True, latency_ms=100)
    assert fail(health, 5) == []  # 5 of 11 < 50 %
    assert fail(health, 1) == [OPEN]  # 6 of 12


def test_consecutive_failures_open_a_busy_route_quickly() -> None:
    health = book(FakeClock(), consecutive_failures=10)
    for _ in range(90):
        health.record(ROUTE, ok=True, latency_ms=100)
    assert fail(health, 9) == []
    assert fail(health, 1) == [OPEN]


def test_half_open_after_the_cool_down_lets_one_probe_through() -> None:
    clock = FakeClock()
    health = book(clock, probe_timeout_s=30)
    fail(health, 5)
    clock.advance(9.9)
    assert health.tick() == [] and not health.allow(ROUTE)
    clock.advance(0.1)
    changes = health.tick()
    assert [(c.before, c.after, c.reason) for c in changes] == [(OPEN, HALF_OPEN, "cooldown_elapsed")]
    assert health.allow(ROUTE)  # the probe
    assert not health.allow(ROUTE) and not health.allow(ROUTE)  # everyone else waits for its outcome
    clock.advance(30)
    assert health.allow(ROUTE)  # the probe's outcome never came: another one


def test_probe_success_closes_and_starts_a_fresh_window() -> None:
    clock = FakeClock()
    health = book(clock)
    fail(health, 5)
    clock.advance(10)
    assert health.allow(ROUTE)
    (transition,) = health.record(ROUTE, ok=True, latency_ms=80)
    assert (transition.after, transition.reason) == (CLOSED, "probe_ok")
    assert health.allow(ROUTE) and health.allow(ROUTE)
    (snapshot,) = health.snapshot()
    assert (snapshot.state, snapshot.requests, snapshot.failures, snapshot.latency_ms) == (CLOSED, 0, 0, 80.0)
    assert fail(health, 4) == []  # the old failures are gone: min_requests counts again from zero


def test_probe_failure_reopens_with_an_extended_capped_cool_down() -> None:
    clock = FakeClock()
    health = book(clock)
    fail(health, 5)
    cooldowns = []
    for _ in range(5):
        (snapshot,) = health.snapshot()
        cooldowns.append(snapshot.retry_in_s)
        clock.advance(snapshot.retry_in_s)
        assert health.state(ROUTE) == OPEN and health.allow(ROUTE) and health.state(ROUTE) == HALF_OPEN
        (transition,) = health.record(ROUTE, ok=False)
        assert (transition.before, transition.after) == (HALF_OPEN, OPEN)
        assert transition.reason == "probe_failed"
    assert cooldowns == [10.0, 20.0, 40.0, 60.0, 60.0]
    assert health.snapshot()[0].opens == 6


def test_flapping_keeps_the_longer_cool_down_a_lasting_recovery_resets_it() -> None:
    clock = FakeClock()
    health = book(clock, window_s=60)
    fail(health, 5)
    clock.advance(10)
    health.record(ROUTE, ok=False)  # probe fails: 20 s
    clock.advance(20)
    health.record(ROUTE, ok=True)  # probe succeeds: closed
    clock.advance(5)
    transition = fail(health, 5)
    assert transition == [OPEN] and health.snapshot()[0].retry_in_s == 40.0  # re-opened soon: still escalating
    clock.advance(40)
    health.record(ROUTE, ok=True)
    clock.advance(61)  # stays closed longer than the window
    fail(health, 5)
    assert health.snapshot()[0].retry_in_s == 10.0


def test_a_probe_reported_before_any_tick_reports_both_transitions() -> None:
    clock = FakeClock()
    health = book(clock)
    fail(health, 5)
    clock.advance(10)  # nobody called tick(): the cool-down elapsed unnoticed
    changes = health.record(ROUTE, ok=True, latency_ms=50)
    assert [(c.before, c.after, c.reason) for c in changes] == [(OPEN, HALF_OPEN, "cooldown_elapsed"),
                                                                 (HALF_OPEN, CLOSED, "probe_ok")]


def test_outcomes_of_attempts_started_before_the_opening_do_not_decide_the_probe() -> None:
    clock = FakeClock()
    health = book(clock)
    started_early = clock.now
    clock.advance(1)
    fail(health, 5)
    clock.advance(10)
    assert health.tick()[0].after == HALF_OPEN
    assert health.record(ROUTE, ok=False, started=started_early) == []  # a slow request from before
    assert health.state(ROUTE) == HALF_OPEN
    assert [c.after for c in health.record(ROUTE, ok=True, started=clock.now - 0.5)] == [CLOSED]
    assert health.record(ROUTE, ok=False, started=started_early) == [] and health.snapshot()[0].failures == 0


def test_latency_ewma_and_the_slow_threshold() -> None:
    clock = FakeClock()
    health = book(clock, slow_ms=1000, ewma_alpha=0.5, min_requests=3)
    assert health.record(ROUTE, ok=True, latency_ms=400) == []
    assert health.record(ROUTE, ok=True, latency_ms=1600) == []  # ewma 1000, but only 2 outcomes
    assert health.snapshot()[0].latency_ms == 1000.0
    (transition,) = health.record(ROUTE, ok=True, latency_ms=1000)
    assert (transition.after, transition.reason) == (OPEN, "slow")
    clock.advance(10)
    assert health.allow(ROUTE)
    assert [c.after for c in health.record(ROUTE, ok=True, latency_ms=2000)] == [OPEN]  # a slow probe fails


def test_the_window_forgets_by_age_and_by_count() -> None:
    clock = FakeClock()
    health = book(clock, window_s=60, window_max=10, min_requests=100)
    fail(health, 4)
    clock.advance(61)
    for _ in range(12):
        health.record(ROUTE, ok=True, latency_ms=50)
    (snapshot,) = health.snapshot()
    assert (snapshot.requests, snapshot.failures, snapshot.latency_ms) == (10, 0, 50.0)
    clock.advance(61)
    (snapshot,) = health.snapshot()
    assert (snapshot.requests, snapshot.latency_ms) == (0, None)  # no recent sample: latency unknown


def test_attempt_reports_are_classified() -> None:
    health = book(FakeClock(), min_requests=100)

    def report(status: int, error_type: str | None = None, ttft: float | None = None) -> str:
        return health.record_attempt(AttemptReport("openai", "gpt-4o-mini", status, 900.0, ttft, error_type))[0]

    assert [report(200), report(400, "http_error"), report(404, "http_error")] == ["ok", "ok", "ok"]
    assert [report(429, "http_error"), report(503, "http_error"), report(504, "timeout"),
            report(502, "ClientConnectorError")] == ["failure"] * 4
    assert report(499, "client_closed") == "ignored"
    (snapshot,) = health.snapshot()
    assert (snapshot.route, snapshot.requests, snapshot.failures) == (ROUTE, 7, 4)
    report(200, ttft=100.0)
    assert health.snapshot()[0].latency_ms == pytest.approx(0.3 * 100 + 0.7 * 900)  # TTFT preferred when streamed


def test_restore_takes_over_breaker_states() -> None:
    clock = FakeClock()
    old = book(clock)
    fail(old, 5)
    old.record("azure/gpt-4o-mini", ok=True, latency_ms=70)
    routes = old.snapshot()
    clock.advance(3)
    new = book(clock)
    new.restore(routes, published_at=clock.now - 3)
    assert new.state(ROUTE) == OPEN and new.snapshot()[0].retry_in_s == 7.0
    assert new.snapshot()[1].latency_ms == 70.0
    clock.advance(7)
    assert new.tick()[0].after == HALF_OPEN
    assert new.record(ROUTE, ok=False)[0].cooldown_s == 20.0  # the exponent carried over


def test_routes_beyond_the_limit_are_not_tracked() -> None:
    health = HealthBook(BreakerConfig(), clock=FakeClock(), max_routes=2)
    for name in ("a/1", "b/2", "c/3"):
        health.record(name, ok=True)
    assert [r.route for r in health.snapshot()] == ["a/1", "b/2"]


@pytest.mark.parametrize(("status", "error_type", "reason"), [
    (200, None, None), (400, "http_error", None), (401, "http_error", None), (499, "client_closed", None),
    (429, "http_error", "rate_limited"), (503, "http_error", "error:503"), (500, "http_error", "error:500"),
    (408, "http_error", "error:408"), (504, "timeout", "timeout"), (504, "http_error", "error:504"),
    (502, "ClientConnectorError", "connect_error"), (502, "ServerDisconnectedError", "connect_error"),
    (502, "http_error", "error:502"), (502, "upstream_stream_error", "error:502"),
])
def test_retry_reason(status: int, error_type: str | None, reason: str | None) -> None:
    assert retry_reason(status, error_type) == reason


def test_health_ignores_callers_who_hung_up_and_backoff_is_jittered_and_capped() -> None:
    assert not counts_for_health(499, "client_closed") and counts_for_health(503, "http_error")
    assert backoff_s(1, rand=lambda: 1.0) == 0.05 and backoff_s(3, rand=lambda: 1.0) == 0.2
    assert backoff_s(10, rand=lambda: 1.0) == 0.5 and backoff_s(2, rand=lambda: 0.5) == 0.05
