"""`python -m bench`: Routeur's added latency, throughput, CPU per request and tracer ingest, against a direct call.

The command line only; the phases are in bench/run.py, the result's shape in bench/results.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench import report
from bench.results import rel, write
from bench.run import Bench, log


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--use-running", action="store_true", help="measure the stack `make up` started")
    parser.add_argument("--data-dir", default=os.environ.get("ROUTEUR_DATA_DIR", ".data"),
                        help="with --use-running: where run/env is")
    parser.add_argument("--rates", default="50,150,300,1000", help="fixed rates (RPS), comma-separated")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every run's duration (0.3 = quick look)")
    parser.add_argument("--p99-bound-ms", type=float, default=50.0, help="p99 bound of a sustainable rate")
    parser.add_argument("--ingest-n", type=int, default=50_000, help="trace events for the ingest test")
    parser.add_argument("--ingest-repeat", type=int, default=None,
                        help="ingest runs, the median is reported (default 1; 3 with --only ingest)")
    parser.add_argument("--only", choices=("all", "fixed", "ingest"), default="all",
                        help="narrow runs: `fixed` = the fixed-rate pairs with CPU per request only (with "
                             "--upstream static|emulator the upstream capacity search is skipped too); `ingest` = "
                             "tracer ingest only")
    parser.add_argument("--suffix", default="", help="results go to bench/results/<date>-<suffix>.{json,md}")
    parser.add_argument("--upstream", choices=("auto", "emulator", "static"), default="auto")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="py-spy profiles: when a target is not met (auto), always or never")
    parser.add_argument("--loadgen-cpu", type=int, default=None, help="core for the load generator (default: last)")
    parser.add_argument("--proxy-workers", type=int, default=1, metavar="N",
                        help="PROXY_WORKERS of the bench's own stack: N proxy processes on one port (SO_REUSEPORT)")
    parser.add_argument("--background-nice", type=int, default=10, choices=range(20), metavar="N",
                        help="ROUTEUR_NICE of the tracer and archiver (as `make run` does; 0 = same priority as "
                             "the proxy)")
    parser.add_argument("--keep-data", action="store_true", help="keep the temp data dir (logs) afterwards")
    parser.add_argument("--render", metavar="JSON", help="only re-render the Markdown of a result JSON and print it")
    args = parser.parse_args()
    if args.render:
        path = Path(args.render)
        markdown = report.render(json.loads(path.read_text()))
        path.with_suffix(".md").write_text(markdown + "\n")
        print(markdown)
        return 0
    if args.proxy_workers < 1:
        parser.error("--proxy-workers must be at least 1")
    if args.proxy_workers > 1 and args.use_running:
        parser.error("--proxy-workers applies to the bench's own stack; for --use-running start it with "
                     "PROXY_WORKERS=N make up")
    if args.ingest_repeat is None:
        args.ingest_repeat = 3 if args.only == "ingest" else 1
    bench = Bench(args)
    try:
        bench.start()
        result = bench.execute()
    finally:
        bench.stop()
    json_path, md_path = write(result, bench.date)
    print(report.render(result))
    log(f"wrote {rel(json_path)} and {rel(md_path)} in {result['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
