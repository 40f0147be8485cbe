"""SIGTERM while the tracer is mid-way through a backlog: it finishes and acks its current batch, exits
cleanly, and after a restart every trace is stored exactly once (nothing acked is lost, nothing doubled)."""

from __future__ import annotations

import asyncio
import time

import nats

from launcher.stack import Stack
from proto import codec, subjects
from proto.trace import TraceEvent
from services.common.ids import new_ulid
from tests.conftest import sql, wait_for

BACKLOG = 30_000


def _event(request_id: str, organization_id: str) -> TraceEvent:
    return TraceEvent(request_id=request_id, timestamp_ms=int(time.time() * 1000), organization_id=organization_id,
                      api_key_id="key_sigterm", endpoint="/v1/chat/completions", requested_model="gpt-4o-mini",
                      model="gpt-4o-mini", provider="openai", upstream_model="gpt-4o-mini", route_reason="default",
                      status_code=200, stream=False, latency_ms=1.0, upstream_latency_ms=0.5, prompt_tokens=3,
                      completion_tokens=4, total_tokens=7)


async def _publish(url: str, events: list[TraceEvent]) -> None:
    """Core-NATS publishes into the stream's subject (JetStream stores them), as fast as the socket allows."""
    nc = await nats.connect(url)
    for event in events:
        await nc.publish(subjects.TRACE_SUBJECT, codec.encode(event), headers={"Nats-Msg-Id": event.request_id})
    await nc.flush(timeout=30)
    await nc.drain()


def _stored(stack: Stack, organization_id: str) -> int:
    rows = sql(stack, "SELECT count() AS n FROM traces FINAL WHERE organization_id = {org:String}",
               {"org": organization_id})
    return int(rows[0]["n"])


def test_sigterm_mid_backlog_loses_and_doubles_nothing(stack: Stack) -> None:
    organization_id = f"org_sigterm_{new_ulid().lower()}"
    events = [_event(new_ulid(), organization_id) for _ in range(BACKLOG)]
    asyncio.run(_publish(stack.nats.url, events))
    wait_for(lambda: _stored(stack, organization_id) > 0, timeout=30, interval=0.02)
    tracer = stack.children["tracer"]
    process = tracer.proc
    assert process is not None
    before_stop = _stored(stack, organization_id)
    stack.stop_service("tracer")  # SIGTERM, and wait for the exit
    try:
        assert process.returncode == 0, f"tracer exited with {process.returncode} on SIGTERM"
        assert '"tracer_stopped"' in tracer.log_path.read_text()
    finally:
        stack.start_service("tracer")
    at_restart = _stored(stack, organization_id)
    print(f"stored before SIGTERM {before_stop}, after the clean stop {at_restart}, of {BACKLOG}")
    assert before_stop < BACKLOG, "the tracer finished the backlog before the SIGTERM: nothing was tested"
    wait_for(lambda: _stored(stack, organization_id) == BACKLOG, timeout=90, interval=0.5)
    duplicates = sql(stack, "SELECT count() AS n FROM (SELECT request_id FROM traces FINAL "
                            "WHERE organization_id = {org:String} GROUP BY request_id HAVING count() > 1)",
                     {"org": organization_id})
    assert duplicates == [{"n": 0}]
