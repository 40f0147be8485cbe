"""A real nats-server and a real router process: breakers seen by RoutingView, probes, rules hot reload, outages,
attempt reports in batches (and single, from older proxies), malformed batches."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from catalog import loader
from catalog.schema import Catalog
from launcher import procs
from launcher.nats import NatsServer
from proto import codec, subjects
from proto.routing import HALF_OPEN, OPEN, AttemptBatch, AttemptReport, RouteHealth
from services.router.client import Decision, RequestFacts, RoutingView

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

RULES_V1 = """
default_model = "gpt-4o-mini"

[[rules]]
name = "search"
match = { model = "auto", tags = { team = "search" } }
action = { model = "gpt-4.1-mini" }
"""
RULES_V2 = RULES_V1.replace('name = "search"', 'name = "search-v2"').replace('"gpt-4.1-mini"', '"gpt-4.1"')
RULES_BAD = RULES_V2.replace('action = { model = "gpt-4.1" }', 'action = { model = "gpt-4.1", strategy = "fast" }')


class RouterProcess:
    """`python -m services.router` on a free port."""

    def __init__(self, data_dir: Path, nats_url: str, **extra_env: str) -> None:
        self.port = procs.free_port()
        self.log_path = data_dir / f"router-{self.port}.log"
        self.env = {**os.environ, "NATS_URL": nats_url, "ROUTER_PORT": str(self.port), "PYTHONUNBUFFERED": "1",
                    "ROUTER_BREAKER_COOLDOWN_S": "1", "ROUTER_BREAKER_MIN_REQUESTS": "3",
                    "ROUTER_BREAKER_PROBE_TIMEOUT_S": "5", **extra_env}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> subprocess.Popen[bytes]:
        self.proc = procs.spawn([sys.executable, "-m", "services.router"], env=self.env, log_path=self.log_path,
                                cwd=ROOT)
        return self.proc

    def start(self) -> None:
        proc = self.spawn()
        procs.wait_until(lambda: procs.http_ok(f"{self.url}/readyz"), 60, what="router", proc=proc,
                         log_path=self.log_path)

    def stop(self) -> None:
        if self.proc is not None:
            procs.terminate(self.proc)

    def kill(self) -> None:
        if self.proc is not None:
            procs.kill(self.proc)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def ready(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/readyz")[1]))

    def metric(self, name: str, **labels: str) -> float | None:
        wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(wanted + " "):
                return float(line.rsplit(" ", 1)[1])
        return None


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    data_dir = tmp_path_factory.mktemp("router-nats")
    server = NatsServer(data_dir / "nats", port=procs.free_port(), log_path=data_dir / "nats.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def routers(tmp_path: Path, nats_server: NatsServer) -> Iterator[Callable[..., RouterProcess]]:
    """Start router processes against the module's NATS; all are stopped after the test."""
    started: list[RouterProcess] = []

    def make(**env: str) -> RouterProcess:
        router = RouterProcess(tmp_path, nats_server.url, **env)
        started.append(router)
        router.start()
        return router

    yield make
    for router in started:
        router.stop()


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return loader.load()


@pytest.fixture
async def connect(nats_server: NatsServer, catalog: Catalog) -> AsyncIterator[Callable[..., Any]]:
    """Open RoutingViews as a proxy would (own NATS connection each); closed after the test."""
    opened: list[tuple[Client, RoutingView]] = []

    async def make(stale_after_s: float = 3.0) -> RoutingView:
        nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        view = RoutingView(nc, catalog=catalog, providers=catalog.providers, stale_after_s=stale_after_s)
        await view.start()
        opened.append((nc, view))
        return view

    yield make
    for nc, view in opened:
        await view.stop()
        await nc.close()


