"""Markdown rendering of a benchmark result (the JSON written next to it is the source of truth)."""

from __future__ import annotations

import math
from typing import Any

PCTS = ("p50", "p90", "p99", "p99.9")

LITELLM_NAME = "LiteLLM 1.106.2"
LITELLM_SOURCE = "issue #9, measured on this 2-core machine kind with an open-loop generator and a static upstream"
LITELLM_ADDED_MS: dict[int, tuple[float, float]] = {50: (9.0, 14.0), 150: (12.5, 41.0)}
LITELLM_MAX_RPS, LITELLM_MAX_RPS_STREAM, LITELLM_CPU_MS = 220, 114, "9–10"
TENSORZERO = "TensorZero (Rust): p50 0.35 ms / p99 0.94 ms added at 10k QPS (published by TensorZero, other hardware)"


def ms(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def rps(value: Any) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    marks = [("---:" if a == "r" else "---") for a in (align or "l" + "r" * (len(header) - 1))]
    return [_row(header), _row(marks), *(_row(r) for r in rows)]


def _pcts(summary: dict[str, Any], names: tuple[str, ...] = PCTS) -> str:
    return " / ".join(ms(summary.get(n)) for n in names)


def _errors(run: dict[str, Any]) -> str:
    if not run["errors"]:
        return "0"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(run["error_kinds"].items()))
    return f"{run['errors']} ({kinds})"


def _status(met: bool | None) -> str:
    return "–" if met is None else ("met" if met else "**NOT met**")


def render(result: dict[str, Any]) -> str:
    """The whole Markdown report."""
    m = result["machine"]
    cfg = result["config"]
    up = result["upstream"]
    out = [f"# Routeur benchmark — {m['date']}", ""]
    out += [f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
            f"Python {m['python']}, aiohttp {m['aiohttp']}, uvloop {m['uvloop']}, msgspec {m['msgspec']}, "
            f"nats-server {m['nats_server']}. Routeur commit `{m['git_commit']}`"
            f"{' (uncommitted changes)' if m['git_dirty'] else ''}. Wall time {result['elapsed_s']:.0f} s.", ""]
    if cfg.get("proxy_workers", 1) > 1:
        out += [f"Proxy: **{cfg['proxy_workers']} worker processes** on one port (`PROXY_WORKERS`, SO_REUSEPORT: "
                f"the kernel assigns each new connection to a worker; keep-alive connections stay on theirs).", ""]
    if cfg.get("background_nice"):
        out += [f"The tracer and archiver run at nice {cfg['background_nice']} (`ROUTEUR_NICE`, as `make run` starts "
                f"them on one machine): their batch work yields the CPU to the proxy.", ""]
    if up.get("chosen"):
        out += _method(cfg, up)
    else:
        out += [f"Narrow run (`--only {cfg.get('only')}`): only the sections below were measured.", ""]
    return _body(result, out)


def _method(cfg: dict[str, Any], up: dict[str, Any]) -> list[str]:
    return [f"Method: open-loop load (constant arrival rate; each latency measured from the request's *scheduled* "
            f"send time, so coordinated omission is corrected) from one aiohttp process pinned to CPU "
            f"{cfg['loadgen_cpu']}, keep-alive pool. Each rate is run against the upstream **directly** and "
            f"**through the proxy** in the same run; *added* = proxy pX − direct pX. Upstream: **{up['chosen']}** "
            f"({up['reason']}). Pipeline on the hot path: {cfg['pipeline']}. Sustainable = 0 errors, ≥ 97 % of the "
            f"offered rate delivered and p99 ≤ {cfg['p99_bound_ms']:.0f} ms over {cfg['step_s']:.0f} s steps "
            f"(a failing step is run once more and counts as sustained if the second attempt passes).", ""]


