"""RoutingView without a server: snapshot ordering, local probes, staleness, wire compatibility."""

from __future__ import annotations

import statistics
import time

import pytest
from nats.aio.client import Client

from catalog import loader
from proto import codec
from proto.routing import HALF_OPEN, OPEN, Action, AttemptReport, HealthSnapshot, Match, RouteHealth, Rule, RuleSet
from services.router.client import RequestFacts, RoutingView
from services.router.errors import UnknownModel

PROVIDERS = ("openai", "azure", "anthropic", "bedrock")


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clocks() -> tuple[FakeClock, FakeClock]:
    return FakeClock(500.0), FakeClock(1_700_000_000.0)


@pytest.fixture
def view(clocks: tuple[FakeClock, FakeClock]) -> RoutingView:
    mono, wall = clocks
    return RoutingView(Client(), catalog=loader.load(), providers=PROVIDERS, stale_after_s=3.0, clock=mono, wall=wall)


NO_RULES = RuleSet()


def snapshot(version: int, *routes: RouteHealth, router_id: str = "r1", published_at: float = 1_700_000_000.0,
             rules: RuleSet = NO_RULES, digest: str = "") -> HealthSnapshot:
    return HealthSnapshot(version=version, routes=routes, published_at=published_at, router_id=router_id, rules=rules,
                          rules_digest=digest, probe_timeout_s=10.0)


def test_without_a_snapshot_it_routes_by_the_catalog(view: RoutingView) -> None:
    decision = view.decide(RequestFacts(model="gpt-4o-mini"))
    assert [c.key for c in decision.candidates] == ["openai/gpt-4o-mini", "azure/gpt-4o-mini"]
    assert view.status()["router"] == "no snapshot yet (routing by catalog order)" and not view.live


def test_snapshots_bring_rules_and_older_ones_are_ignored(view: RoutingView) -> None:
    rules = RuleSet(default_model="gpt-4o-mini", rules=(
        Rule("search", Action(model="gpt-4.1-mini"), Match(model="auto", tags={"team": "search"})),))
    assert view.apply(snapshot(5, rules=rules, digest="d5"))
    decision = view.decide(RequestFacts(model="auto", tags={"team": "search"}))
    assert decision.route_reason == "rule:search" and decision.model.id == "gpt-4.1-mini"
    assert not view.apply(snapshot(4))  # older, same router
    assert view.apply(snapshot(5, rules=rules, digest="d5"))  # a heartbeat
    assert view.apply(snapshot(1, router_id="r2", published_at=1_700_000_001.0))  # a restarted router, newer
    with pytest.raises(UnknownModel, match="'auto' needs a routing rule"):
        view.decide(RequestFacts(model="auto", tags={"team": "search"}))  # the new router's snapshot has no rules


def test_one_local_probe_per_half_open_period(view: RoutingView, clocks: tuple[FakeClock, FakeClock]) -> None:
    mono, _ = clocks
    primary = "openai/gpt-4o-mini"
    view.apply(snapshot(1, RouteHealth(primary, state=OPEN, retry_in_s=2.0, open_until=1_700_000_002.0, opens=1)))
    assert view.decide(RequestFacts(model="gpt-4o-mini")).fallback_reason == "breaker_open"
    mono.now += 2.0
    probe = view.decide(RequestFacts(model="gpt-4o-mini"))
    assert probe.candidates[0].key == primary and probe.candidates[0].state == HALF_OPEN
    others = [view.decide(RequestFacts(model="gpt-4o-mini")) for _ in range(3)]
    assert all(d.candidates[0].key == "azure/gpt-4o-mini" and d.fallback_reason == "breaker_open" for d in others)
    mono.now += 10.0  # probe_timeout_s from the snapshot: the outcome never came back
    released = view.decide(RequestFacts(model="gpt-4o-mini"))
    assert released.candidates[0].key == primary
    view.release(released)  # e.g. billing refused the request: no attempt, the probe is free again
    assert view.decide(RequestFacts(model="gpt-4o-mini")).candidates[0].key == primary
    # the router re-opened it (a new open period): skipped until that cool-down ends, then probed again
    view.apply(snapshot(2, RouteHealth(primary, state=OPEN, retry_in_s=4.0, open_until=1_700_000_016.0, opens=2)))
    assert view.decide(RequestFacts(model="gpt-4o-mini")).candidates[0].key == "azure/gpt-4o-mini"
    mono.now += 4.0
    assert view.decide(RequestFacts(model="gpt-4o-mini")).candidates[0].key == primary
    view.apply(snapshot(3, RouteHealth(primary)))  # closed again
    assert all(view.decide(RequestFacts(model="gpt-4o-mini")).candidates[0].key == primary for _ in range(3))


def test_stale_when_the_router_goes_quiet(view: RoutingView, clocks: tuple[FakeClock, FakeClock]) -> None:
    mono, wall = clocks
    view.apply(snapshot(7, RouteHealth("azure/gpt-4o", state=OPEN, retry_in_s=30.0, open_until=1.0), digest="abc"))
    status = view.status()
    assert status["router"] == "live" and status["routing_version"] == 7 and status["rules_digest"] == "abc"
    assert status["routes_not_closed"] == ["azure/gpt-4o"]
    assert not any(isinstance(value, bool) for value in status.values())  # never flips the proxy's readiness
    mono.now += 3.5
    wall.now += 3.5
    assert view.status()["router"] == "stale since 2023-11-14T22:13:20Z" and not view.live
    assert view.decide(RequestFacts(model="gpt-4o")).candidates[0].key == "openai/gpt-4o"


async def test_reports_never_raise(view: RoutingView) -> None:
    await view.report(AttemptReport("openai", "gpt-4o-mini", 503, 12.0, error_type="http_error"))
    assert view.reports_dropped == 1  # not connected: counted, not raised
    view.report_nowait(AttemptReport("openai", "gpt-4o-mini", 200, 12.0))
    await view.stop()
    assert view.reports_dropped == 2


def test_yesterdays_messages_decode_with_todays_schema() -> None:
    old = codec.decode(b'{"version": 3, "routes": [{"route": "openai/gpt-4o", "state": "open"}]}', HealthSnapshot)
    assert old.routes[0].retry_in_s == 0.0 and old.rules == RuleSet() and old.probe_timeout_s == 30.0
    report = codec.decode(b'{"provider": "openai", "upstream_model": "gpt-4o", "status_code": 200, '
                          b'"latency_ms": 5.5}', AttemptReport)
    assert report.route == "openai/gpt-4o" and report.timestamp_ms == 0
    full = snapshot(2, RouteHealth("a/b", latency_ms=3.0), rules=RuleSet(rules=(Rule("r", Action(model="m")),)))
    assert codec.decode(codec.encode(full), HealthSnapshot) == full


def test_view_decide_is_fast(view: RoutingView) -> None:
    rules = RuleSet(default_model="gpt-4o-mini", rules=tuple(
        Rule(f"r{i}", Action(model="gpt-4.1-mini"), Match(model="gpt-*", tags={"team": f"t{i}"})) for i in range(20)))
    routes = tuple(RouteHealth(f"openai/m{i}", latency_ms=10.0) for i in range(100))
    view.apply(snapshot(1, *routes, RouteHealth("openai/gpt-4o-mini", state=OPEN, retry_in_s=60, open_until=9.0),
                        rules=rules))
    facts = RequestFacts(model="gpt-4o-mini", tags={"team": "none"}, prompt_tokens=300)
    timings = []
    for _ in range(3000):
        started = time.perf_counter()
        view.decide(facts)
        timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.0001
