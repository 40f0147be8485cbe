"""Dashboard query bench: fill a throwaway embedded ClickHouse with 1M synthetic traces through the tracer's own
schema and insert path, then time the Logs, trace and Usage queries the dashboard makes (p50/p95 over repeats).

    .venv/bin/python -m bench.dashboard                  # 1M traces over 30 days, 15 timed repeats per query
    .venv/bin/python -m bench.dashboard --traces 200000 --repeats 5

A bench, not a test: it prints a Markdown table and writes bench/results/<date>-dashboard.json; nothing asserts
on the times. Queries go through `Tracer.logs` / `Tracer.get` / `Tracer.usage`, i.e. the exact SQL the
tracer runs for `GET /v1/logs`, `/v1/traces/{id}` and `/v1/usage` (the NATS and HTTP hops are not included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from nats.aio.client import Client
from nats.js import JetStreamContext

from proto.trace import Attempt, LogsQuery, TraceEvent, TraceQuery, UsageQuery
from services.common.ids import new_ulid
from services.tracer import rows
from services.tracer.service import Tracer
from services.tracer.settings import Settings
from services.tracer.store import TraceStore

RESULTS = Path(__file__).parent / "results"
DAY_MS = 86_400_000
MODELS = (  # model, provider, input $/1M, output $/1M
    ("gpt-4o-mini", "openai", "0.15", "0.60"), ("gpt-4.1", "openai", "2", "8"),
    ("claude-haiku-4.5", "anthropic", "1", "5"), ("claude-sonnet-4.5", "anthropic", "3", "15"),
    ("gemini-2.5-flash", "gemini", "0.30", "2.50"), ("deepseek-chat", "deepseek", "0.27", "1.10"),
    ("mistral-small", "mistral", "0.10", "0.30"), ("llama-3.3-70b", "groq", "0.59", "0.79"),
)
BIG_ORG = "org_00"


@dataclass(frozen=True)
class Shape:
    traces: int
    days: int
    orgs: int
    keys_per_org: int
    seed: int


def synthetic(shape: Shape, now_ms: int, batch: int) -> Iterator[list[TraceEvent]]:
    """Batches of realistic traces spread over `days` before `now_ms`: one big organization with half the
    traffic, a few keys each, eight models, ~3 % errors and ~3 % fallbacks."""
    rnd = random.Random(shape.seed)  # noqa: S311 (synthetic data)
    orgs = [f"org_{i:02d}" for i in range(shape.orgs)]
    weights = [shape.orgs - 1] + [1] * (shape.orgs - 1)  # org_00 gets half of all requests
    span = shape.days * DAY_MS
    out: list[TraceEvent] = []
    for _ in range(shape.traces):
        ts = now_ms - rnd.randrange(span)
        org = rnd.choices(orgs, weights)[0]
        model, provider, price_in, price_out = rnd.choice(MODELS)
        status = rnd.choices((200, 429, 500, 400), (970, 10, 10, 10))[0]
        prompt, completion = rnd.randrange(5, 4000), rnd.randrange(1, 1200) if status == 200 else 0
        cost = (Decimal(prompt) * Decimal(price_in) + Decimal(completion) * Decimal(price_out)) / 1_000_000
        fallback = f"{provider}/{model}-b; error:503" if rnd.random() < 0.03 else None
        latency = rnd.lognormvariate(6.0, 0.8)
        out.append(TraceEvent(
            request_id=new_ulid(ts), timestamp_ms=ts, organization_id=org,
            api_key_id=f"key_{org}_{rnd.randrange(shape.keys_per_org)}", endpoint="/v1/chat/completions",
            requested_model=model, model=model, provider=provider, upstream_model=model, route_reason="default",
            route=f"{provider}/{model}", fallback=fallback, status_code=status, stream=rnd.random() < 0.4,
            latency_ms=latency, upstream_latency_ms=latency * 0.97, ttft_ms=latency * 0.3,
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
            cost_usd=cost if status == 200 else Decimal(0),
            attempts=(Attempt(provider, model, status, latency * 0.97, None if status == 200 else "upstream"),)))
        if len(out) == batch:
            yield out
            out = []
    if out:
        yield out


async def fill(tracer: Tracer, shape: Shape, now_ms: int, batch: int) -> dict[str, float]:
    """Insert the synthetic traces through the tracer's own batch path (`Tracer.store_events`)."""
    generate_s = insert_s = 0.0
    started = time.perf_counter()
    events = synthetic(shape, now_ms, batch)
    while True:
        t0 = time.perf_counter()
        chunk = next(events, None)
        if chunk is None:
            break
        t1 = time.perf_counter()
        await tracer.store_events(chunk, redelivered=False)
        generate_s += t1 - t0
        insert_s += time.perf_counter() - t1
    return {"generate_s": round(generate_s, 1), "insert_s": round(insert_s, 1),  # insert_s includes row building
            "total_s": round(time.perf_counter() - started, 1),
            "insert_rows_per_s": round(shape.traces / insert_s) if insert_s else 0.0}