def _body(result: dict[str, Any], out: list[str]) -> str:
    up = result["upstream"]
    others = result.get("interference") or {}
    if others.get("other_cores", 0) > 0.05:
        out += [f"**Warning: other processes on this machine used {others['other_cores']:.2f} cores on average "
                f"during the run** ({others['other_cpu_s']:.0f} CPU-s over {others['wall_s']:.0f} s; not Routeur, not "
                f"the bench). On a 2-core machine that competes with what is measured; re-run on a quiet machine.",
                ""]
    out += ["## Targets (issue #9)", ""]
    out += _table(["What", "Measured", "Target", "Status"],
                  [[t["name"], t["measured"], t["target"], _status(t["met"])] for t in result["targets"]], "llll")
    out += [""]

    if result["fixed"]:
        out += _fixed(result)
    stopped = (result.get("tracer_stopped") or {}).get("fixed")
    if stopped:
        out += ["Diagnostic, same 300 RPS with the **tracer stopped** (traces wait in JetStream; shows the proxy "
                "without the tracer's CPU on this 2-core machine):", ""]
        out += _table(["RPS", "Errors direct / proxy", "Direct ms", "Proxy ms", "Added p50/p90/p99/p99.9 ms"],
                      [[rps(stopped["rate"]), f"{_errors(stopped['direct'])} / {_errors(stopped['proxy'])}",
                        _pcts(stopped["direct"]["latency"]), _pcts(stopped["proxy"]["latency"]),
                        f"**{_pcts(stopped['added'])}**"]])
        out += [""]

    if result.get("slow_upstream"):
        out += ["## Added latency, upstream at 50 ms (non-streaming)", ""]
        rows = []
        for entry in result["slow_upstream"]:
            rows.append([rps(entry["rate"]), f"{_errors(entry['direct'])} / {_errors(entry['proxy'])}",
                         _pcts(entry["direct"]["latency"]), _pcts(entry["proxy"]["latency"]),
                         f"**{_pcts(entry['added'])}**"])
        out += _table(["RPS", "Errors direct / proxy", "Direct ms", "Proxy ms", "Added ms"], rows)
        out += [""]

    if result["streaming"]:
        out += ["## Streaming (SSE)", ""]
    rows = []
    for entry in result["streaming"]:
        rows.append([entry["profile"], rps(entry["rate"]), f"{_errors(entry['direct'])} / {_errors(entry['proxy'])}",
                     _pcts(entry["direct"]["ttft"], ("p50", "p99")), _pcts(entry["proxy"]["ttft"], ("p50", "p99")),
                     f"**{_pcts(entry['added_ttft'], ('p50', 'p99'))}**",
                     f"**{_pcts(entry['added_total'], ('p50', 'p99'))}**",
                     _pcts(entry["added_gap"], ("p50", "p99"))])
    if rows:
        out += _table(["Upstream", "RPS", "Errors direct / proxy", "Direct TTFT p50/p99", "Proxy TTFT p50/p99",
                       "Added TTFT p50/p99", "Added total p50/p99", "Added inter-chunk gap p50/p99"], rows, "llllllll")
        out += ["", "TTFT = first body bytes; inter-chunk gap = (last − first event time) / (events − 1) per request.",
                ""]

    rows = []
    for kind, label in (("non_stream", "non-streaming"), ("stream", "streaming"),
                        ("non_stream_tracer_stopped", "non-streaming, tracer stopped (diagnostic: traces wait in "
                                                      "JetStream, so the tracer's CPU is not competing)")):
        found = result["max_sustainable"].get(kind)
        if not found:
            continue
        steps = ", ".join(f"{s['rate']:.0f}{'✓' if s['passed'] else '✗'}" for s in found["steps"])
        rows.append([label, f"**{rps(found['rps'])}**", steps])
    for name in ("emulator", "static"):
        found = up.get(name)
        if found and found["steps"]:
            steps = ", ".join(f"{s['rate']:.0f}{'✓' if s['passed'] else '✗'}" for s in found["steps"])
            bound = " (load generator saturated: a lower bound)" if found.get("generator_bound") else ""
            cpu = found.get("cpu_ms_per_request")
            cost = f", {cpu:.3f} ms CPU/request" if cpu is not None else ""
            rows.append([f"upstream alone: {name}{cost}", f"{rps(found['rps'])}{bound}", steps])
    if rows:
        out += ["## Maximum sustainable rate", ""]
        out += _table(["Path", "Max RPS", "Rates tried (✓ sustained, ✗ not)"], rows, "lrl")
    at_max = result["max_sustainable"].get("non_stream", {}).get("at_max")
    if at_max:
        out += ["", f"At the non-streaming max ({rps(at_max['rate'])} RPS): added p50/p90/p99/p99.9 = "
                f"{_pcts(at_max['added'])} ms, errors {_errors(at_max['proxy'])}."]
    out += [""]

    if result["cpu"]:
        out += _cpu(result)
    ingest = result.get("ingest")
    if ingest:
        out += _ingest(ingest)
    if result.get("components"):
        out += _components(result["components"])
    if result["fixed"] or result["max_sustainable"]:
        out += _peers(result)
    out += _profiles(result)
    if result.get("not_measured"):
        out += ["## Not measured yet", ""]
        out += [f"- {item}" for item in result["not_measured"]]
        out += [""]
    return "\n".join(out)


