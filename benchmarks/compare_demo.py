"""Time `taxonomist demo` (what `make demo` runs) and print its headline numbers.

    nice python benchmarks/compare_demo.py --out /tmp/demo --records 24000 --json demo.json

Prints the stage timings (wall and this process's CPU seconds: on a shared
machine CPU time is the figure that transfers to an idle 2-core box) and every
headline number of the report; `--json OUT` writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="directory for the demo's data and report")
    ap.add_argument("--records", type=int, default=24_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--engines", default="", help="comma-separated; default: the demo's engines")
    ap.add_argument("--llm-sample", type=int, default=10)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    from taxonomist.compare.demo import run_demo
    from taxonomist.compare.report import pct, volume

    wall, cpu = time.perf_counter(), time.process_time()
    results, report = run_demo(args.out, records=args.records, seed=args.seed,
                               engines=[e for e in args.engines.split(",") if e] or None,
                               llm_sample=args.llm_sample, say=lambda m: print(m, file=sys.stderr))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"{'figure':<78} value")
    for h in results["headline"]:
        value = pct(h["value"]) if h["format"] == "pct" else volume(h["value"])
        print(f"{h['label'][:78]:<78} {value}")
    print()
    for stage, seconds in {**results["demo"]["stages"], **results["timings"]}.items():
        print(f"{stage:<30} {seconds:8.1f} s wall")
    print(f"{'total':<30} {wall:8.1f} s wall, {cpu:8.1f} s CPU (this process), peak RSS {peak_mb:,.0f} MB")
    print(f"report: {report}")
    if args.json:
        args.json.write_text(json.dumps({
            "records": args.records, "seed": args.seed, "wall_seconds": wall, "cpu_seconds": cpu, "peak_rss_mb": peak_mb,
            "stages": results["demo"]["stages"], "timings": results["timings"], "headline": results["headline"],
            "answers": results["answers"], "engines": results["engines"],
        }, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
