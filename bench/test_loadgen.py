"""Unit tests of the benchmark's pure parts: schedule, percentiles, histogram, step search, stack parsing."""

from __future__ import annotations

import math

import pytest

from bench.ingest import drain_rate
from bench.loadgen import LogHistogram, StepSearch, added, arrival_offsets, percentile, ratios, summarize
from bench.procstat import parse_stat
from bench.profile import summarize_folded


def test_arrival_offsets_are_a_constant_rate_schedule() -> None:
    offsets = arrival_offsets(200, 2.5)
    assert len(offsets) == 500
    assert offsets[0] == 0.0
    assert offsets[1] == pytest.approx(0.005)
    assert offsets[-1] == pytest.approx(499 / 200)
    assert arrival_offsets(0, 10) == [] and arrival_offsets(100, 0) == []


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.9) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99.9) == 7.0
    assert math.isnan(percentile([], 50))


def test_summarize_sorts_and_added_is_a_difference_of_percentiles() -> None:
    direct = summarize([3.0, 1.0, 2.0, 4.0])
    assert (direct.n, direct.p50, direct.max, direct.mean) == (4, 2.0, 4.0, 2.5)
    proxy = summarize([4.0, 2.5, 3.0, 6.0])
    assert added(proxy, direct) == {"p50": 1.0, "p90": 2.0, "p99": 2.0, "p99.9": 2.0}
    assert ratios(proxy, direct)["p50"] == 1.5
    empty = summarize([])
    assert empty.n == 0 and math.isnan(empty.p99)


def test_log_histogram_percentiles_within_precision() -> None:
    values = [0.1 * i for i in range(1, 10_001)]  # 0.1 .. 1000 ms
    hist = LogHistogram(precision=0.02)
    for value in values:
        hist.add(value)
    exact = sorted(values)
    for q in (50, 90, 99, 99.9):
        assert hist.percentile(q) == pytest.approx(percentile(exact, q), rel=0.021)
    other = LogHistogram(precision=0.02)
    other.add(5000.0)
    hist.merge(other)
    assert hist.total == 10_001 and hist.percentile(100) == pytest.approx(5000.0, rel=0.021)
    assert hist.as_dict()["buckets"][0][1] >= 1


def test_step_search_grows_then_bisects() -> None:
    search = StepSearch(100, factor=2, refine=2)
    capacity = 700
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        search.record(rate, rate <= capacity)
    assert tried[:4] == [100, 200, 400, 800]
    assert tried[4:] == [600, 700]  # bisect 400..800, then 600..800
    assert search.best == 700


def test_step_search_goes_down_when_the_first_step_fails() -> None:
    search = StepSearch(1000, factor=2, refine=0)
    while (rate := search.next_rate()) is not None:
        search.record(rate, rate <= 300)
    assert search.best == 250


def test_parse_stat_handles_spaces_in_the_command_name() -> None:
    fields = ["S", "42"] + ["0"] * 9 + ["150", "50"] + ["0"] * 10
    parent, cpu = parse_stat("1234 (python -m x) " + " ".join(fields))
    assert parent == 42
    assert cpu > 0


def test_summarize_folded_self_and_inclusive_shares() -> None:
    text = "\n".join([
        "main (/work/main/services/proxy/__main__.py:10);handle (services/proxy/chat.py:5);encode (msgspec/x.py:1) 3",
        "main (/work/main/services/proxy/__main__.py:10);handle (services/proxy/chat.py:7) 1",
        "garbage line",
    ])
    summary = summarize_folded(text)
    assert summary["samples"] == 4
    own = {f["function"]: f["share"] for f in summary["self"]}  # type: ignore[attr-defined]
    assert own == {"encode (msgspec/x.py)": 0.75, "handle (services/proxy/chat.py)": 0.25}
    attributed = {f["function"]: f["share"] for f in summary["attributed"]}  # type: ignore[attr-defined]
    assert attributed == {"handle (services/proxy/chat.py)": 1.0}
    inclusive = [f["function"] for f in summary["inclusive_routeur"]]  # type: ignore[attr-defined]
    assert inclusive == ["handle (services/proxy/chat.py)"]  # `main` is an entry point, left out


def test_drain_rate_uses_samples_after_ready() -> None:
    samples = [(0.0, -1), (1.0, 1000), (2.0, 11_000), (3.0, 21_000)]
    assert drain_rate(samples, 21_000, since=1.0) == (10_000.0, True)
    rate, exact = drain_rate([(5.0, 100)], 100, since=4.0)
    assert (rate, exact) == (100.0, False)