def _fixed(result: dict[str, Any]) -> list[str]:
    out = ["## Added latency, non-streaming, upstream at 0 ms", ""]
    rows = []
    for entry in result["fixed"]:
        direct, proxy = entry["direct"], entry["proxy"]
        rows.append([rps(entry["rate"]), rps(proxy["achieved_rps"]), f"{_errors(direct)} / {_errors(proxy)}",
                     _pcts(direct["latency"]), _pcts(proxy["latency"]), f"**{_pcts(entry['added'])}**",
                     f"{ms(entry['ratio']['p50'])}× / {ms(entry['ratio']['p99'])}×", str(proxy["latency"]["n"])])
    out += _table(["RPS", "Achieved", "Errors direct / proxy", "Direct p50/p90/p99/p99.9 ms",
                   "Proxy p50/p90/p99/p99.9 ms", "Added p50/p90/p99/p99.9 ms", "Ratio p50 / p99", "n"], rows)
    out += ["", "Added = proxy pX − direct pX of two runs; a negative value means the direct run had the worse "
            "tail (noise, e.g. a stall of a neighbouring process), not that the proxy made calls faster.", ""]
    return out


def _cpu(result: dict[str, Any]) -> list[str]:
    out = ["## CPU per request (ms of CPU, /proc utime+stime, whole process trees)", ""]
    names: list[str] = []
    for block in result["cpu"].values():
        names += [n for n in block["per_process_ms"] if n not in names]
    rows = []
    for label, block in result["cpu"].items():
        rows.append([label, *(ms(block["per_process_ms"].get(n), 3) for n in names),
                     f"**{ms(block['routeur_total_ms'], 3)}**", ms(block.get("upstream_ms"), 3),
                     ms(block.get("loadgen_ms"), 3), ms(block.get("other_processes_cores"), 2)])
    out += _table(["Run", *names, "Routeur total", "upstream", "load generator",
                   "other processes (cores, not per request)"], rows)
    out += ["", "Idle background work of every service during the run is included (conservative).", ""]
    spread = [(label, block["proxy_worker_cpu_s"]) for label, block in result["cpu"].items()
              if block.get("proxy_worker_cpu_s")]
    if spread:
        out += ["Proxy CPU seconds per worker process (busiest first; `proxy` above includes them all): "
                + "; ".join(f"{label}: " + " / ".join(f"{s:.2f}" for s in seconds) for label, seconds in spread)
                + ".", ""]
    checks = [(e, e.get("traces")) for e in [*result["fixed"], *result["slow_upstream"], *result["streaming"]]]
    checks = [(e, t) for e, t in checks if t and t.get("stored") is not None]
    if checks:
        lag = [f"{rps(e['rate'])} RPS {'stream' if e['stream'] else 'json'} {e['profile']}: "
               f"{t['stored']:,} / {t['sent']:,}" for e, t in checks]
        complete = all(t["stored"] >= t["sent"] for _, t in checks)
        out += [f"Traces stored / proxy requests sent so far, checked after each run "
                f"({'the tracer kept up' if complete else '**the tracer fell behind**'}): " + "; ".join(lag) + ".", ""]
    if result.get("restarts"):
        out += [f"**Services restarted by the supervisor during the run:** {result['restarts']}.", ""]
    return out


def _components(parts: dict[str, Any]) -> list[str]:
    """Routing, admission and DLP on their own (bench/components.py)."""
    admission, dlp = parts["admission"], parts["dlp"]
    out = ["## Components", ""]
    rows = [["Routing decision in the proxy (facts + decide)", f"{parts['routing_us']:.1f} µs"],
            ["Leased admission in the proxy (take + give back)", f"{admission['leased_in_proxy_us']:.1f} µs"],
            ["Billing's admit decision (key without / with RPM+TPM limits)",
             f"{admission['billing_decision_us']:.1f} / {admission['billing_decision_rate_limited_us']:.1f} µs"]]
    trip = admission.get("bus_round_trip")
    if trip:
        rows.append([f"Billing admission round trip over NATS ({trip['requests']:,} sequential)",
                     f"p50 {trip['p50_ms']:.3f} ms, p99 {trip['p99_ms']:.3f} ms"])
    for policy in ("redact", "redact_restore", "block"):
        row = dlp[policy]
        rows.append([f"DLP `{policy}` µs/KB: clean / PII / dense PII / 30 short turns",
                     f"{row['clean']} / {row['pii']} / {row['pii_dense']} / {row['short_turns']}"])
    out += _table(["What", "Cost"], rows, "ll")
    return out + ["", "In-process timings are the best of 5 runs. DLP target: ≤ 50 µs/KB.", ""]


