"""Tracer ingest: TraceEvents published straight to JetStream, counted in ClickHouse through the tracer's SQL API."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import aiohttp
import nats

from proto import codec, subjects
from proto.trace import Attempt, TraceEvent
from services.common.ids import new_ulid

ORG_PREFIX = "org_bench_ingest_"
PROXY_TRACES_SQL = ("SELECT count() FROM traces FINAL WHERE NOT startsWith(organization_id, {prefix:String})",
                    {"prefix": ORG_PREFIX})


def org_sql(organization_id: str) -> tuple[str, dict[str, str]]:
    """The count of one organization's stored traces, as (SQL, parameters)."""
    return ("SELECT count() FROM traces FINAL WHERE organization_id = {organization_id:String}",
            {"organization_id": organization_id})


def make_events(n: int, organization_id: str) -> list[tuple[str, bytes]]:
    """`n` encoded, realistic trace events (request id, JSON bytes) for one throwaway organization."""
    now_ms = int(time.time() * 1000)
    attempt = (Attempt("openai", "gpt-4o-mini", 200, 1.234, None),)
    out = []
    for i in range(n):
        request_id = new_ulid(now_ms + i // 1000)
        event = TraceEvent(
            request_id=request_id, timestamp_ms=now_ms + i // 1000, organization_id=organization_id,
            api_key_id="key_bench", endpoint="/v1/chat/completions", requested_model="gpt-4o-mini",
            model="gpt-4o-mini", provider="openai", upstream_model="gpt-4o-mini", route_reason="default",
            route="openai/gpt-4o-mini", status_code=200, stream=False, latency_ms=1.5, upstream_latency_ms=1.2,
            ttft_ms=1.4, prompt_tokens=13, completion_tokens=66, total_tokens=79,
            cost_usd=Decimal("0.00004155"), attempts=attempt)
        out.append((request_id, codec.encode(event)))
    return out


async def publish(nats_url: str, events: list[tuple[str, bytes]], *, window: int = 2000) -> float:
    """Publish with JetStream acks (`window` in flight) and the proxy's headers (services/proxy/publisher.py:
    Nats-Msg-Id only); returns the seconds it took."""
    nc = await nats.connect(nats_url, name="bench-ingest")
    js = nc.jetstream()
    started = time.perf_counter()
    try:
        for start in range(0, len(events), window):
            await asyncio.gather(*(
                js.publish(subjects.TRACE_SUBJECT, data, timeout=30.0, headers={"Nats-Msg-Id": request_id})
                for request_id, data in events[start:start + window]))
        return time.perf_counter() - started
    finally:
        await nc.drain()


async def count(session: aiohttp.ClientSession, tracer_url: str, admin_token: str,
                query: tuple[str, dict[str, str]]) -> int:
    """A `SELECT count() …` (SQL, parameters) run by the tracer's read-only SQL endpoint."""
    async with session.post(f"{tracer_url}/v1/sql", headers={"Authorization": f"Bearer {admin_token}"},
                            json={"query": query[0], "parameters": query[1]}) as response:
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"tracer SQL failed ({response.status}): {body}")
        return int(body["rows"][0][0])


async def wait_for_count(tracer_url: str, admin_token: str, query: tuple[str, dict[str, str]], n: int, *,
                         timeout_s: float = 180.0, poll_s: float = 0.1) -> list[tuple[float, int]]:
    """Poll until `n` rows are stored; the (perf_counter time, count) samples, the last one with count n."""
    samples: list[tuple[float, int]] = []
    deadline = time.perf_counter() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() < deadline:
            try:
                found = await count(session, tracer_url, admin_token, query)
            except (aiohttp.ClientError, RuntimeError):
                found = -1  # the tracer is (re)starting
            samples.append((time.perf_counter(), found))
            if found >= n:
                return samples
            await asyncio.sleep(poll_s)
    raise TimeoutError(f"only {samples[-1][1] if samples else 0} of {n} traces stored after {timeout_s:.0f} s")


def drain_rate(samples: list[tuple[float, int]], n: int, since: float) -> tuple[float, bool]:
    """Traces/s stored from the first sample at or after `since` to the last; (rate, exact).

    Not exact (a lower bound) when everything was already stored at the first sample: then the rate
    is counted from `since` itself."""
    usable = [(t, c) for t, c in samples if t >= since and c >= 0]
    if not usable:
        return 0.0, False
    t_end, c_end = usable[-1]
    t_first, c_first = usable[0]
    if c_first < c_end and t_end > t_first:
        return (c_end - c_first) / (t_end - t_first), True
    return n / max(t_end - since, 1e-6), False
