#!/usr/bin/env python3
"""Scale benchmark (issue 15 item 5): one big generated database through the
real coordinator and one worker (store defaults), and the same figures at a
small size to see how each grows.

The database (tests/bench/scale_sql.py) is churn.py's mixed database with
primary keys only, plus large TOASTed text/jsonb documents that carry 70% of
the dump, generated server-side. Measured: `pg_dump -Fc -Z0 > /dev/null`;
the dump into the store (catalog span, ingest rate, ratio to /dev/null,
worker peak RSS and CPU, pack bytes, RocksDB index, manifests, whole store);
then one day of 1% churn (churn.py's rule, VACUUM) and a second dump.

    tests/bench/scale.py --bins DIR [--size-gb 20] [--cluster DIR [--generate-only]]
                         [--compare RESULTS.json] [--out DIR] [--work-dir DIR]
                         [--perf PERF.data [--perf-after S] [--perf-seconds S]]
    tests/bench/scale.py --report-only BIG.json --compare SMALL.json

DIR holds pgsnap, pgsnapman-coordinator and pgsnapman-worker (release
builds; nothing is built here). --cluster keeps the generated cluster in DIR
(and starts it in place when it is already there: a big database is
generated once, e.g. while the binaries build, with --generate-only). A
guard stops the run, removing what it made, when the disk holding the work
goes below --min-free-gb. --perf profiles the worker during day 1
(`perf report -i PERF.data --sort comm,symbol`); day 1's figures are written
to OUT/day1.json as soon as it ends. See docs/benchmarks.md, "A big database".
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
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import scale_sql
from churn import LoadMonitor, Others, Pgsnapman, clean_env, log, span_s, uptime
from churn_proc import (BenchError, Cluster, RssSampler, du, proc_cpu_s, proc_kib, run_main,
                        wait_for)
from ingest import self_cpu_s

REPO = Path(__file__).resolve().parents[2]
STEP_TIMEOUT = 3 * 3600
# Disk a generated database and its store take per GB of dump, an upper
# bound from the 0.3 GB run (data directory with WAL, store): checked
# before generating.
DISK_PER_DUMP_GB = 1.3
WORKER = "scale"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bins", type=Path, help="directory of the release binaries")
    p.add_argument("--size-gb", type=float, default=20,
                   help="dump size to generate, GB (default 20)")
    p.add_argument("--rate", type=float, default=0.01, help="churn rate (default 0.01)")
    p.add_argument("--cluster", type=Path, default=None,
                   help="keep the source cluster here (start it in place if it exists)")
    p.add_argument("--generate-only", action="store_true",
                   help="generate the database into --cluster and stop")
    p.add_argument("--compare", type=Path, default=None,
                   help="results.json of an earlier run (e.g. 0.3 GB): the report adds "
                   "the ratio of every figure")
    p.add_argument("--report-only", type=Path, default=None, metavar="RESULTS.json",
                   help="render the report of an earlier run (with --compare) and exit")
    p.add_argument("--min-free-gb", type=float, default=10)
    p.add_argument("--perf", type=Path, default=None, metavar="PERF.data",
                   help="perf record the worker's threads (not pg_dump) during day 1, "
                   "from --perf-after s into the dump for --perf-seconds s, at 199 Hz")
    p.add_argument("--perf-after", type=float, default=30)
    p.add_argument("--perf-seconds", type=float, default=180)
    p.add_argument("--work-dir", type=Path, default=None,
                   help="parent of the temporary directory (coordinator, worker, store)")
    p.add_argument("--out", type=Path, default=REPO / "pgsnapman-data" / "bench" /
                   f"scale-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    args = p.parse_args()
    if not (0 < args.rate < 0.5 and 0.01 <= args.size_gb <= 200):
        p.error("need 0 < --rate < 0.5 and 0.01 <= --size-gb <= 200")
    if args.generate_only and not args.cluster:
        p.error("--generate-only needs --cluster")
    if not (args.generate_only or args.report_only):
        if not args.bins:
            p.error("--bins is required (unless --generate-only)")
        for name in ("pgsnap", "pgsnapman-coordinator", "pgsnapman-worker"):
            if not (args.bins / name).is_file():
                p.error(f"{args.bins / name} is missing")
    return args


class DiskGuard:
    """Checks the free space of a filesystem every 2 s; below `min_bytes` it
    records why and sends this process SIGTERM (run_main turns it into a
    clean stop that removes the temporary directory)."""

    def __init__(self, path: Path, min_bytes: float):
        self.path, self.min, self.tripped, self.low = path, min_bytes, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def free(self) -> int:
        return shutil.disk_usage(self.path).free

    def _loop(self):
        while not self._stop.wait(2):
            free = self.free()
            self.low = free if self.low is None else min(self.low, free)
            if free < self.min and not self.tripped:
                self.tripped = (f"{free / 1e9:.1f} GB free on {self.path}, "
                                f"below {self.min / 1e9:.0f} GB")
                print(f"scale: disk guard: {self.tripped}; stopping", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGTERM)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def generate(src: Cluster, size_gb: float, guard: DiskGuard) -> dict:
    need = size_gb * 1e9 * DISK_PER_DUMP_GB
    if guard.free() - need < guard.min:
        raise BenchError(f"a {size_gb:g} GB database and its store need about "
                         f"{need / 1e9:.0f} GB; {guard.free() / 1e9:.0f} GB are free and "
                         f"{guard.min / 1e9:.0f} GB must stay free")
    rows = scale_sql.rows_for(size_gb * 1e9)
    log(f"generating {size_gb:g} GB: " + ", ".join(f"{t} {n}" for t, n in rows.items()))
    start = time.monotonic()
    src.psql("postgres", "CREATE DATABASE bench;", timeout=120)
    src.psql("bench", scale_sql.schema(), timeout=120)
    per_table = {}
    for table, lo, hi, sql in scale_sql.load_batches(rows):
        t0 = time.monotonic()
        src.psql("bench", sql, timeout=STEP_TIMEOUT)
        per_table[table] = per_table.get(table, 0) + time.monotonic() - t0
        log(f"  {table} {lo}-{hi} of {rows[table]} ({time.monotonic() - t0:.0f} s); "
            f"data dir {du(src.data) / 1e9:.2f} GB, {guard.free() / 1e9:.1f} GB free")
    src.psql("bench", "ANALYZE;\n" + scale_sql.VACUUM, timeout=STEP_TIMEOUT)
    return {"size_gb": size_gb, "rows": rows, "generate_s": time.monotonic() - start,
            "generate_s_per_table": per_table}


def dump(snap: Pgsnapman, src: Cluster, day: int) -> dict:
    """`dump now --wait`, sampling the worker's RSS at 20 Hz; the catalog
    row's figures and the store's directories after it."""
    svc, data, job, _ = snap.workers[WORKER]
    own, total, server = self_cpu_s(svc.pid), proc_cpu_s(svc.pid), src.server_cpu_s()
    before = {p.name: du(p) for p in snap._store_dirs(data)}
    with RssSampler(svc.pid) as rss:
        task = snap.pgsnap("dump", "now", str(job), "--wait", "--timeout", "3h",
                           timeout=STEP_TIMEOUT)
    if task.get("state") != "SUCCEEDED" or not task.get("dump_id"):
        raise BenchError(f"dump now ended {task.get('state')}: {task.get('error')}")
    row = snap.pgsnap("catalog", "show", str(task["dump_id"]))
    span = span_s(row)
    if span is None:
        raise BenchError(f"catalog row {row['id']} has no start or end time")
    own = self_cpu_s(svc.pid) - own
    parts = {p.name: du(p) for p in snap._store_dirs(data)}

    def stats():  # the worker reports its store after a stored dump, at its own pace
        return next((s for s in snap.pgsnap("store", "stats")
                     if s["worker_name"] == svc.name and s["dumps"] >= day), None)
    try:
        store = wait_for(f"store stats of {svc.name}", stats, timeout=120, period=1)
    except BenchError:
        store = None  # a figure less, not a failed run
    return {"day": day, "catalog_s": span, "dump_bytes": row["dump_bytes"],
            "stored_bytes": row["stored_bytes"], "mb_s": row["dump_bytes"] / 1e6 / span,
            "worker_cpu_s": own, "children_cpu_s": proc_cpu_s(svc.pid) - total - own,
            "server_cpu_s": src.server_cpu_s() - server, "rss_peak_kib": rss.peak,
            "vmhwm_kib": proc_kib(svc.pid, "VmHWM"), "store": parts, "store_stats": store,
            "store_growth": {k: parts[k] - before[k] for k in parts}}


class PerfWindow:
    """`perf record` of one process for a window of a step, started
    `after` s into it on a thread of its own; stopped (if still running)
    when the step ends."""

    def __init__(self, pid: int, out: Path | None, after: float, seconds: float):
        self.pid, self.out, self.after, self.seconds = pid, out, after, seconds
        self.stop = threading.Event()
        self.proc = None

    def _run(self):
        if self.stop.wait(self.after):
            return
        self.proc = subprocess.Popen(
            ["perf", "record", "-F", "199", "-p", str(self.pid), "-o", str(self.out),
             "--", "sleep", str(self.seconds)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log(f"perf record of the worker for {self.seconds:.0f} s into {self.out}")

    def __enter__(self):
        if self.out:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if not self.out:
            return
        self.stop.set()
        self.thread.join()
        if self.proc:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=120)


def measure(src: Cluster, snap: Pgsnapman, others: Others, mon: LoadMonitor, rate: float,
            args: argparse.Namespace, partial: Path) -> dict:
    res = {"data_dir_bytes": du(src.data), "database_bytes": int(src.psql(
        "bench", "SELECT pg_database_size('bench');", timeout=120).strip())}
    res["rows_day1"] = src.psql("bench", scale_sql.COUNTS, timeout=STEP_TIMEOUT).strip()
    since = time.monotonic()
    before = src.server_cpu_s()
    res["devnull"] = dict(others.devnull(), server_cpu_s=src.server_cpu_s() - before,
                          load=mon.window(since))
    log(f"/dev/null: {res['devnull']['s']:.1f} s")
    since = time.monotonic()
    with PerfWindow(snap.workers[WORKER][0].pid, args.perf, args.perf_after, args.perf_seconds):
        res["day1"] = dict(dump(snap, src, 1), load=mon.window(since))
    log(f"day 1: {res['day1']['catalog_s']:.1f} s, {res['day1']['dump_bytes'] / 1e9:.2f} GB, "
        f"RSS peak {res['day1']['rss_peak_kib'] / 1024:.0f} MiB")
    # Day 1 alone is a result: a run stopped later (disk, churn) keeps it.
    partial.write_text(json.dumps(res, indent=2))
    since = time.monotonic()
    src.psql("bench", scale_sql.churn_day(2, rate), timeout=STEP_TIMEOUT)
    src.psql("bench", scale_sql.VACUUM, timeout=STEP_TIMEOUT)
    res["churn"] = {"s": time.monotonic() - since, "load": mon.window(since)}
    res["rows_day2"] = src.psql("bench", scale_sql.COUNTS, timeout=STEP_TIMEOUT).strip()
    log(f"churn day: {res['churn']['s']:.0f} s")
    since = time.monotonic()
    res["day2"] = dict(dump(snap, src, 2), load=mon.window(since))
    log(f"day 2: {res['day2']['catalog_s']:.1f} s, stored {res['day2']['stored_bytes'] / 1e6:.1f} MB")
    res["data_dir_bytes_day2"] = du(src.data)
    return res


def chunks(r: dict, day: str) -> float:
    """Chunks in the store after the day's dump (NaN without store stats)."""
    stats = r[day].get("store_stats")
    return float(stats["chunks"]) if stats else float("nan")


