"""Per-component costs on the hot path: routing µs, admission µs (billing's decision, a leased admission in
the proxy, and a billing round trip over NATS), DLP µs/KB. In-process timings are best of 5 runs.

    .venv/bin/python -m bench.components            # the in-process parts
    python -m bench                                  # all of it, the bus round trip against the bench's stack
"""

from __future__ import annotations

import asyncio
import statistics
import time
from decimal import Decimal
from typing import Any

import nats
from nats.aio.client import Client

from bench import dlp
from catalog import loader
from proto import codec, subjects
from proto.billing import AdmitReply, AdmitRequest, KeyLimits, LeaseReply, Settle
from services.billing.ledger import Ledger
from services.common.ids import new_ulid
from services.proxy.leases import LeaseBook
from services.router.client import RoutingView
from services.router.rules import request_facts

_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise the Q3 numbers in one line."}]}


def routing_us() -> float:
    """One routing decision in the proxy: request facts from the body, then the decision from the snapshot."""
    view = RoutingView(Client(), catalog=loader.load(), providers=("openai", "azure", "anthropic", "bedrock"))

    def decide() -> None:
        view.release(view.decide(request_facts(_BODY, prompt_tokens=10, api_key_id="key_1", organization_id="o")))

    return dlp.time_call(decide) * 1e6


def admission_us() -> dict[str, float]:
    """Billing's admit decision for a key with and without rate limits (in billing's process), and a leased
    admission in the proxy (take + finish, no I/O)."""
    ledger = Ledger(key_secret=b"bench-secret-0123456789abcdef-0123456789")
    ledger.apply(ledger.create_org(now_ms=0, org_id="org_bench"))
    top_up = ledger.top_up("org_bench", Decimal(10**9), now_ms=0)
    assert top_up is not None
    ledger.apply(top_up)
    free, _ = ledger.create_key("org_bench", now_ms=0)
    limited, _ = ledger.create_key("org_bench", now_ms=0, limits=KeyLimits(rate_limit_rpm=10**9,
                                                                           token_limit_tpm=10**9))
    ledger.apply(free)
    ledger.apply(limited)
    counter = iter(range(10**9))
    worst = Decimal("0.000123")

    def admit(key_id: str) -> None:
        request_id = f"r{next(counter)}"
        ledger.admit(key_id, request_id, worst, 100, time.time())
        ledger.settle(request_id, worst, 100, now_ms=0)

    book = LeaseBook()
    book.granted("rk", "lease_1", LeaseReply(granted=True, granted_usd=Decimal(10**9), ttl_s=10**9))

    def leased() -> None:
        request_id = f"l{next(counter)}"
        book.take("rk", request_id, worst)
        book.finish(request_id, worst)

    return {"billing_decision_us": round(dlp.time_call(lambda: admit(free.api_key_id)) * 1e6, 2),
            "billing_decision_rate_limited_us": round(dlp.time_call(lambda: admit(limited.api_key_id)) * 1e6, 2),
            "leased_in_proxy_us": round(dlp.time_call(leased) * 1e6, 2)}


async def bus_admission(nats_url: str, api_key: str, n: int = 2000) -> dict[str, float]:
    """Round trips of AdmitRequest→AdmitReply to the running billing service (one at a time), in ms. Each
    reservation is settled afterwards at 0 so the key's wallet is untouched."""
    nc = await nats.connect(nats_url)
    samples = []
    try:
        for _ in range(n):
            request = AdmitRequest(request_id=new_ulid(), reserve_usd=Decimal("0.0001"), api_key=api_key)
            started = time.perf_counter()
            reply = await nc.request(subjects.BILLING_ADMIT, codec.encode(request), timeout=5)
            samples.append(time.perf_counter() - started)
            admitted = codec.decode(reply.data, AdmitReply)
            if not admitted.admitted or admitted.api_key_id is None or admitted.organization_id is None:
                raise RuntimeError(f"billing refused the bench key: {admitted.code}")
            await nc.request(subjects.BILLING_SETTLE, codec.encode(Settle(
                request_id=request.request_id, api_key_id=admitted.api_key_id,
                organization_id=admitted.organization_id, cost_usd=Decimal(0))), timeout=5)
    finally:
        await nc.close()
    samples.sort()
    return {"requests": n, "p50_ms": round(statistics.median(samples) * 1000, 3),
            "p99_ms": round(samples[int(len(samples) * 0.99)] * 1000, 3)}


def run(nats_url: str | None = None, api_key: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"routing_us": round(routing_us(), 2), "admission": admission_us(), "dlp": dlp.run()}
    if nats_url and api_key:
        result["admission"]["bus_round_trip"] = asyncio.run(bus_admission(nats_url, api_key))
    return result


if __name__ == "__main__":
    numbers = run()
    print(f"routing: {numbers['routing_us']} µs per decision")
    print(f"admission: {numbers['admission']}")
    print(f"DLP redact µs/KB: {numbers['dlp']['redact']}")
