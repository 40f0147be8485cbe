"""Open-loop HTTP load generator (constant arrival rate, latency from the scheduled send time) and its statistics."""

from __future__ import annotations

import asyncio
import gc
import math
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

# --------------------------------------------------------------------------- pure statistics

PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


def arrival_offsets(rate: float, duration_s: float) -> list[float]:
    """Send times (seconds from the start) of a constant-rate schedule: request i at i / rate."""
    if rate <= 0 or duration_s <= 0:
        return []
    return [i / rate for i in range(int(round(rate * duration_s)))]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100); NaN when there are none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Summary:
    """Count, mean, the reported percentiles and the maximum of one latency sample (milliseconds)."""

    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    p999: float
    max: float

    def get(self, name: str) -> float:
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99, "p99.9": self.p999, "max": self.max,
                "mean": self.mean}[name]

    def as_dict(self) -> dict[str, float]:
        return {"n": self.n, "mean": _r(self.mean), "p50": _r(self.p50), "p90": _r(self.p90), "p99": _r(self.p99),
                "p99.9": _r(self.p999), "max": _r(self.max)}


def _r(value: float) -> float:
    return round(value, 4) if not math.isnan(value) else value


def summarize(values: Sequence[float]) -> Summary:
    """Exact percentiles of a sample (no bucketing)."""
    ordered = sorted(values)
    if not ordered:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    return Summary(len(ordered), sum(ordered) / len(ordered), percentile(ordered, 50), percentile(ordered, 90),
                   percentile(ordered, 99), percentile(ordered, 99.9), ordered[-1])


def added(proxy: Summary, direct: Summary) -> dict[str, float]:
    """What the proxy adds at each percentile: proxy pX minus direct pX (a difference of percentiles)."""
    return {name: _r(proxy.get(name) - direct.get(name)) for name, _ in PERCENTILES}


def ratios(proxy: Summary, direct: Summary) -> dict[str, float]:
    """Proxy pX divided by direct pX."""
    return {name: _r(proxy.get(name) / direct.get(name)) if direct.get(name) > 0 else math.nan
            for name, _ in PERCENTILES}


class LogHistogram:
    """Latencies in logarithmic buckets of relative width `precision` (HDR-style, mergeable, compact)."""

    def __init__(self, precision: float = 0.02, floor_ms: float = 0.001) -> None:
        self.precision = precision
        self.floor_ms = floor_ms
        self._log_base = math.log1p(precision)
        self.counts: Counter[int] = Counter()
        self.total = 0

    def bucket(self, value_ms: float) -> int:
        return int(math.log(max(value_ms, self.floor_ms) / self.floor_ms) / self._log_base)

    def upper_bound(self, bucket: int) -> float:
        return self.floor_ms * (1.0 + self.precision) ** (bucket + 1)

    def add(self, value_ms: float) -> None:
        self.counts[self.bucket(value_ms)] += 1
        self.total += 1

    def merge(self, other: LogHistogram) -> None:
        self.counts.update(other.counts)
        self.total += other.total

    def percentile(self, q: float) -> float:
        """Upper bound of the bucket holding the nearest-rank q-th percentile (within `precision`)."""
        if not self.total:
            return math.nan
        rank = max(1, math.ceil(q / 100.0 * self.total))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return self.upper_bound(bucket)
        return self.upper_bound(max(self.counts))

    def as_dict(self) -> dict[str, Any]:
        """Bucket upper bounds (ms, 4 significant digits) with their counts, for the JSON result."""
        return {"precision": self.precision,
                "buckets": [[float(f"{self.upper_bound(b):.4g}"), self.counts[b]] for b in sorted(self.counts)]}


def histogram(values: Sequence[float]) -> LogHistogram:
    hist = LogHistogram()
    for value in values:
        hist.add(value)
    return hist


class StepSearch:
    """The rates to try when looking for the highest sustainable rate: grow geometrically until a step
    fails, then bisect between the best pass and the first failure `refine` times."""

    def __init__(self, start: float, *, factor: float = 1.5, ceiling: float = 20_000.0, refine: int = 2) -> None:
        self.factor = factor
        self.ceiling = ceiling
        self.refine = refine
        self.best: float | None = None
        self.failed: float | None = None
        self._next: float | None = start
        self._bisections = 0
        self.steps: list[tuple[float, bool]] = []

    def next_rate(self) -> float | None:
        """The next rate to try, or None when the search is over."""
        return self._next

    def record(self, rate: float, passed: bool) -> None:
        self.steps.append((rate, passed))
        if passed:
            self.best = max(self.best or 0.0, rate)
        else:
            self.failed = rate if self.failed is None else min(self.failed, rate)
        if self.failed is None:
            grown = rate * self.factor
            self._next = None if rate >= self.ceiling else min(grown, self.ceiling)
            return
        if self.best is None:  # the very first step failed: go down until something passes
            lower = rate / self.factor
            self._next = lower if lower >= 10 and len(self.steps) < 12 else None
            return
        if self._bisections >= self.refine or self.failed - self.best < max(10.0, 0.05 * self.best):
            self._next = None
            return
        self._bisections += 1
        self._next = round((self.best + self.failed) / 2)


def sustainable(result: RunResult, p99_bound_ms: float, *, min_achieved: float = 0.97) -> bool:
    """No errors, the offered rate was delivered, and p99 latency under the bound."""
    latency = summarize(result.latencies_ms)
    return (result.errors == 0 and latency.n > 0 and result.achieved_rps >= min_achieved * result.rate
            and latency.p99 <= p99_bound_ms)