FIGURES = [  # (label, function of the results, format)
    ("dump size (-Fc -Z0), GB", lambda r: r["day1"]["dump_bytes"] / 1e9, "{:.2f}"),
    ("source database (pg_database_size: heap, TOAST, PKs), GB",
     lambda r: r["database_bytes"] / 1e9, "{:.2f}"),
    ("source data dir (with WAL), GB", lambda r: r["data_dir_bytes"] / 1e9, "{:.2f}"),
    ("`pg_dump -Fc -Z0 > /dev/null`, s", lambda r: r["devnull"]["s"], "{:.1f}"),
    ("day 1: dump into the store (catalog span), s", lambda r: r["day1"]["catalog_s"], "{:.1f}"),
    ("day 1: ratio to /dev/null", lambda r: r["day1"]["catalog_s"] / r["devnull"]["s"], "{:.2f}×"),
    ("day 1: ingest rate, MB/s", lambda r: r["day1"]["mb_s"], "{:.1f}"),
    ("day 1: worker CPU s (own threads)", lambda r: r["day1"]["worker_cpu_s"], "{:.1f}"),
    ("day 1: worker CPU s per GB dumped",
     lambda r: r["day1"]["worker_cpu_s"] / (r["day1"]["dump_bytes"] / 1e9), "{:.1f}"),
    ("day 1: pg_dump and other children, CPU s", lambda r: r["day1"]["children_cpu_s"], "{:.1f}"),
    ("day 1: worker peak RSS (20 Hz), MiB", lambda r: r["day1"]["rss_peak_kib"] / 1024, "{:.0f}"),
    ("day 1: worker VmHWM, MiB", lambda r: r["day1"]["vmhwm_kib"] / 1024, "{:.0f}"),
    ("day 1: pack bytes, MB", lambda r: r["day1"]["store"]["packs"] / 1e6, "{:.1f}"),
    ("day 1: index (RocksDB dir), MB", lambda r: r["day1"]["store"]["index"] / 1e6, "{:.2f}"),
    ("day 1: chunks in the store", lambda r: chunks(r, "day1"), "{:.0f}"),
    ("day 1: index bytes per chunk", lambda r: r["day1"]["store"]["index"] / chunks(r, "day1"),
     "{:.0f}"),
    ("day 1: manifests, MB", lambda r: r["day1"]["store"]["manifests"] / 1e6, "{:.3f}"),
    ("day 1: whole store, MB", lambda r: sum(r["day1"]["store"].values()) / 1e6, "{:.1f}"),
    ("churn day (1% updates, deletes, inserts, VACUUM), s", lambda r: r["churn"]["s"], "{:.0f}"),
    ("day 2: dump into the store, s", lambda r: r["day2"]["catalog_s"], "{:.1f}"),
    ("day 2: ingest rate, MB/s", lambda r: r["day2"]["mb_s"], "{:.1f}"),
    ("day 2: worker CPU s (own threads)", lambda r: r["day2"]["worker_cpu_s"], "{:.1f}"),
    ("day 2: worker peak RSS (20 Hz), MiB", lambda r: r["day2"]["rss_peak_kib"] / 1024, "{:.0f}"),
    ("day 2: stored bytes (catalog), MB", lambda r: r["day2"]["stored_bytes"] / 1e6, "{:.2f}"),
    ("day 2: store growth, MB", lambda r: sum(r["day2"]["store_growth"].values()) / 1e6, "{:.2f}"),
    ("day 2: stored growth ÷ dump size, ‰",
     lambda r: sum(r["day2"]["store_growth"].values()) / r["day2"]["dump_bytes"] * 1e3, "{:.2f}"),
    ("day 2: index growth, MB", lambda r: r["day2"]["store_growth"]["index"] / 1e6, "{:.2f}"),
    ("day 2: manifest growth, MB", lambda r: r["day2"]["store_growth"]["manifests"] / 1e6, "{:.3f}"),
    ("after day 2: pack bytes, MB", lambda r: r["day2"]["store"]["packs"] / 1e6, "{:.1f}"),
    ("after day 2: chunks in the store", lambda r: chunks(r, "day2"), "{:.0f}"),
    ("after day 2: index, MB", lambda r: r["day2"]["store"]["index"] / 1e6, "{:.2f}"),
    ("after day 2: manifests, MB", lambda r: r["day2"]["store"]["manifests"] / 1e6, "{:.3f}"),
    ("after day 2: whole store, MB", lambda r: sum(r["day2"]["store"].values()) / 1e6, "{:.1f}"),
    ("1-min load during day 1 (mean / max)",
     lambda r: (r["day1"]["load"]["load1_mean"], r["day1"]["load"]["load1_max"]), "{0[0]:.1f} / {0[1]:.1f}"),
]