async def eventually(check: Callable[[], T | None], timeout: float = 5.0, interval: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def health_of(view: RoutingView, route: str, **wanted: object) -> RouteHealth | None:
    """The route's health in the view's snapshot when it has the `wanted` field values, else None."""
    snapshot = view.snapshot
    health = next((h for h in snapshot.routes if h.route == route), None) if snapshot else None
    if health is None or any(getattr(health, field) != value for field, value in wanted.items()):
        return None
    return health


def first_key(view: RoutingView, model: str) -> str:
    return view.decide(RequestFacts(model=model)).candidates[0].key


async def fail(view: RoutingView, provider: str, model: str, times: int, status: int = 503) -> None:
    for _ in range(times):
        await view.report(AttemptReport(provider, model, status, 12.0, error_type="http_error"))


async def test_failures_open_the_breaker_then_a_probe_closes_it(
        routers: Callable[..., RouterProcess], connect: Callable[..., Any]) -> None:
    router = routers()
    view: RoutingView = await connect()
    await eventually(lambda: view.live)
    assert first_key(view, "gpt-4o-mini") == "openai/gpt-4o-mini"

    await fail(view, "openai", "gpt-4o-mini", 3)
    reported = time.monotonic()
    await eventually(lambda: first_key(view, "gpt-4o-mini") == "azure/gpt-4o-mini", timeout=2.0)
    seen_after = time.monotonic() - reported
    decision = view.decide(RequestFacts(model="gpt-4o-mini"))
    assert decision.fallback_reason == "breaker_open" and decision.first_choice.key == "openai/gpt-4o-mini"
    assert [c.key for c in decision.candidates] == ["azure/gpt-4o-mini"]  # never another family
    assert seen_after < 2.0
    assert router.metric("routeur_router_breaker_state", route="openai/gpt-4o-mini") == 2.0
    assert router.metric("routeur_router_attempts_total", route="openai/gpt-4o-mini", outcome="failure") == 3.0
    assert router.ready()["routes_not_closed"] == {"openai/gpt-4o-mini": OPEN}

    # after the 1 s cool-down: one probe goes to the primary, everything else still to the fallback
    def probe() -> Decision | None:
        decision = view.decide(RequestFacts(model="gpt-4o-mini"))
        return decision if decision.candidates[0].key == "openai/gpt-4o-mini" else None

    assert (await eventually(probe, timeout=3.0)).candidates[0].state == HALF_OPEN
    assert first_key(view, "gpt-4o-mini") == "azure/gpt-4o-mini"
    await view.report(AttemptReport("openai", "gpt-4o-mini", 200, 40.0, ttft_ms=20.0))
    await eventually(lambda: health_of(view, "openai/gpt-4o-mini", state="closed"))
    assert all(first_key(view, "gpt-4o-mini") == "openai/gpt-4o-mini" for _ in range(5))
    assert router.metric("routeur_router_breaker_state", route="openai/gpt-4o-mini") == 0.0
    assert router.metric("routeur_router_breaker_transitions_total", route="openai/gpt-4o-mini",
                         state="half_open") == 1.0


async def test_a_failed_probe_reopens_with_a_longer_cool_down(
        routers: Callable[..., RouterProcess], connect: Callable[..., Any]) -> None:
    routers()
    view: RoutingView = await connect()
    await eventually(lambda: view.live)
    await fail(view, "anthropic", "claude-sonnet-4-20250514", 3)
    route = "anthropic/claude-sonnet-4-20250514"
    first = await eventually(lambda: health_of(view, route, state=OPEN))
    assert first.opens == 1 and first.retry_in_s <= 1.0
    await eventually(lambda: first_key(view, "claude-sonnet-4") == route, timeout=3.0)  # the probe
    await fail(view, "anthropic", "claude-sonnet-4-20250514", 1, status=504)
    second = await eventually(lambda: health_of(view, route, opens=2))
    assert second.state == OPEN and 1.0 < second.retry_in_s <= 2.0
    assert first_key(view, "claude-sonnet-4") == "bedrock/us.anthropic.claude-sonnet-4-20250514-v1:0"


async def test_failures_queued_in_one_tick_reach_the_router_as_one_batch_and_open_the_breaker(
        nats_server: NatsServer, routers: Callable[..., RouterProcess], connect: Callable[..., Any]) -> None:
    router = routers()
    view: RoutingView = await connect()
    await eventually(lambda: view.live)
    route = "mistral/mistral-small-latest"
    assert first_key(view, "mistral-small") == route
    heard: list[AttemptBatch] = []

    async def on_batch(msg: Msg) -> None:
        heard.append(codec.decode(msg.data, AttemptBatch))

    listener = await nats.connect(nats_server.url)
    await listener.subscribe(subjects.ROUTER_ATTEMPTS_BATCH, cb=on_batch)
    await listener.flush()
    try:
        for _ in range(3):  # as the proxy does after each attempt: queued, sent at the next 20 ms tick
            view.report_nowait(AttemptReport("mistral", "mistral-small-latest", 503, 12.0, error_type="http_error"))
        await eventually(lambda: first_key(view, "mistral-small") != route, timeout=2.0)
        assert [c.key for c in view.decide(RequestFacts(model="mistral-small")).candidates] == [
            "together/mistralai/Mistral-Small-24B-Instruct-2501"]
        assert [[r.route for r in batch.reports] for batch in heard] == [[route] * 3]  # one message, 3 reports
        assert router.metric("routeur_router_report_batches_total") == 1.0
        assert router.metric("routeur_router_attempts_total", route=route, outcome="failure") == 3.0
        assert router.metric("routeur_router_breaker_state", route=route) == 2.0
    finally:
        await listener.close()


async def test_a_malformed_batch_does_not_kill_the_router_and_older_proxies_are_still_heard(
        nats_server: NatsServer, routers: Callable[..., RouterProcess], connect: Callable[..., Any]) -> None:
    router = routers()
    view: RoutingView = await connect()
    await eventually(lambda: view.live)
    secret = "sk-this-must-not-reach-the-log"
    nc = await nats.connect(nats_server.url)
    try:
        await nc.publish(subjects.ROUTER_ATTEMPTS_BATCH, b"{not json " + secret.encode())
        await nc.publish(subjects.ROUTER_ATTEMPTS_BATCH, b'{"reports": [{"provider": "' + secret.encode() + b'"}]}')
        await nc.publish(subjects.ROUTER_ATTEMPTS_BATCH, codec.encode(  # a lone report on the batch subject
            AttemptReport("groq", "llama-3.3-70b-versatile", 503, 1.0, error_type=secret)))
        # a proxy from before batching, during a rolling upgrade: one report per message on ROUTER_ATTEMPTS
        for _ in range(3):
            await nc.publish(subjects.ROUTER_ATTEMPTS, codec.encode(
                AttemptReport("groq", "llama-3.3-70b-versatile", 503, 12.0, error_type="http_error")))
        await nc.flush()
        await eventually(lambda: first_key(view, "llama-3.3-70b") != "groq/llama-3.3-70b-versatile", timeout=3.0)
    finally:
        await nc.close()
    assert router.proc is not None and router.proc.poll() is None and router.ready()["ready"] is True
    assert router.metric("routeur_router_bad_report_batches_total") == 3.0
    assert router.metric("routeur_router_attempts_total", route="groq/llama-3.3-70b-versatile",
                         outcome="failure") == 3.0
    # batches keep working after the bad ones
    await fail(view, "openai", "gpt-4o", 3)
    await eventually(lambda: first_key(view, "gpt-4o") == "azure/gpt-4o", timeout=2.0)
    log = router.log_path.read_text()
    assert log.count("attempt_report_undecodable") == 3 and secret not in log


async def test_rules_edits_apply_without_restart_and_bad_edits_keep_the_last_good_rules(
        tmp_path: Path, routers: Callable[..., RouterProcess], connect: Callable[..., Any]) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULES_V1)
    router = routers(ROUTER_RULES=str(rules_file))
    view: RoutingView = await connect()
    search = RequestFacts(model="auto", tags={"team": "search", "env": "prod"})

    def reason_and_model() -> tuple[str, str]:
        decision = view.decide(search)
        return decision.route_reason, decision.model.id

    await eventually(lambda: reason_and_model() == ("rule:search", "gpt-4.1-mini"))
    assert view.decide(RequestFacts(model="auto")).model.id == "gpt-4o-mini"  # default_model

    rules_file.write_text(RULES_V2)
    await eventually(lambda: reason_and_model() == ("rule:search-v2", "gpt-4.1"), timeout=4.0)
    good_digest = router.ready()["rules"]["digest"]

    rules_file.write_text(RULES_BAD)
    await eventually(lambda: view.snapshot is not None and view.snapshot.rules_error, timeout=4.0)
    error = router.ready()["rules"]["error"]
    assert error == (f"{rules_file}:7: rules[0] ('search-v2'): action: set exactly one of `model`, `routes` "
                     "or `strategy` (found model, strategy)")
    assert router.ready()["ready"] is True and router.ready()["rules"]["digest"] == good_digest
    assert reason_and_model() == ("rule:search-v2", "gpt-4.1")  # still the last good rules
    assert view.status()["rules_error"] == error
    assert router.metric("routeur_router_rules_reloads_total", result="rejected") == 1.0
    assert "rules_rejected" in router.log_path.read_text()

    rules_file.write_text(RULES_V1)
    await eventually(lambda: reason_and_model() == ("rule:search", "gpt-4.1-mini") and view.snapshot is not None
                     and view.snapshot.rules_error is None, timeout=4.0)
    assert router.ready()["rules"]["error"] is None


