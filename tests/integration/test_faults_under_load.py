"""Faults under load, one at a time, against the real processes: kill -9 of the tracer, archiver, billing,
router and nats-server (the supervisor restarts each), ClickHouse unable to write, the tracer frozen and the
S3 server frozen. Afterwards every 2xx has exactly one trace row, one settled debit and one archive object,
the proxies never restarted, and while billing or NATS was down the proxies answered fast 503s.

`make test` runs every fault in turn with short loads and 5 s outages (QUICK, ~75 s); `ROUTEUR_SOAK=1`
(`make soak`) adds one test per fault with a longer load and 30 s outages (SUSTAINED).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from launcher.ceph import S3Endpoint
from launcher.stack import Stack
from tests.soak.faults import FAULTS, Fault
from tests.soak.load import (
    SOAK,
    Load,
    Outcome,
    Report,
    Tenant,
    ledger_seq,
    new_tenant,
    proxy_pids,
    proxy_restarts,
    report,
    settle_books,
)


@dataclass(frozen=True)
class Timing:
    mode: str  # as recorded in $ROUTEUR_RELIABILITY_REPORT: "fast" or "soak"
    rps: float
    before_s: float  # load before the fault
    after_s: float  # load after recovery
    outage_s: float  # for the timed outages (ClickHouse, frozen tracer, S3)
    catch_up_s: float  # how long the books may take to become exact


# every fault in ~75 s: make test
QUICK = Timing(mode="fast", rps=25, before_s=2, after_s=3, outage_s=5, catch_up_s=120)
# one fault each: make soak
SUSTAINED = Timing(mode="soak", rps=40, before_s=15, after_s=20, outage_s=30, catch_up_s=240)
FAST_503_S = 5.0  # PROXY_BILLING_TIMEOUT_S is 2 s: a refusal must come well within this
NO_HANG_S = 15.0  # no request at all may take longer


@dataclass
class Run:
    """One fault's load, as sent and answered, and the facts needed to check its books afterwards."""

    fault: Fault
    timing: Timing
    tenant: Tenant
    after_seq: int
    outcomes: list[Outcome]
    shed: int
    proxy_restarts: int
    notes: list[str]
    fault_start: float
    fault_end: float
    ended: float
    load_s: float


async def _run(stack: Stack, s3_endpoint: S3Endpoint, fault: Fault, timing: Timing) -> Run:
    """Load through both proxies, inject the fault `before_s` in, keep loading `after_s` after it is over."""
    tenant = new_tenant(stack)
    after_seq = await ledger_seq(stack)
    pids = proxy_pids(stack)
    proxies = {name: child.url for name, child in stack.children.items() if child.service == "proxy"}
    load = Load(proxies, tenant.secret, rps=timing.rps)
    notes: list[str] = []
    began = time.monotonic()
    await load.start()
    try:
        await asyncio.sleep(timing.before_s)
        fault_start = time.monotonic()
        await asyncio.to_thread(fault.inject, stack, s3_endpoint, notes, timing.outage_s)
        fault_end = time.monotonic()
        await asyncio.sleep(timing.after_s)
    finally:
        outcomes = await load.stop()
    ended = time.monotonic()
    return Run(fault, timing, tenant, after_seq, outcomes, load.shed, proxy_restarts(pids, proxy_pids(stack)), notes,
               fault_start, fault_end, ended, ended - began)


async def _check(stack: Stack, s3_endpoint: S3Endpoint, run: Run) -> Report:
    """Wait for the books to be exact, save the figures, then check the callers' side of the story."""
    outcomes, fault = run.outcomes, run.fault
    books, read_at, found = await settle_books(stack, run.tenant, outcomes, s3_endpoint=s3_endpoint,
                                               after_seq=run.after_seq, timeout_s=run.timing.catch_up_s)
    catch_up_s = read_at - run.ended  # from the end of this fault's load
    codes = Counter(o.error for o in outcomes if o.status == 503)
    notes = [*run.notes, "503 codes: " + (", ".join(f"{code} x{n}" for code, n in codes.items()) or "none")]
    result = report(fault.name, run.timing.mode, outcomes, books, shed=run.shed, proxy_restarts=run.proxy_restarts,
                    catch_up_s=catch_up_s, outage_s=run.fault_end - run.fault_start, load_s=run.load_s, notes=notes,
                    found=found)
    result.save()
    assert not found, f"{fault.name}: after {run.timing.catch_up_s:.0f}s the books are still wrong: {found}"
    ok = [o for o in outcomes if 200 <= o.status < 300]
    assert any(o.started < run.fault_start for o in ok) and any(o.started > run.fault_end for o in ok), \
        f"{fault.name}: the load did not run on both sides of the fault"
    assert result.lost == 0 and result.doubled == 0, result
    assert result.rollup_extra == 0, f"{fault.name}: usage_minute is off by {result.rollup_extra}"
    assert result.other == {}, f"{fault.name}: only 2xx and 503 are acceptable answers: {result.other}"
    assert run.shed == 0, f"{fault.name}: {run.shed} sends were shed (too many requests in flight)"
    assert result.max_elapsed_s < NO_HANG_S, f"{fault.name}: a request hung for {result.max_elapsed_s}s"
    if fault.refusals_expected:
        assert set(codes) <= {"billing_unavailable"}, codes
        assert result.max_503_s < FAST_503_S, f"{fault.name}: a 503 took {result.max_503_s}s"
    else:
        assert result.refused_503 == 0, f"{fault.name}: nothing the caller depends on was down, yet: {codes}"
    return result


@pytest.mark.timeout(600)
async def test_every_fault_in_turn_under_load(stack: Stack, s3_endpoint: S3Endpoint) -> None:
    """The `make test` version: each fault with its own tenant and a short load, the books checked at the end
    (so the tracer's redelivery delay after a crash overlaps the next faults instead of adding up)."""
    pids = proxy_pids(stack)
    runs = [await _run(stack, s3_endpoint, fault, QUICK) for fault in FAULTS]
    assert proxy_pids(stack) == pids, "a proxy crashed or was restarted"
    checked = await asyncio.gather(*(_check(stack, s3_endpoint, run) for run in runs), return_exceptions=True)
    failures = [f"{run.fault.name}: {outcome}" for run, outcome in zip(runs, checked, strict=True)
                if isinstance(outcome, BaseException)]
    assert not failures, "\n".join(failures)


@pytest.mark.skipif(not SOAK, reason="the long version of each fault runs under ROUTEUR_SOAK=1 (make soak)")
@pytest.mark.timeout(900)
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_fault_under_sustained_load(stack: Stack, s3_endpoint: S3Endpoint, fault: Fault) -> None:
    pids = proxy_pids(stack)
    run = await _run(stack, s3_endpoint, fault, SUSTAINED)
    assert proxy_pids(stack) == pids, "a proxy crashed or was restarted"
    await _check(stack, s3_endpoint, run)
