"""RoutingView without a server: snapshot ordering, local probes, staleness, batched attempt reports, wire
compatibility."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Collection
from typing import Any, cast

import msgspec
import pytest
from nats.aio.client import Client

from catalog import loader
from proto import codec, subjects
from proto.routing import (
    HALF_OPEN,
    OPEN,
    Action,
    AttemptBatch,
    AttemptReport,
    HealthSnapshot,
    Match,
    RouteHealth,
    Rule,
    RuleSet,
)
from services.router import client as client_module
from services.router.client import MAX_BATCH_BYTES, MAX_BATCH_REPORTS, RequestFacts, RoutingView, encode_batches
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
    for latency in (12.0, 13.0, 14.0):
        view.report_nowait(AttemptReport("openai", "gpt-4o-mini", 200, latency))
    await view.stop()
    assert view.reports_dropped == 4  # one failed batch of three: every report in it counted


class RecordingNats:
    """Stands in for the NATS client: records publishes; the publishes numbered in `fail` (1-based) raise."""

    def __init__(self, fail: Collection[int] = ()) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.fail = set(fail)
        self.calls = 0

    async def publish(self, subject: str, payload: bytes = b"", **_: Any) -> None:
        self.calls += 1
        if self.calls in self.fail:
            raise ConnectionError("output buffer full")
        self.published.append((subject, payload))

    def batches(self) -> list[AttemptBatch]:
        assert all(subject == subjects.ROUTER_ATTEMPTS_BATCH for subject, _ in self.published), self.published
        return [codec.decode(data, AttemptBatch) for _, data in self.published]


def recording_view(nc: RecordingNats) -> RoutingView:
    return RoutingView(cast(Client, nc), catalog=loader.load(), providers=PROVIDERS, wall=lambda: 1_700_000_000.0)


async def settle(view: RoutingView) -> None:
    """Wait until the queued reports' tick has been sent, then one more tick (nothing else must follow)."""
    while view._sending is not None:  # noqa: SLF001 - the tick task, to wait for it rather than guess
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)


def report(i: int, status_code: int = 200, **fields: Any) -> AttemptReport:
    return AttemptReport("openai", "gpt-4o-mini", status_code, float(i), **fields)


async def test_reports_queued_within_one_tick_leave_as_one_batch_message() -> None:
    nc = RecordingNats()
    view = recording_view(nc)
    for i in range(7):
        view.report_nowait(report(i))
    assert nc.published == []  # nothing before the tick
    await settle(view)
    (batch,) = nc.batches()  # one message on ROUTER_ATTEMPTS_BATCH, none on ROUTER_ATTEMPTS
    assert [r.latency_ms for r in batch.reports] == [float(i) for i in range(7)]  # in the order queued
    assert [r.timestamp_ms for r in batch.reports] == [1_700_000_000_000 - i for i in range(7)]  # start stamped
    view.report_nowait(report(7, timestamp_ms=42))  # a later tick: a batch of its own; a given start is kept
    await settle(view)
    assert [[r.timestamp_ms for r in b.reports] for b in nc.batches()[1:]] == [[42]]
    await view.report(report(8, status_code=503, error_type="http_error"))  # immediate: a batch of one
    last = nc.batches()[-1]
    assert len(nc.published) == 3 and [(r.status_code, r.latency_ms) for r in last.reports] == [(503, 8.0)]
    await view.stop()
    assert len(nc.published) == 3 and view.reports_dropped == 0  # stop with an empty outbox sends nothing


async def test_a_large_tick_is_split_and_a_failed_batch_counts_all_its_reports() -> None:
    nc = RecordingNats(fail=(2,))
    view = recording_view(nc)
    for i in range(4_500):
        view.report_nowait(report(i))
    await settle(view)
    assert nc.calls == 3  # 2,000 + 2,000 + 500; the second publish failed
    assert [len(b.reports) for b in nc.batches()] == [2_000, 500]
    assert [r.latency_ms for r in nc.batches()[1].reports] == [float(i) for i in range(4_000, 4_500)]
    assert view.reports_dropped == 2_000 and view.status()["reports_dropped"] == 2_000
    await view.stop()


