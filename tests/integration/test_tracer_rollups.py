"""The tracer against a real embedded ClickHouse (chdb) in a temp dir: rollups, usage and logs queries."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from proto.trace import LogsQuery, TraceEvent, UsageQuery
from services.tracer.rows import QueryError
from services.tracer.service import Tracer
from services.tracer.store import TraceStore

T0 = 1_763_900_000_000 // 3_600_000 * 3_600_000  # an hour boundary
HOSTILE = ("x' OR 1=1 --", "'; DROP TABLE traces; --", "\\' OR ''='", "model) OR (1=1", "{model:String}")


def event(i: int, *, ts: int | None = None, org: str = "org_a", key: str = "key_1", model: str = "m1",
          provider: str = "p1", status: int = 200, fallback: str | None = None, reason: str = "default",
          cost: str = "0.000001234567", latency: float = 10.0, redactions: int = 0) -> TraceEvent:
    return TraceEvent(request_id=f"req_{i:08d}", timestamp_ms=ts if ts is not None else T0 + i,
                      organization_id=org, api_key_id=key, endpoint="/v1/chat/completions", requested_model=model,
                      model=model, provider=provider, upstream_model=model, route_reason=reason,
                      status_code=status, stream=False, latency_ms=latency, upstream_latency_ms=latency,
                      prompt_tokens=i % 97, completion_tokens=i % 13, total_tokens=i % 97 + i % 13,
                      cost_usd=Decimal(cost), fallback=fallback, redactions=redactions)


class Harness:
    def __init__(self, store: TraceStore, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.tracer = Tracer(None, None, None, store)  # type: ignore[arg-type]
        self.loop = loop

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def sql(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.run(self.store.select(query, params or {}))[1]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    path: Path = tmp_path_factory.mktemp("chdb")
    store = TraceStore(f"chdb:///{path}")
    loop.run_until_complete(store.open(ttl_days=3650))
    yield Harness(store, loop)
    loop.run_until_complete(store.close())
    loop.close()


def rollup_vs_raw(h: Harness, where: str = "1 = 1") -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    raw = h.sql(f"SELECT count(), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens), sum(cost_usd), "
                f"countIf(status_code >= 400), countIf(fallback IS NOT NULL), sum(redactions) "
                f"FROM traces FINAL WHERE {where}")[0]
    rolled = h.sql("SELECT sum(requests), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens), "
                   "sum(cost_usd), sum(errors), sum(fallbacks), sum(redactions) FROM usage_minute")[0]
    for table in ("usage_hour", "usage_day"):
        coarser = h.sql("SELECT sum(requests), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens), "
                        f"sum(cost_usd), sum(errors), sum(fallbacks), sum(redactions) FROM {table}")[0]
        assert tuple(coarser) == tuple(rolled), f"{table} holds the same totals as usage_minute"
    return tuple(raw), tuple(rolled)


def test_rollup_totals_equal_raw_after_10k_traces_with_redeliveries(harness: Harness) -> None:
    rnd = random.Random(7)  # noqa: S311 (test data)
    events = [event(i, ts=T0 + rnd.randrange(0, 3 * 86_400_000), org=rnd.choice(["org_a", "org_b"]),
                    key=rnd.choice(["key_1", "key_2", "key_3"]), model=rnd.choice(["m1", "m2"]),
                    provider=rnd.choice(["p1", "p2"]), status=rnd.choice([200] * 9 + [429, 500]),
                    fallback=rnd.choice([None] * 5 + ["p2/m1"]), cost=f"0.{rnd.randrange(10**12):012d}",
                    latency=rnd.uniform(1, 500), redactions=rnd.choice([0, 0, 1, 3]))
              for i in range(10_000)]
    batches = [events[i:i + 1000] for i in range(0, len(events), 1000)]
    inserted = sum(harness.run(harness.tracer.store_events(b, redelivered=False)) for b in batches)
    assert inserted == 10_000
    # the same batch retried (insert succeeded, ack lost): ClickHouse drops it by token, rollups included
    harness.run(harness.tracer.store_events(batches[0], redelivered=False))
    # redeliveries regrouped into a new batch with in-batch repeats: dropped by the stored-id check
    regrouped = batches[1][:300] + batches[2][500:] + batches[1][:10]
    assert harness.run(harness.tracer.store_events(regrouped, redelivered=True)) == 0
    raw, rolled = rollup_vs_raw(harness)
    assert raw[0] == 10_000
    assert raw == rolled
    assert isinstance(rolled[4], Decimal) and rolled[4] == sum((e.cost_usd for e in events), Decimal(0))
    harness.sql("OPTIMIZE TABLE usage_minute FINAL")
    harness.sql("OPTIMIZE TABLE usage_hour FINAL")
    harness.sql("OPTIMIZE TABLE usage_day FINAL")
    assert rollup_vs_raw(harness) == (raw, rolled)


def test_a_ragged_range_is_widened_to_whole_buckets_and_counts_them_exactly(harness: Harness) -> None:
    """Each bucket width reads its own rollup; the reply's range is the whole buckets it covered."""
    since, until = T0 + 37 * 60_000, T0 + 2 * 86_400_000 - 13 * 60_000
    for bucket in ("minute", "hour", "day"):
        reply = harness.run(harness.tracer.usage(UsageQuery(organization_id="org_b", group_by="model",
                                                            bucket=bucket, since_ms=since, until_ms=until)))
        raw = harness.sql("SELECT count(), sum(cost_usd) FROM traces FINAL WHERE organization_id = 'org_b' AND "
                          f"ts >= fromUnixTimestamp64Milli({reply.since_ms}) AND "
                          f"ts < fromUnixTimestamp64Milli({reply.until_ms})")[0]
        assert reply.since_ms <= since and reply.until_ms >= until
        assert reply.totals is not None and (reply.totals.requests, reply.totals.cost_usd) == tuple(raw)
        assert sum(row.requests for row in reply.rows) == raw[0]


