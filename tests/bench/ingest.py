#!/usr/bin/env python3
"""Ingest benchmark (issue 15 item 1): a dump into the store against
`pg_dump -Fc -Z0 > /dev/null`, for two builds of the worker side by side.

One throwaway cluster and database (the churn benchmark's "mixed" shape or
the "wide" shape of churn_sql_wide.py), one coordinator, and two workers
(delta chunks on, the defaults), A and B, each running its own build's
worker binary with its own store. Every simulated day, against the same
database state: /dev/null, A, /dev/null, B, /dev/null (B before A on even
days), so that drifting load hits both alike. Reports per day and summed
the catalog span of each dump, the /dev/null reference (mean of the three),
the worker's own CPU seconds (utime + stime, without its children) and its
children's (pg_dump, pg_restore --list, psql), pg_dump's CPU alone, the
stored bytes and the load average. The workers' logs are copied into
--out at the end (each dump's step times: a "dump steps" line).

    tests/bench/ingest.py --a DIR --b DIR [--shape mixed|wide] [--size-mb 300]
                          [--days 7] [--out DIR]

DIR holds pgsnapman-worker (A's and B's); pgsnap and the coordinator come
from $CARGO_TARGET_DIR/release (no build here). See docs/benchmarks.md.
"""
import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import churn_sql
import churn_sql_wide
from churn import Others, Pgsnapman, build, clean_env, log, span_s
from churn_proc import BenchError, Cluster, du, proc_cpu_s, run, run_main

SHAPES = {"mixed": churn_sql, "wide": churn_sql_wide}
STEP_TIMEOUT = 3600