async def test_router_killed_proxies_keep_routing_on_the_last_snapshot(
        tmp_path: Path, routers: Callable[..., RouterProcess], connect: Callable[..., Any]) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(RULES_V1)
    router = routers(ROUTER_RULES=str(rules_file), ROUTER_BREAKER_COOLDOWN_S="60")
    view: RoutingView = await connect(stale_after_s=2.0)
    await fail(view, "openai", "gpt-4.1", 3)
    await eventually(lambda: first_key(view, "gpt-4.1") == "azure/gpt-4.1")
    await eventually(lambda: view.decide(RequestFacts(model="auto", tags={"team": "search"})).route_reason
                     == "rule:search")
    version = view.snapshot.version if view.snapshot else 0

    await asyncio.to_thread(router.kill)
    await eventually(lambda: str(view.status()["router"]).startswith("stale since"), timeout=5.0)
    assert not view.live and view.status()["routing_version"] == version
    assert first_key(view, "gpt-4.1") == "azure/gpt-4.1"  # the open breaker is remembered
    assert view.decide(RequestFacts(model="auto", tags={"team": "search"})).route_reason == "rule:search"

    late: RoutingView = await connect(stale_after_s=2.0)  # a proxy starting while the router is down: the KV
    assert late.snapshot is not None and late.snapshot.version == version and not late.live
    assert first_key(late, "gpt-4.1") == "azure/gpt-4.1"
    assert late.decide(RequestFacts(model="auto", tags={"team": "search"})).route_reason == "rule:search"

    restarted = await asyncio.to_thread(routers, ROUTER_RULES=str(rules_file), ROUTER_BREAKER_COOLDOWN_S="60")
    await eventually(lambda: view.live and late.live)
    assert view.snapshot is not None and view.snapshot.version > version  # versions continue across restarts
    assert restarted.ready()["routes_not_closed"].get("openai/gpt-4.1") == OPEN  # breaker states taken over
    assert first_key(view, "gpt-4.1") == "azure/gpt-4.1"


def test_an_invalid_rules_file_at_first_start_exits_naming_the_problem(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats", port=procs.free_port(), log_path=tmp_path / "nats.log")
    server.start()
    try:
        rules_file = tmp_path / "rules.toml"
        rules_file.write_text(RULES_BAD)
        router = RouterProcess(tmp_path, server.url, ROUTER_RULES=str(rules_file))
        proc = router.spawn()
        assert proc.wait(60) == 2
        log = router.log_path.read_text()
        assert f"configuration error: ROUTER_RULES: {rules_file}:7: rules[0] ('search-v2'): action:" in log
    finally:
        server.stop()