def report(res: dict, small: dict | None) -> str:
    m = res["measure"]
    lines = [f"# Scale benchmark, {res['date']}", "", f"Command: `{res['command']}`", "",
             f"Generated in {res['generate']['generate_s']:.0f} s; rows day 1: {m['rows_day1']}; "
             f"load at start {res['load_start']}, at end {res.get('load_end')}", ""]
    if small:
        sm = small["measure"]
        head = (f"| figure | {sm['day1']['dump_bytes'] / 1e9:.2f} GB | "
                f"{m['day1']['dump_bytes'] / 1e9:.2f} GB | ratio |")
        lines += [head, "|---|---|---|---|"]
    else:
        lines += ["| figure | value |", "|---|---|"]
    for label, f, fmt in FIGURES:
        big = f(m)
        cells = [fmt.format(big)]
        if small:
            lo = f(small["measure"])
            ratio = (f"{big / lo:.1f}×" if isinstance(big, float) and lo else "")
            cells = [fmt.format(lo), fmt.format(big), ratio]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    small = json.loads(args.compare.read_text()) if args.compare else None
    if args.report_only:
        print(report(json.loads(args.report_only.read_text()), small))
        return 0
    pg_bin = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pgsnapman-scale-", dir=args.work_dir))
    tmp.chmod(0o755)  # the postgres OS user runs the cluster inside it
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        env = clean_env(pg_bin, tmp)
        guard = stack.enter_context(DiskGuard(tmp, args.min_free_gb * 1e9))
        mon = stack.enter_context(LoadMonitor())
        res = {"command": "tests/bench/scale.py " + " ".join(sys.argv[1:]),
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "load_start": uptime()}
        root = args.cluster or tmp / "source"
        existing = (root / "data").is_dir()
        if existing:
            meta = root / "scale.json"
            if not meta.exists():
                raise BenchError(f"{root} holds no finished scale database (scale.json missing)")
            res["generate"] = json.loads(meta.read_text())
            if res["generate"].get("churned") and not args.generate_only:
                raise BenchError(f"the database in {root} was churned by an earlier run; "
                                 "generate it again")
        elif args.cluster:
            # A cluster that was not finished must not be taken for one (the
            # callback runs after src.stop below).
            stack.callback(lambda: None if (root / "scale.json").exists()
                           else shutil.rmtree(root, ignore_errors=True))
        src = Cluster(root, pg_bin, env, existing=existing)
        stack.callback(src.stop)
        src.start()
        if existing:
            log(f"started the {res['generate']['size_gb']:g} GB cluster in {root}")
        else:
            src.psql("postgres", "SELECT 1;", timeout=60)
            res["generate"] = generate(src, args.size_gb, guard)
            if args.cluster:
                src.psql("bench", "CHECKPOINT;", timeout=STEP_TIMEOUT)
                (root / "scale.json").write_text(json.dumps(res["generate"], indent=2))
        log(f"generated: data dir {du(src.data) / 1e9:.2f} GB")
        if args.generate_only:
            return 0
        snap = Pgsnapman(args.bins, pg_bin, tmp, env, stack)
        snap.start_coordinator()
        snap.start_worker(WORKER, {}, [], src.port)
        others = Others(src, tmp, env, 1)
        if existing:  # the churn day changes it: not a day-1 database any more
            (root / "scale.json").write_text(json.dumps(dict(res["generate"], churned=True),
                                                        indent=2))
        res["measure"] = measure(src, snap, others, mon, args.rate, args,
                                 args.out / "day1.json")
        res["load_end"] = uptime()
        res["load_run"] = mon.window(0)
        res["disk_free_low_gb"] = (guard.low or guard.free()) / 1e9
        (args.out / "results.json").write_text(json.dumps(res, indent=2))
        text = report(res, small)
        (args.out / "report.md").write_text(text)
        print(text)
    log(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main, "scale")
