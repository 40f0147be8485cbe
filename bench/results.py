"""Shaping a bench run into its result: per-run JSON, the issue's targets met or not, and the files written to
bench/results/<date>.{json,md}."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench import report
from bench.loadgen import RunResult, histogram, summarize

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"added_p50_ms": 1.0, "added_p99_ms": 5.0, "rps": 1500.0, "rps_stream": 800.0, "cpu_ms": 1.0,
           "traces_per_s": 20_000.0}


def num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_json(result: RunResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "url": result.url, "rate": result.rate, "achieved_rps": round(result.achieved_rps, 1),
        "sent": result.sent, "ok": result.ok, "errors": result.errors, "error_kinds": result.error_kinds,
        "latency": summarize(result.latencies_ms).as_dict(),
        "dispatch_lag": summarize(result.dispatch_lag_ms).as_dict(),
        "generator_busy": round(result.generator_busy, 3),
        "histogram": histogram(result.latencies_ms).as_dict(),
    }
    if result.stream:
        out["ttft"] = summarize(result.ttft_ms).as_dict()
        out["gap"] = summarize(result.gap_ms).as_dict()
    return out


def step(result: RunResult, passed: bool) -> dict[str, Any]:
    lat = summarize(result.latencies_ms)
    return {"rate": result.rate, "passed": passed, "achieved_rps": round(result.achieved_rps, 1),
            "errors": result.errors, "p50": round(lat.p50, 3) if lat.n else None,
            "p99": round(lat.p99, 3) if lat.n else None, "generator_busy": round(result.generator_busy, 3)}


def headroom(res: dict[str, Any]) -> float | None:
    chosen = res["upstream"].get(res["upstream"].get("chosen", ""), {}).get("rps")
    proxy = (res["max_sustainable"].get("non_stream") or {}).get("rps")
    return round(chosen / proxy, 2) if chosen and proxy else None


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets with what was measured and whether it is met."""
    out = []
    at300 = next((e for e in res["fixed"] if e["rate"] == 300), None)

    def add(key: str, name: str, value: float | None, target: str, met: bool | None, unit: str) -> None:
        digits = 2 if unit == "ms" else 0
        measured = ("–" if value is None or (isinstance(value, float) and math.isnan(value))
                    else f"{value:,.{digits}f} {unit}")
        out.append({"key": key, "name": name, "value": value, "measured": measured, "target": target, "met": met})

    p50 = at300["added"]["p50"] if at300 else None
    p99 = at300["added"]["p99"] if at300 else None
    clean = bool(at300) and at300 is not None and at300["proxy"]["errors"] == 0
    add("added_p50_ms", "Added latency p50 @ 300 RPS (non-stream, upstream 0 ms)", p50, "≤ 1 ms",
        None if p50 is None else p50 <= TARGETS["added_p50_ms"] and clean, "ms")
    add("added_p99_ms", "Added latency p99 @ 300 RPS", p99, "≤ 5 ms",
        None if p99 is None else p99 <= TARGETS["added_p99_ms"] and clean, "ms")
    searched = res["max_sustainable"]  # a search that found nothing is "not met"; no search (narrow run) is "–"
    ns = (searched.get("non_stream") or {}).get("rps")
    add("rps", "Max sustainable, non-streaming, 0 errors", ns, "≥ 1,500 RPS",
        (ns or 0) >= TARGETS["rps"] if "non_stream" in searched else None, "RPS")
    st = (searched.get("stream") or {}).get("rps")
    add("rps_stream", "Max sustainable, streaming, 0 errors", st, "≥ 800 RPS",
        (st or 0) >= TARGETS["rps_stream"] if "stream" in searched else None, "RPS")
    cpu = res["cpu"].get("300 RPS", {}).get("routeur_total_ms")
    add("cpu_ms", "CPU per request, all Routeur processes @ 300 RPS", cpu, "≤ 1 ms",
        None if cpu is None else cpu <= TARGETS["cpu_ms"], "ms")
    rate = (res.get("ingest") or {}).get("rate")
    add("traces_per_s", "Tracer ingest into ClickHouse", rate, "≥ 20,000 traces/s",
        None if rate is None else rate >= TARGETS["traces_per_s"], "traces/s")
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(type(value).__name__)


def _clean(value: Any) -> Any:
    """NaN → None, so the JSON is standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write(result: dict[str, Any], date: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS / f"{date}.json", RESULTS / f"{date}.md"
    json_path.write_text(json.dumps(_clean(result), indent=1, default=_json_default) + "\n")
    md_path.write_text(report.render(result) + "\n")
    return json_path, md_path