def test_usage_groups_and_buckets_from_the_rollup(harness: Harness) -> None:
    until = T0 + 3 * 86_400_000
    total_raw = harness.sql("SELECT count(), sum(cost_usd), sum(total_tokens) FROM traces FINAL "
                            "WHERE organization_id = 'org_a'")[0]
    for group_by, column in (("model", "model"), ("key", "api_key_id"), ("provider", "provider")):
        for bucket, width in (("minute", 60_000), ("hour", 3_600_000), ("day", 86_400_000)):
            query = UsageQuery(organization_id="org_a", group_by=group_by, bucket=bucket, since_ms=T0,
                               until_ms=until if bucket != "minute" else T0 + 86_400_000)
            reply = harness.run(harness.tracer.usage(query))
            assert reply.error is None and reply.rows and reply.totals is not None
            assert all(row.bucket_ms % width == 0 for row in reply.rows)
            assert sum(r.requests for r in reply.rows) == reply.totals.requests
            assert sum((r.cost_usd for r in reply.rows), Decimal(0)) == reply.totals.cost_usd
            if bucket != "minute":
                assert (reply.totals.requests, reply.totals.cost_usd, reply.totals.total_tokens) == total_raw
                per_group = dict(harness.sql(f"SELECT {column}, count() FROM traces FINAL WHERE organization_id "
                                             f"= 'org_a' GROUP BY {column}"))
                got: dict[str, int] = {}
                for row in reply.rows:
                    got[row.group] = got.get(row.group, 0) + row.requests
                assert got == per_group
            assert 0 < reply.totals.p50_latency_ms <= reply.totals.p95_latency_ms <= 500
            assert 0 < reply.totals.error_rate < 0.5
    one_key = harness.run(harness.tracer.usage(UsageQuery(organization_id="org_a", group_by="model", bucket="day",
                                                           since_ms=T0, until_ms=until, api_key_id="key_2")))
    assert one_key.totals is not None and one_key.totals.requests == harness.sql(
        "SELECT count() FROM traces FINAL WHERE organization_id = 'org_a' AND api_key_id = 'key_2'")[0][0]