Case = tuple[str, str, Callable[[], Awaitable[int]]]


def cases(tracer: Tracer, now_ms: int, *, cursor: str, request_id: str, some_key: str) -> list[Case]:
    """(page, what, run → rows returned) for every query the dashboard pages make."""

    async def logs(**filters: Any) -> int:
        return len((await tracer.logs(LogsQuery(limit=50, **filters))).traces)

    async def usage(span_days: float, bucket: str, group_by: str, organization: str | None) -> int:
        reply = await tracer.usage(UsageQuery(organization_id=organization, group_by=group_by, bucket=bucket,
                                              since_ms=now_ms - int(span_days * DAY_MS), until_ms=now_ms),
                                   now_ms=now_ms)
        return len(reply.rows)

    async def trace() -> int:
        return int(await tracer.get(TraceQuery(request_id, BIG_ORG)) is not None)

    return [
        ("Logs", f"{BIG_ORG} (half the traffic), first page", lambda: logs(organization_id=BIG_ORG)),
        ("Logs", f"{BIG_ORG}, key filter", lambda: logs(organization_id=BIG_ORG, api_key_id=some_key)),
        ("Logs", f"{BIG_ORG}, model filter", lambda: logs(organization_id=BIG_ORG, model="claude-haiku-4.5")),
        ("Logs", f"{BIG_ORG}, key + model filter", lambda: logs(organization_id=BIG_ORG, api_key_id=some_key,
                                                                 model="gpt-4o-mini")),
        ("Logs", f"{BIG_ORG}, status 500 (sparse)", lambda: logs(organization_id=BIG_ORG, status_code=500)),
        ("Logs", f"{BIG_ORG}, next page (cursor)", lambda: logs(organization_id=BIG_ORG, cursor=cursor)),
        ("Logs", "small org (~5 %), first page", lambda: logs(organization_id="org_05")),
        ("Logs", "admin, every org, first page", lambda: logs()),
        ("Trace", "one trace by id (detail panel)", trace),
        ("Usage", f"{BIG_ORG}, 24 h by hour, stacked by model", lambda: usage(1, "hour", "model", BIG_ORG)),
        ("Usage", f"{BIG_ORG}, 7 d by hour, stacked by key", lambda: usage(7, "hour", "key", BIG_ORG)),
        ("Usage", f"{BIG_ORG}, 30 d by day, stacked by model", lambda: usage(30, "day", "model", BIG_ORG)),
        ("Usage", f"{BIG_ORG}, 90 d by day, stacked by key", lambda: usage(90, "day", "key", BIG_ORG)),
        ("Usage", "admin, 1 h by minute, by provider", lambda: usage(1 / 24, "minute", "provider", None)),
        ("Usage", "admin, 30 d by day, stacked by model", lambda: usage(30, "day", "model", None)),
    ]