# --------------------------------------------------------------------------- one run (in the worker)


@dataclass(frozen=True)
class RunSpec:
    """One open-loop run: `rate` requests/s for `warmup_s + duration_s`; warm-up requests are not measured."""

    label: str
    url: str
    body: bytes
    headers: dict[str, str]
    rate: float
    duration_s: float
    warmup_s: float = 1.0
    stream: bool = False
    timeout_s: float = 10.0
    max_in_flight: int = 20_000


@dataclass
class RunResult:
    """What one run measured; latencies are from each request's *scheduled* send time."""

    label: str
    url: str
    rate: float
    duration_s: float
    stream: bool
    sent_total: int = 0  # warm-up included (CPU accounting divides by this)
    sent: int = 0  # measured requests
    ok: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)  # full response (last byte)
    ttft_ms: list[float] = field(default_factory=list)  # streams: first body bytes
    gap_ms: list[float] = field(default_factory=list)  # streams: mean gap between events, per request
    dispatch_lag_ms: list[float] = field(default_factory=list)  # how late the generator sent
    achieved_rps: float = 0.0
    wall_s: float = 0.0
    generator_cpu_s: float = 0.0

    @property
    def generator_busy(self) -> float:
        """Share of one core the generator used; near 1.0 means the generator itself was the limit."""
        return self.generator_cpu_s / self.wall_s if self.wall_s else 0.0


async def run_open_loop(session: aiohttp.ClientSession, spec: RunSpec) -> RunResult:
    """Send on the fixed schedule whatever the responses do (open loop); measure from the schedule."""
    result = RunResult(spec.label, spec.url, spec.rate, spec.duration_s, spec.stream)
    offsets = arrival_offsets(spec.rate, spec.warmup_s + spec.duration_s)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    errors: Counter[str] = Counter()
    in_flight: set[asyncio.Task[None]] = set()
    measured_from = spec.warmup_s
    ok_end: list[float] = []

    async def one(scheduled: float, measured: bool) -> None:
        first: float | None = None
        last: float | None = None
        events = 0
        try:
            async with session.post(spec.url, data=spec.body, headers=spec.headers, timeout=timeout) as response:
                if spec.stream:
                    tail = b""
                    async for data in response.content.iter_any():
                        now = time.perf_counter()
                        if first is None:
                            first = now
                        last = now
                        events += data.count(b"data:")
                        tail = (tail + data)[-64:]
                    complete = b"[DONE]" in tail
                else:
                    body = await response.read()
                    complete = bool(body)
                status = response.status
        except TimeoutError:
            errors["timeout"] += measured
            return
        except aiohttp.ClientError as exc:
            errors[type(exc).__name__] += measured
            return
        end = time.perf_counter()
        if not measured:
            return
        if status != 200:
            errors[f"http_{status}"] += 1
            return
        if not complete:
            errors["incomplete"] += 1
            return
        result.latencies_ms.append((end - scheduled) * 1000)
        ok_end.append(end)
        if spec.stream and first is not None and last is not None:
            result.ttft_ms.append((first - scheduled) * 1000)
            if events > 1:
                result.gap_ms.append((last - first) * 1000 / (events - 1))

    cpu_start = time.process_time()
    start = time.perf_counter() + 0.02
    for offset in offsets:
        scheduled = start + offset
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        measured = offset >= measured_from
        result.sent_total += 1
        if measured:
            result.sent += 1
            result.dispatch_lag_ms.append(max(0.0, (time.perf_counter() - scheduled) * 1000))
        if len(in_flight) >= spec.max_in_flight:
            errors["generator_overloaded"] += measured
            continue
        task = asyncio.create_task(one(scheduled, measured))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(set(in_flight), timeout=spec.timeout_s + 2)
        for task in list(in_flight):
            task.cancel()
            errors["unfinished"] += 1
    done = time.perf_counter()
    result.wall_s = done - start
    result.generator_cpu_s = time.process_time() - cpu_start
    result.ok = len(result.latencies_ms)
    result.error_kinds = dict(errors)
    result.errors = sum(errors.values())
    measured_start = start + measured_from
    window = (max(ok_end) - measured_start) if ok_end else 0.0
    result.achieved_rps = result.ok / max(window, spec.duration_s) if result.ok else 0.0
    return result


# --------------------------------------------------------------------------- the worker process


def _worker(conn: Connection, cpu: int | None) -> None:
    """Worker main: pinned to `cpu`, one keep-alive session, runs each RunSpec received until None."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def make_session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=1024, limit_per_host=1024, keepalive_timeout=120, ttl_dns_cache=None)
        return aiohttp.ClientSession(connector=connector, auto_decompress=False)

    session = loop.run_until_complete(make_session())
    try:
        while True:
            spec = conn.recv()
            if spec is None:
                break
            gc.collect()
            gc.disable()  # no collector pauses inside a measured run; garbage is collected between runs
            try:
                result = loop.run_until_complete(run_open_loop(session, spec))
            finally:
                gc.enable()
            conn.send(result)
    finally:
        loop.run_until_complete(session.close())
        loop.close()


class LoadGenerator:
    """The generator as a separate process pinned to one core, driven over a pipe."""

    def __init__(self, cpu: int | None) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.cpu = cpu
        self._proc = context.Process(target=_worker, args=(child, cpu), name="bench-loadgen", daemon=True)
        self._proc.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self._proc.pid is not None
        return self._proc.pid

    def run(self, spec: RunSpec) -> RunResult:
        self._conn.send(spec)
        result: RunResult = self._conn.recv()
        return result

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