def _ingest(ingest: dict[str, Any]) -> list[str]:
    out = ["## Tracer ingest", ""]
    runs = ingest.get("runs") or []
    which = f"the median of {len(runs)} runs: " if len(runs) > 1 else ""
    bound = "" if ingest["exact"] else " (lower bound)"
    out += [f"{ingest['n']:,} TraceEvents published to JetStream ({ingest['publish_rate']:,.0f}/s with acks), "
            f"{ingest['method']}: {which}**{ingest['rate']:,.0f} traces/s**{bound}"
            f" stored in ClickHouse; tracer CPU {ms(ingest.get('tracer_cpu_us_per_trace'), 1)} µs/trace, "
            f"nats-server {ms(ingest.get('nats_cpu_us_per_trace'), 1)} µs/trace.", ""]
    if len(runs) > 1:
        out += _table(["Run", "Traces/s", "Tracer CPU µs/trace", "nats-server CPU µs/trace"],
                      [[str(i + 1), f"{r['rate']:,.0f}{'' if r['exact'] else ' (lower bound)'}",
                        ms(r["tracer_cpu_us_per_trace"], 1), ms(r["nats_cpu_us_per_trace"], 1)]
                       for i, r in enumerate(runs)], "rrrr")
        out += [""]
    return out


def _peers(result: dict[str, Any]) -> list[str]:
    out = ["## Peers (quoted, not measured here)", ""]
    by_rate = {e["rate"]: e for e in result["fixed"]}
    rows = []
    for rate, (p50, p99) in LITELLM_ADDED_MS.items():
        ours = by_rate.get(rate)
        measured = f"{ms(ours['added']['p50'])} / {ms(ours['added']['p99'])}" if ours else "–"
        rows.append([f"added p50 / p99 ms @ {rate} RPS", measured, f"{p50:g} / {p99:g}"])
    ns = result["max_sustainable"].get("non_stream") or {}
    st = result["max_sustainable"].get("stream") or {}
    rows.append(["max sustainable RPS, non-streaming", rps(ns.get("rps")), f"~{LITELLM_MAX_RPS}"])
    rows.append(["max sustainable RPS, streaming", rps(st.get("rps")), f"~{LITELLM_MAX_RPS_STREAM}"])
    cpu_target = result["cpu"].get("300 RPS")
    rows.append(["CPU ms / request", ms(cpu_target["routeur_total_ms"], 2) if cpu_target else "–", LITELLM_CPU_MS])
    out += _table(["", "Routeur (measured here)", f"{LITELLM_NAME} (quoted: {LITELLM_SOURCE})"], rows, "lrr")
    out += ["", TENSORZERO + ".", ""]
    return out


def _profiles(result: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, prof in (result.get("profiles") or {}).items():
        out += [f"## Profile: {name} ({prof['why']})", ""]
        if prof.get("error"):
            out += [prof["error"], ""]
            continue
        summary = prof["summary"]
        out += [f"py-spy, {prof['seconds']} s during {prof['load']}, {summary['samples']} samples "
                f"(idle excluded); flamegraph `{prof['svg']}`, folded stacks `{prof['folded']}`.", ""]
        rows = [[f"{i + 1}", f"`{f['function']}`", f"{f['share'] * 100:.1f} %"] for i, f in enumerate(summary["self"])]
        out += ["Top functions by own time (leaf frames):", ""]
        out += _table(["#", "Function", "Share"], rows, "rlr")
        rows = [[f"`{f['function']}`", f"{f['share'] * 100:.1f} %"] for f in summary["attributed"]]
        out += ["", "Time attributed to the deepest Routeur frame of each sample (our code plus what it calls):", ""]
        out += _table(["Where", "Share"], rows, "lr")
        rows = [[f"`{f['function']}`", f"{f['share'] * 100:.1f} %"] for f in summary["inclusive_routeur"]]
        out += ["", "Routeur functions by inclusive time (process and thread entry points left out):", ""]
        out += _table(["Function", "Share"], rows, "lr")
        rows = [[f"`{f['function']}`", f"{f['share'] * 100:.1f} %"] for f in summary["by_area"][:10]]
        out += ["", "Own time by package:", ""]
        out += _table(["Package", "Share"], rows, "lr")
        out += [""]
    return out