@pytest.mark.parametrize("query, message", [
    (UsageQuery(group_by="route"), "group_by"),
    (UsageQuery(bucket="week"), "bucket"),
    (UsageQuery(since_ms=10, until_ms=5), "before"),
    (UsageQuery(since_ms=-1, until_ms=5), "since_ms"),
    (UsageQuery(bucket="minute", since_ms=0, until_ms=T0), "buckets"),
    (UsageQuery(model="m" * 1000), "model"),
])
def test_usage_validation(harness: Harness, query: UsageQuery, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        harness.run(harness.tracer.usage(query))


def test_injection_attempts_return_empty(harness: Harness) -> None:
    for hostile in HOSTILE:
        for field in ("organization_id", "api_key_id", "model", "provider"):
            reply = harness.run(harness.tracer.usage(UsageQuery(**{field: hostile}, since_ms=T0,  # type: ignore[arg-type]
                                                                until_ms=T0 + 86_400_000, bucket="day")))
            assert reply.rows == () and reply.totals is not None and reply.totals.requests == 0
        for field in ("organization_id", "api_key_id", "model", "provider", "route_reason"):
            logs = harness.run(harness.tracer.logs(LogsQuery(**{field: hostile})))  # type: ignore[arg-type]
            assert logs.traces == ()
    assert harness.sql("SELECT count() FROM traces FINAL")[0][0] == 10_000


def test_logs_filters(harness: Harness) -> None:
    base = T0 + 10 * 86_400_000
    special = [event(100_000 + i, ts=base + i * 1000, org="org_logs", key=f"k{i % 2}", reason=("tag" if i % 3 == 0
                     else "default"), fallback=("p2/m1" if i % 4 == 0 else None), status=(500 if i == 5 else 200))
               for i in range(20)]
    harness.run(harness.tracer.store_events(special, redelivered=False))
    logs = harness.tracer.logs

    def ids(query: LogsQuery) -> list[int]:
        return [int(t.request_id[4:]) - 100_000 for t in harness.run(logs(query)).traces]

    assert ids(LogsQuery(organization_id="org_logs")) == list(range(19, -1, -1))
    assert ids(LogsQuery(organization_id="org_logs", has_fallback=True)) == [16, 12, 8, 4, 0]
    assert len(ids(LogsQuery(organization_id="org_logs", has_fallback=False))) == 15
    assert ids(LogsQuery(organization_id="org_logs", route_reason="tag")) == [18, 15, 12, 9, 6, 3, 0]
    assert ids(LogsQuery(organization_id="org_logs", since_ms=base + 5000, until_ms=base + 8000)) == [7, 6, 5]
    assert ids(LogsQuery(organization_id="org_logs", status_code=500)) == [5]
    assert ids(LogsQuery(organization_id="org_logs", api_key_id="k0", route_reason="tag", has_fallback=True)) == [12, 0]
    # cursor pagination with filters
    first = harness.run(logs(LogsQuery(organization_id="org_logs", has_fallback=False, limit=10)))
    assert len(first.traces) == 10 and first.next_cursor
    rest = harness.run(logs(LogsQuery(organization_id="org_logs", has_fallback=False, limit=10,
                                      cursor=first.next_cursor)))
    assert len(rest.traces) == 5 and {t.request_id for t in first.traces}.isdisjoint(t.request_id for t in rest.traces)
    with pytest.raises(QueryError, match="before"):
        harness.run(logs(LogsQuery(since_ms=base + 10, until_ms=base)))
    with pytest.raises(QueryError, match="cursor"):
        harness.run(logs(LogsQuery(cursor="x' OR 1=1 --")))