async def test_stop_sends_what_is_queued_before_the_tick() -> None:
    nc = RecordingNats()
    view = recording_view(nc)
    view.report_nowait(report(1))
    view.report_nowait(report(2))
    await view.stop()
    assert [[r.latency_ms for r in b.reports] for b in nc.batches()] == [[1.0, 2.0]]


def test_encode_batches_respects_both_limits_and_keeps_the_order() -> None:
    assert encode_batches([]) == []
    reports = [report(i) for i in range(7)]
    by_count = encode_batches(reports, max_reports=3)
    assert [count for _, count in by_count] == [3, 3, 1]
    assert [r for data, _ in by_count for r in codec.decode(data, AttemptBatch).reports] == reports
    one = len(codec.encode(AttemptBatch((report(0),))))
    by_size = encode_batches(reports, max_bytes=3 * one)  # a few reports per message, whatever the count limit
    assert len(by_size) > 2 and all(len(data) <= 3 * one for data, _ in by_size)
    assert [r for data, _ in by_size for r in codec.decode(data, AttemptBatch).reports] == reports
    assert [len(codec.decode(data, AttemptBatch).reports) for data, _ in by_size] == [n for _, n in by_size]
    alone = encode_batches(reports[:2], max_bytes=10)  # a report bigger than the limit still goes, alone
    assert [count for _, count in alone] == [1, 1]
    with pytest.raises(ValueError, match="max_reports"):
        encode_batches(reports, max_reports=0)


def test_encode_batches_default_limits() -> None:
    small = [report(i) for i in range(4_500)]
    assert [count for _, count in encode_batches(small)] == [MAX_BATCH_REPORTS, MAX_BATCH_REPORTS, 500]
    big = [report(i, error_type="x" * 1_000) for i in range(MAX_BATCH_REPORTS)]  # ~2 MiB in one would be too big
    batches = encode_batches(big)
    assert len(batches) >= 4 and all(len(data) <= MAX_BATCH_BYTES for data, _ in batches)
    assert sum(count for _, count in batches) == MAX_BATCH_REPORTS
    assert [r for data, _ in batches for r in codec.decode(data, AttemptBatch).reports] == big


def test_dropped_reports_are_logged_at_milestones_not_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[dict[str, Any]] = []

    class Log:
        def warning(self, event: str, **fields: Any) -> None:
            logged.append({"event": event, **fields})

    monkeypatch.setattr(client_module, "log", Log())
    view = recording_view(RecordingNats())
    for count in (1, 5, 3, 1, 2_000, 7_990, 1, 1):
        view._dropped(count, ConnectionError())  # noqa: SLF001
    # totals 1, 6, 9, 10, 2010, 10000, 10001, 10002: logged when reaching 1, 10, (100 and 1000), 10,000
    assert [(entry["dropped"], entry["batch"]) for entry in logged] == [(1, 1), (10, 1), (2_010, 2_000),
                                                                        (10_000, 7_990)]
    assert view.reports_dropped == 10_002 and logged[0]["error"] == "ConnectionError"


def test_yesterdays_messages_decode_with_todays_schema() -> None:
    old = codec.decode(b'{"version": 3, "routes": [{"route": "openai/gpt-4o", "state": "open"}]}', HealthSnapshot)
    assert old.routes[0].retry_in_s == 0.0 and old.rules == RuleSet() and old.probe_timeout_s == 30.0
    single = codec.decode(b'{"provider": "openai", "upstream_model": "gpt-4o", "status_code": 200, '
                          b'"latency_ms": 5.5}', AttemptReport)
    assert single.route == "openai/gpt-4o" and single.timestamp_ms == 0
    batch = codec.decode(b'{"reports": [{"provider": "openai", "upstream_model": "gpt-4o", "status_code": 200, '
                         b'"latency_ms": 5.5}], "added_later": 1}', AttemptBatch)  # unknown fields tolerated
    assert batch.reports == (single,) and codec.decode(b'{"reports": []}', AttemptBatch).reports == ()
    with pytest.raises(msgspec.ValidationError):  # a lone report is not a batch
        codec.decode(codec.encode(single), AttemptBatch)
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
