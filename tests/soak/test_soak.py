"""The soak (ROUTEUR_SOAK=1, `make soak`): one tenant's load runs without a pause through both proxies for
ROUTEUR_SOAK_MINUTES (10) while every fault of the catalogue is injected in turn with 30 s outages. Afterwards
the books are exact, the proxies never restarted, refusals happened only while billing or NATS was down,
and the proxies' memory did not keep growing."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import pytest

from launcher.ceph import S3Endpoint
from launcher.stack import Stack
from tests.soak.faults import FAULTS
from tests.soak.load import (
    SOAK,
    Load,
    ledger_seq,
    new_tenant,
    proxy_pids,
    proxy_restarts,
    report,
    rss_kib,
    settle_books,
)

MINUTES = float(os.environ.get("ROUTEUR_SOAK_MINUTES", "10"))
RPS = 30
OUTAGE_S = 30.0
RECOVER_S = 30.0  # load between two faults
WARM_UP_S = 30.0
REFUSAL_GRACE_S = 5.0  # a 503 sent this long after billing or NATS came back is still the outage's
NO_HANG_S = 15.0
RSS_GROWTH_MIB = 64


@pytest.mark.skipif(not SOAK, reason="the soak runs under ROUTEUR_SOAK=1 (make soak)")
@pytest.mark.timeout(int(MINUTES * 60) + 900)
async def test_soak_every_fault_under_continuous_load(stack: Stack, s3_endpoint: S3Endpoint) -> None:
    tenant = new_tenant(stack)
    after_seq = await ledger_seq(stack)
    pids = proxy_pids(stack)
    proxies = {name: child.url for name, child in stack.children.items() if child.service == "proxy"}
    load = Load(proxies, tenant.secret, rps=RPS)
    windows: list[tuple[str, float, float, bool]] = []
    notes: list[str] = []
    began = time.monotonic()
    deadline = began + MINUTES * 60
    await load.start()
    try:
        await asyncio.sleep(WARM_UP_S)
        rss_warm = {name: rss_kib(pid) for name, (pid, _) in pids.items()}
        index = 0
        while time.monotonic() + OUTAGE_S + RECOVER_S < deadline:
            fault = FAULTS[index % len(FAULTS)]
            started = time.monotonic()
            await asyncio.to_thread(fault.inject, stack, s3_endpoint, notes, OUTAGE_S)
            windows.append((fault.name, started, time.monotonic(), fault.refusals_expected))
            await asyncio.sleep(RECOVER_S)
            index += 1
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        rss_end = {name: rss_kib(pid) for name, (pid, _) in pids.items()}
    finally:
        outcomes = await load.stop()
    ended = time.monotonic()
    pids_end = proxy_pids(stack)

    assert pids_end == pids, "a proxy crashed or was restarted"
    books, read_at, found = await settle_books(stack, tenant, outcomes, s3_endpoint=s3_endpoint,
                                               after_seq=after_seq, timeout_s=300)
    growth = {name: round((rss_end[name] - rss_warm[name]) / 1024, 1) for name in pids}
    injected = Counter(name for name, *_ in windows)
    codes = Counter(o.error for o in outcomes if o.status == 503)
    notes = [f"faults injected: {dict(injected)}", f"proxy RSS growth after warm-up (MiB): {growth}",
             "503 codes: " + (", ".join(f"{code} x{n}" for code, n in codes.items()) or "none"), *notes]
    result = report(f"soak {MINUTES:g} min, every fault in turn", "soak", outcomes, books, shed=load.shed,
                    proxy_restarts=proxy_restarts(pids, pids_end), catch_up_s=read_at - ended,
                    outage_s=sum(end - start for _, start, end, _ in windows),
                    load_s=ended - began, notes=notes, found=found)
    result.save()

    assert not found, found
    assert result.lost == 0 and result.doubled == 0 and result.other == {} and load.shed == 0, result
    assert result.max_elapsed_s < NO_HANG_S, f"a request hung for {result.max_elapsed_s}s"
    assert set(codes) <= {"billing_unavailable"}, codes
    refusal_windows = [(start, end + REFUSAL_GRACE_S) for _, start, end, refusals in windows if refusals]
    stray = [o for o in outcomes if o.status == 503
             and not any(start <= o.started + o.elapsed_s and o.started <= end for start, end in refusal_windows)]
    assert not stray, f"{len(stray)} refusals while billing and NATS were up, e.g. {stray[:3]}"
    assert result.rollup_extra == 0, f"usage_minute is off by {result.rollup_extra}"
    assert all(mib < RSS_GROWTH_MIB for mib in growth.values()), f"proxy memory grew: {growth} MiB"