def self_cpu_s(pid: int) -> float:
    """utime + stime of the process itself (its threads, not its children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:13]) / os.sysconf("SC_CLK_TCK")


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", type=Path, required=True, help="directory of build A's worker")
    p.add_argument("--b", type=Path, required=True, help="directory of build B's worker")
    p.add_argument("--label-a", default="A")
    p.add_argument("--label-b", default="B")
    p.add_argument("--shape", choices=sorted(SHAPES), default="mixed")
    p.add_argument("--size-mb", type=float, default=300)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--rate", type=float, default=0.01)
    p.add_argument("--out", type=Path, default=Path("pgsnapman-data/bench") /
                   f"ingest-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--from-cluster", type=Path, default=None,
                   help="start a copy of this stopped cluster's data directory (holding the "
                   "database bench of --shape, e.g. from an earlier run's --keep-cluster) "
                   "instead of generating the database")
    p.add_argument("--first-day", type=int, default=1,
                   help="number of the first simulated day (the churn of later days is seeded "
                   "by their number; use the day after the copied cluster's last)")
    p.add_argument("--keep-cluster", type=Path, default=None,
                   help="copy the stopped cluster's data directory here at the end")
    p.add_argument("--env-a", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for A's worker (e.g. a config key: "
                   "PGSNAPMAN_STORE__INGEST_NICE=19); repeatable")
    p.add_argument("--env-b", action="append", default=[], metavar="NAME=VALUE",
                   help="the same for B's worker")
    p.add_argument("--perf-b", type=Path, default=None,
                   help="record B's worker with `perf record -F 199` into this file")
    args = p.parse_args()
    if not (0 < args.rate < 0.5 and 1 <= args.days <= 60 and 1 <= args.size_mb <= 500):
        p.error("need 0 < --rate < 0.5, 1 <= --days <= 60, 1 <= --size-mb <= 500")
    for d in (args.a, args.b):
        if not (d / "pgsnapman-worker").is_file():
            p.error(f"{d}/pgsnapman-worker is missing")
    for pairs in (args.env_a, args.env_b):
        for pair in pairs:
            if "=" not in pair or not pair.split("=", 1)[0]:
                p.error(f"--env-a/--env-b take NAME=VALUE, not {pair!r}")
    return args


def dump(snap: Pgsnapman, variant: str, day: int, src: Cluster) -> dict:
    """`dump now --wait` on the variant's worker (as churn.py's, without
    waiting for the store statistics the worker reports at its own pace)."""
    svc, data, job, _ = snap.workers[variant]
    own, total, server = self_cpu_s(svc.pid), proc_cpu_s(svc.pid), src.server_cpu_s()
    before = load1()
    task = snap.pgsnap("dump", "now", str(job), "--wait", "--timeout", "1h", timeout=STEP_TIMEOUT)
    if task.get("state") != "SUCCEEDED" or not task.get("dump_id"):
        raise BenchError(f"dump now on {svc.name} ended {task.get('state')}: {task.get('error')}")
    row = snap.pgsnap("catalog", "show", str(task["dump_id"]))
    rec = {"catalog_s": span_s(row), "dump_bytes": row["dump_bytes"],
           "stored_bytes": row["stored_bytes"], "store_du_at_end": du(*snap._store_dirs(data))}
    own = self_cpu_s(svc.pid) - own
    rec = dict(rec, worker_cpu_s=own, children_cpu_s=proc_cpu_s(svc.pid) - total - own,
               server_cpu_s=src.server_cpu_s() - server, load1=[before, load1()])
    # What the worker does after the dump (compressing what it stored
    # uncompressed, store.compress_later_max_bytes) must not overlap the next
    # measurement: wait until its CPU time stops moving, and count it apart.
    settle_start, cpu0 = time.monotonic(), self_cpu_s(svc.pid)
    last = cpu0
    while time.monotonic() - settle_start < 600:
        time.sleep(0.5)
        now = self_cpu_s(svc.pid)
        if now - last < 0.03:
            break
        last = now
    rec["after_cpu_s"] = self_cpu_s(svc.pid) - cpu0
    rec["store_du"] = du(*snap._store_dirs(data))
    # The catalog's figure once the worker reported the compressed size
    # (DumpsCompressed: after its 2 s debounce of store reports), waited
    # for up to 20 s when the worker worked after the dump.
    wait_until = time.monotonic() + (20 if rec["after_cpu_s"] > 0.3 else 0)
    while True:
        now = snap.pgsnap("catalog", "show", str(task["dump_id"]))["stored_bytes"]
        if now != rec["stored_bytes"] or time.monotonic() >= wait_until:
            break
        time.sleep(0.5)
    rec["stored_bytes_idle"] = now
    rec["catalog_settle_s"] = time.monotonic() - settle_start
    return rec


def one_day(day, args, shape, src, snap, others, labels) -> dict:
    rec = {"day": day}
    if day > args.first_day:
        src.psql("bench", shape.churn_day(day, args.rate), timeout=STEP_TIMEOUT)
        src.psql("bench", shape.VACUUM, timeout=STEP_TIMEOUT)
    rec["rows"] = src.psql("bench", shape.COUNTS, timeout=STEP_TIMEOUT).strip()
    order = labels if day % 2 else labels[::-1]
    rec["devnull"] = [others.devnull()]
    rec["dumps"] = {}
    for v in order:
        rec["dumps"][v] = dump(snap, v, day, src)
        rec["devnull"].append(others.devnull())
    rec["order"] = order
    return rec


def report(res: dict, labels: list) -> str:
    days = res["days"]
    lines = [f"# Ingest benchmark, {res['date']}", "", f"Command: `{res['command']}`", "",
             "| day | dump MB | /dev/null s (spread) | pg_dump CPU s | " + " | ".join(
                 f"{v} s | {v} ratio | {v} worker CPU s | {v} written MB" for v in labels)
             + " | load1 |", "|" + "---|" * (5 + 4 * len(labels))]
    tot = {"ref": 0.0, **{v: 0.0 for v in labels}}
    for d in days:
        ref = sum(x["s"] for x in d["devnull"]) / len(d["devnull"])
        spread = f"{min(x['s'] for x in d['devnull']):.2f}–{max(x['s'] for x in d['devnull']):.2f}"
        pgd = sum(x["cpu_s"] for x in d["devnull"]) / len(d["devnull"])
        tot["ref"] += ref
        cells = []
        for v in labels:
            x = d["dumps"][v]
            tot[v] += x["catalog_s"]
            cells += [f"{x['catalog_s']:.2f}", f"{x['catalog_s'] / ref:.2f}×",
                      f"{x['worker_cpu_s']:.2f}", f"{x['stored_bytes'] / 1e6:.2f}"]
        loads = [x["load1"][0] for x in d["dumps"].values()]
        lines.append(f"| {d['day']} | {d['dumps'][labels[0]]['dump_bytes'] / 1e6:.1f} | "
                     f"{ref:.2f} ({spread}) | {pgd:.2f} | " + " | ".join(cells)
                     + f" | {max(loads):.2f} |")
    lines.append("")
    for v in labels:
        cpu = sum(d["dumps"][v]["worker_cpu_s"] for d in days)
        stored = sum(d["dumps"][v]["stored_bytes"] for d in days)
        idle = sum(d["dumps"][v].get("stored_bytes_idle", 0) for d in days)
        after = sum(d["dumps"][v].get("after_cpu_s", 0.0) for d in days)
        lines.append(f"- {v}: sum {tot[v]:.2f} s = **{tot[v] / tot['ref']:.3f}×** the "
                     f"reference ({tot['ref']:.2f} s); worker CPU {cpu:.2f} s during the dumps "
                     f"and {after:.2f} s after them; written {stored / 1e6:.2f} MB, in the "
                     f"catalog once idle {idle / 1e6:.2f} MB; store du "
                     f"{days[-1]['dumps'][v]['store_du'] / 1e6:.2f} MB once idle")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    shape = SHAPES[args.shape]
    pg_bin = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    bins = build(True)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pgsnapman-ingest-", dir=args.work_dir))
    tmp.chmod(0o755)
    labels = [args.label_a, args.label_b]
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        env = clean_env(pg_bin, tmp)
        res = {"command": "tests/bench/ingest.py " + " ".join(sys.argv[1:]),
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "days": []}
        src = Cluster(tmp / "source", pg_bin, env, template=args.from_cluster)
        if args.keep_cluster:
            stack.callback(lambda: run(["cp", "-a", src.data, args.keep_cluster], env=env,
                                       timeout=1800))
        stack.callback(src.stop)
        src.start()
        start = time.monotonic()
        if not args.from_cluster:
            log(f"generating the {args.shape} database")
            src.psql("postgres", "CREATE DATABASE bench;", timeout=120)
            src.psql("bench", shape.initial_load(args.size_mb / shape.MB_AT_SCALE_1),
                     timeout=STEP_TIMEOUT)
            src.psql("bench", shape.VACUUM, timeout=STEP_TIMEOUT)
        res["generate_s"] = time.monotonic() - start
        snap = Pgsnapman(bins, pg_bin, tmp, env, stack)
        snap.start_coordinator()
        for label, d, pairs in zip(labels, (args.a, args.b), (args.env_a, args.env_b)):
            extra_env = dict(pair.split("=", 1) for pair in pairs)
            snap.start_worker(label, extra_env, [], src.port, worker_bin=d / "pgsnapman-worker")
            # The worker's log (its per-dump "dump steps" line) outlives the run.
            log_file = snap.workers[label][0].log
            stack.callback(lambda f=log_file: f.exists() and shutil.copy(f, args.out / f.name))
        others = Others(src, tmp, env, 1)
        if args.perf_b:
            perf = subprocess.Popen(["perf", "record", "-F", "199", "-o", args.perf_b, "-p",
                                     str(snap.workers[args.label_b][0].pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stack.callback(lambda: (perf.send_signal(signal.SIGINT), perf.wait(60)))
        for day in range(args.first_day, args.first_day + args.days):
            rec = one_day(day, args, shape, src, snap, others, labels)
            res["days"].append(rec)
            log(f"day {day}: /dev/null " + ", ".join(f"{x['s']:.2f}" for x in rec["devnull"])
                + "; " + ", ".join(f"{v} {x['catalog_s']:.2f} s cpu {x['worker_cpu_s']:.2f}"
                                   for v, x in rec["dumps"].items()))
            (args.out / "results.json").write_text(json.dumps(res, indent=2))
        text = report(res, labels)
        (args.out / "report.md").write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    run_main(main, "ingest")
