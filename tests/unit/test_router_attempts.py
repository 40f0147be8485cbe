"""Router's attempt-report handler without a server: batches and single reports alike, malformed messages."""

from __future__ import annotations

from typing import Any, cast

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from proto import codec, subjects
from proto.routing import CLOSED, OPEN, AttemptBatch, AttemptReport
from services.router import service as service_module
from services.router import settings as settings_module
from services.router.service import Router
from services.router.store import SnapshotStore

ROUTE = "openai/gpt-4o-mini"
SECRET = "sk-live-do-not-log-me"


class FakeNats:
    """Records subscriptions and publishes; enough for Router.start()/stop()."""

    is_connected = True

    def __init__(self) -> None:
        self.subscribed: dict[str, Any] = {}
        self.published: list[str] = []

    async def subscribe(self, subject: str, cb: Any = None, **_: Any) -> Any:
        self.subscribed[subject] = cb
        nc = self

        class Sub:
            async def unsubscribe(self) -> None:
                nc.subscribed.pop(subject, None)

        return Sub()

    async def publish(self, subject: str, payload: bytes = b"", **_: Any) -> None:
        self.published.append(subject)


class FakeStore:
    last_error = None

    async def put(self, data: bytes) -> bool:
        return True


def make_router(nc: FakeNats | None = None) -> Router:
    settings = settings_module.load({"ROUTER_BREAKER_MIN_REQUESTS": "3", "ROUTER_BREAKER_COOLDOWN_S": "60"})
    return Router(cast(Client, nc or FakeNats()), cast(SnapshotStore, FakeStore()), settings=settings)


def msg(subject: str, data: bytes) -> Msg:
    return Msg(_client=cast(Client, None), subject=subject, data=data)


def failure(route_model: str = "gpt-4o-mini", status: int = 503) -> AttemptReport:
    return AttemptReport("openai", route_model, status, 12.0, error_type="http_error")


def attempts(router: Router, outcome: str, route: str = ROUTE) -> float:
    value = router.metrics.registry.get_sample_value("routeur_router_attempts_total",
                                                     {"route": route, "outcome": outcome})
    return value or 0.0


def counter(router: Router, name: str) -> float:
    return router.metrics.registry.get_sample_value(name) or 0.0


async def test_a_batch_opens_the_breaker_like_the_same_reports_sent_one_by_one() -> None:
    reports = (AttemptReport("openai", "gpt-4o-mini", 200, 30.0), failure(), failure(), failure(),
               AttemptReport("openai", "gpt-4o-mini", 499, 5.0, error_type="client_closed"))
    batched, single = make_router(), make_router()
    await batched._on_attempts(msg(subjects.ROUTER_ATTEMPTS_BATCH, codec.encode(AttemptBatch(reports))))
    for one in reports:
        await single._on_attempts(msg(subjects.ROUTER_ATTEMPTS, codec.encode(one)))
    for router in (batched, single):
        assert router.book.state(ROUTE) == OPEN  # 3 failures of 4 outcomes ≥ 50 %, min_requests 3
        assert (attempts(router, "ok"), attempts(router, "failure"), attempts(router, "ignored")) == (1, 3, 1)
        assert router.metrics.registry.get_sample_value("routeur_router_breaker_transitions_total",
                                                        {"route": ROUTE, "state": OPEN}) == 1.0
    assert counter(batched, "routeur_router_report_batches_total") == 1.0
    assert counter(single, "routeur_router_report_batches_total") == 0.0

    def shape(router: Router) -> list[tuple[str, str, int, int, int]]:
        return [(h.route, h.state, h.opens, h.requests, h.failures) for h in router.book.snapshot()]

    assert shape(batched) == shape(single)


async def test_an_empty_batch_changes_nothing() -> None:
    router = make_router()
    version = router.snapshot().version
    await router._on_attempts(msg(subjects.ROUTER_ATTEMPTS_BATCH, b'{"reports": []}'))
    assert router.book.snapshot() == () and router.snapshot().version == version
    assert counter(router, "routeur_router_bad_report_batches_total") == 0.0


@pytest.mark.parametrize("data", [
    b"not json " + SECRET.encode(),
    b"{}",  # no reports
    b'{"reports": [{"provider": "openai", "upstream_model": "' + SECRET.encode() + b'", "status_code": "x", '
    b'"latency_ms": 1}]}',
    b'{"provider": "openai", "upstream_model": "' + SECRET.encode() + b'", "status_code": 503, "latency_ms": 1}',
    b'{"reports": "' + SECRET.encode() + b'"}',
])
async def test_a_malformed_batch_is_counted_and_logged_without_its_content(
        data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[dict[str, Any]] = []

    class Log:
        def warning(self, event: str, **fields: Any) -> None:
            logged.append({"event": event, **fields})

        def info(self, event: str, **fields: Any) -> None:
            pass

    monkeypatch.setattr(service_module, "log", Log())
    router = make_router()
    await router._on_attempts(msg(subjects.ROUTER_ATTEMPTS_BATCH, data))  # does not raise
    assert counter(router, "routeur_router_bad_report_batches_total") == 1.0
    assert counter(router, "routeur_router_bad_reports_total") == 0.0
    assert counter(router, "routeur_router_report_batches_total") == 0.0
    assert router.book.snapshot() == ()
    (entry,) = logged
    assert entry["event"] == "attempt_report_undecodable" and entry["subject"] == subjects.ROUTER_ATTEMPTS_BATCH
    assert entry["bytes"] == len(data) and entry["error"] in ("DecodeError", "ValidationError")
    assert SECRET not in repr(entry)
    # the next good batch is handled as usual
    batch = AttemptBatch((failure(), failure(), failure()))
    await router._on_attempts(msg(subjects.ROUTER_ATTEMPTS_BATCH, codec.encode(batch)))
    assert router.book.state(ROUTE) == OPEN and attempts(router, "failure") == 3


async def test_malformed_messages_are_logged_sparingly(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[str] = []

    class Log:
        def warning(self, event: str, **fields: Any) -> None:
            logged.append(event)

    monkeypatch.setattr(service_module, "log", Log())
    router = make_router()
    for _ in range(1_000):
        await router._on_attempts(msg(subjects.ROUTER_ATTEMPTS_BATCH, b"\x00"))
    await router._on_attempts(msg(subjects.ROUTER_ATTEMPTS, b"\x00"))  # the legacy subject: its own counter
    assert len(logged) == 11  # the first ten, then every thousandth
    assert counter(router, "routeur_router_bad_report_batches_total") == 1_000.0
    assert counter(router, "routeur_router_bad_reports_total") == 1.0


async def test_start_subscribes_both_subjects_with_the_same_handler() -> None:
    nc = FakeNats()
    router = make_router(nc)
    await router.start()
    try:
        batch_cb = nc.subscribed[subjects.ROUTER_ATTEMPTS_BATCH]
        assert nc.subscribed[subjects.ROUTER_ATTEMPTS] == batch_cb == router._on_attempts
        await batch_cb(msg(subjects.ROUTER_ATTEMPTS_BATCH, codec.encode(AttemptBatch((failure(), failure())))))
        await nc.subscribed[subjects.ROUTER_ATTEMPTS](msg(subjects.ROUTER_ATTEMPTS, codec.encode(failure())))
        assert router.book.state(ROUTE) == OPEN and attempts(router, "failure") == 3
        assert router.book.state("openai/gpt-4o") == CLOSED
    finally:
        await router.stop()
    assert subjects.ROUTER_ATTEMPTS_BATCH not in nc.subscribed and subjects.ROUTER_ATTEMPTS not in nc.subscribed
