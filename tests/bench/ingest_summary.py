#!/usr/bin/env python3
"""Summary of several ingest.py runs (issue 15 item 1): every dump of every
run is one sample of "a dump into the store / pg_dump -Fc -Z0 > /dev/null"
for its day; this prints, per day, the samples' mean, median and spread,
and the summed ratio of each run and worker.

One run of ingest.py gives one sample per worker and day; on a machine where
consecutive runs of the same pg_dump differ by up to 20%, a day's figure
needs several. Run ingest.py N times on the same cluster (--from-cluster,
the same --first-day and --days; --a and --b may be the same build, which
gives two samples per run), then:

    tests/bench/ingest_summary.py RUN_DIR [RUN_DIR ...] [--only LABEL]

Each RUN_DIR holds an ingest.py results.json. See docs/benchmarks.md.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path


def load(run: Path) -> dict:
    try:
        return json.loads((run / "results.json").read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{run}: cannot read results.json: {e}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--only", action="append", default=[],
                   help="count only the workers with this label (repeatable; default: all)")
    args = p.parse_args()
    by_day: dict[int, list[float]] = {}
    summed: list[tuple[str, float]] = []
    for run in args.runs:
        res = load(run)
        totals: dict[str, list[float]] = {}
        for day in res.get("days", []):
            ref = statistics.mean(d["s"] for d in day["devnull"])
            for label, dump in day["dumps"].items():
                if args.only and label not in args.only:
                    continue
                by_day.setdefault(day["day"], []).append(dump["catalog_s"] / ref)
                t = totals.setdefault(label, [0.0, 0.0])
                t[0] += dump["catalog_s"]
                t[1] += ref
        summed += [(f"{run.name} {label}", s / r) for label, (s, r) in totals.items() if r > 0]
    if not by_day:
        print("no samples", file=sys.stderr)
        return 1
    print("| day | samples | mean | median | min–max |")
    print("|---|---|---|---|---|")
    for day, ratios in sorted(by_day.items()):
        print(f"| {day} | {len(ratios)} | {statistics.mean(ratios):.3f}× | "
              f"{statistics.median(ratios):.3f}× | {min(ratios):.3f}–{max(ratios):.3f}× |")
    values = [r for _, r in summed]
    print()
    print(f"summed per run and worker ({len(values)}): mean {statistics.mean(values):.3f}×, "
          f"median {statistics.median(values):.3f}×, {min(values):.3f}–{max(values):.3f}×")
    for name, r in summed:
        print(f"- {name}: {r:.3f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