async def time_case(run: Callable[[], Awaitable[int]], repeats: int, warmup: int) -> dict[str, Any]:
    for _ in range(warmup):
        await run()
    samples = []
    found = 0
    for _ in range(repeats):
        started = time.perf_counter()
        found = await run()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, max(0, round(0.95 * len(samples)) - 1))]
    return {"p50_ms": round(statistics.median(samples), 1), "p95_ms": round(p95, 1),
            "min_ms": round(samples[0], 1), "max_ms": round(samples[-1], 1), "rows": found}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    shape = Shape(traces=args.traces, days=args.days, orgs=args.orgs, keys_per_org=args.keys, seed=args.seed)
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="routeur-dash-bench-"))
    store = TraceStore(f"chdb:///{data_dir}")
    await store.open(ttl_days=3650)
    now_ms = int(time.time() * 1000) // 60_000 * 60_000
    tracer = Tracer(cast(Settings, None), cast(Client, None), cast(JetStreamContext, None), store)
    try:
        print(f"filling {shape.traces:,} traces over {shape.days} days into {data_dir} …", flush=True)
        filled = await fill(tracer, shape, now_ms, args.batch)
        print(f"filled in {filled['total_s']} s (insert {filled['insert_rows_per_s']:,} rows/s)", flush=True)
        _, parts = await store.select("SELECT table, count(), sum(rows) FROM system.parts WHERE active AND "
                                      "database = currentDatabase() GROUP BY table ORDER BY table", {})
        first = await tracer.logs(LogsQuery(organization_id=BIG_ORG, limit=50))
        last = first.traces[-1]
        measured = []
        for page, what, call in cases(tracer, now_ms, cursor=rows.cursor_of(last), request_id=last.request_id,
                                      some_key=f"key_{BIG_ORG}_1"):
            result = await time_case(call, args.repeats, args.warmup)
            measured.append({"page": page, "query": what, **result})
            print(f"  {page:5} {what:45} p50 {result['p50_ms']:8.1f} ms  p95 {result['p95_ms']:8.1f} ms", flush=True)
        check = await rollup_check(tracer, store, now_ms, shape.days)
    finally:
        await store.close()
        if not args.data_dir and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
            "config": {**shape.__dict__, "repeats": args.repeats, "warmup": args.warmup, "batch": args.batch,
                       "engine": "chdb (embedded ClickHouse), as `make run`"},
            "fill": filled, "active_parts": {table: n for table, n, _ in parts},
            "stored_rows": {table: int(n) for table, _, n in parts}, "rollup_equals_raw": check, "results": measured}


async def rollup_check(tracer: Tracer, store: TraceStore, now_ms: int, days: int) -> bool:
    """The Usage totals (rollup) for the big organization equal the raw traces' sums."""
    reply = await tracer.usage(UsageQuery(organization_id=BIG_ORG, bucket="day", since_ms=now_ms - (days + 1) * DAY_MS,
                                          until_ms=now_ms + 60_000), now_ms=now_ms)
    _, raw = await store.select("SELECT count(), sum(total_tokens), sum(cost_usd) FROM traces FINAL "
                                "WHERE organization_id = {org:String}", {"org": BIG_ORG})
    totals = reply.totals
    return totals is not None and (totals.requests, totals.total_tokens, totals.cost_usd) == (
        raw[0][0], raw[0][1], Decimal(raw[0][2]))


def markdown(report: dict[str, Any]) -> str:
    config, fill_ = report["config"], report["fill"]
    lines = [f"Dashboard queries over {config['traces']:,} traces ({config['days']} days, {config['orgs']} orgs), "
             f"{config['engine']}, {report['machine']['cpus']} CPUs; p50/p95 of {config['repeats']} runs",
             "", "| Page | Query | rows | p50 ms | p95 ms |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['page']} | {r['query']} | {r['rows']} | {r['p50_ms']} | {r['p95_ms']} |"
              for r in report["results"]]
    lines += ["", f"Fill: {fill_['total_s']} s ({fill_['insert_rows_per_s']:,} rows/s insert); active parts "
              f"{report['active_parts']}; stored rows {report['stored_rows']}; rollup totals = raw sums: "
              f"{report['rollup_equals_raw']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30, help="spread the traces over this many days before now")
    parser.add_argument("--orgs", type=int, default=10)
    parser.add_argument("--keys", type=int, default=4, help="keys per organization")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=50_000, help="rows per insert block")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", default="", help="use (and keep) this chdb directory instead of a temp one")
    parser.add_argument("--keep", action="store_true", help="keep the temp chdb directory")
    parser.add_argument("--no-write", action="store_true", help="print only; write nothing under bench/results")
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    text = markdown(report)
    print()
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{report['date'][:10]}-dashboard.json"
        path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
