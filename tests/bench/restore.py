#!/usr/bin/env python3
"""Restore benchmark (issue 15 item 3): restores from the store side by side
with pg_restore of local files of the same dump.

The churn benchmark's database (one day, no churn) is dumped by two workers
of the real system, one in the custom format and one in the directory format
(pg_dump -j 2), and by pg_dump into a local -Fc -Z0 file and a local -Fd -Z0
directory. Then, for --rounds rounds, interleaved (A..F, then F..A, ...):

  A  pg_restore of the -Fc -Z0 file into a new database (created before
     the clock starts)
  A2 createdb + pg_restore of the -Fc -Z0 file (both timed: what an operator
     runs to restore into a new database, as restore now does)
  A3 as A, with PGOPTIONS="-c synchronous_commit=off" (the setting restore
     now gives its pg_restore: docs/worker.md, "Asynchronous commits")
  B  pgsnap restore now of the custom dump (streamed from the store)
  C  pg_restore -j 2 of the -Fd directory into a new database (created
     before the clock starts)
  C2 createdb + pg_restore -j 2 of the -Fd directory (both timed)
  D  pgsnap restore now --jobs 2 of the directory dump (served through FIFOs)
  E  pg_restore -j 2 of the -Fc -Z0 file
  F  pgsnap restore now --jobs 2 of the custom dump (served as a directory
     archive through FIFOs since the ninth session; spooled before)

Each figure: wall seconds (restore now: the task's started->finished and the
CLI's), CPU seconds of pg_restore (and, for restore now, the worker's own
apart from its children), the server's CPU, the 1-minute load average.
The server's CPU is read once the step's backends have ended and been
reaped (read at once, as before, a file restore's backend often was not
yet, and its CPU fell outside the figure), and broken down by process
kind (server_procs.py).
Every restored database is compared with the source row for row.

    tests/bench/restore.py [--size-mb 300] [--rounds 3] [--out DIR] [--only A,A2,B]
                           [--tables N] [--fsync]

--tables N adds N small tables (a primary key, an index, 20 rows each) to
the database: the shape with many objects, where each of pg_restore's
commits counts. --fsync runs the server with fsync on, as in production
(the other benchmarks run it off).

Uses the release binaries in $CARGO_TARGET_DIR/release (build them first:
cargo build --release --workspace --bins). See docs/benchmarks.md.
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

import churn
import churn_sql
from churn_proc import BenchError, Cluster, run_main, run, timed
from server_procs import ServerProcs, settle

STEP_TIMEOUT = 3600
# Backends by database in the server-CPU breakdown: the restore's target
# (restore_store_pgsnapman_<run> while restore now fills it) and the
# maintenance database the worker's and the benchmark's psql runs use.
BACKENDS = {"restore_": "target", "postgres": "maintenance db"}
CUSTOM, DIRECTORY = "with deltas", churn.DIRECTORY
MANY_FINGERPRINT = """SELECT count(*) || ' many tables, ' || coalesce(sum(
  (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) n FROM %I', relname),
   false, true, '')))[1]::text::int), 0) || ' rows, ' || (SELECT count(*) FROM pg_indexes
  WHERE tablename LIKE 'many\\_%') || ' indexes' FROM pg_class WHERE relkind = 'r'
  AND relname LIKE 'many\\_%';"""


def many_tables(n: int) -> str:
    """SQL adding `n` small tables: a primary key, an index, 20 rows each."""
    return f"""DO $$ BEGIN FOR i IN 1..{n} LOOP
  EXECUTE format('CREATE TABLE many_%s (id int PRIMARY KEY, w int, v text)', i);
  EXECUTE format('CREATE INDEX ON many_%s (w)', i);
  EXECUTE format('INSERT INTO many_%s SELECT g, g %% 7, md5(g::text)
                  FROM generate_series(1, 20) g', i);
END LOOP; END $$;"""


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def postmaster_pid(cluster: Cluster) -> int:
    return int((cluster.data / "postmaster.pid").read_text().split()[0])


def own_and_children_cpu_s(pid: int) -> tuple[float, float]:
    """(utime + stime, cutime + cstime) of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return ((int(fields[11]) + int(fields[12])) / tick,
            (int(fields[13]) + int(fields[14])) / tick)


class Bench:
    def __init__(self, src: Cluster, snap: churn.Pgsnapman, tmp: Path):
        self.src, self.snap, self.tmp = src, snap, tmp
        self.want = self.fingerprint("bench")
        self.dumps = {}

    def server_start(self) -> tuple[float, float]:
        """The server's CPU as a step begins: (read at once, as before
        2026-12-07's eighth session; read once the backends of the previous
        step have ended and been reaped)."""
        at_once = self.src.server_cpu_s()
        if not settle(postmaster_pid(self.src)):
            raise BenchError("backends of the previous step did not end within 10 s")
        return at_once, self.src.server_cpu_s()

    def server_end(self, start: tuple[float, float]) -> dict:
        """The server's CPU for a step: `server_cpu_s` once its backends
        have ended and been reaped (a backend outlives its client by a
        little: read at once, part of its CPU falls into the next step), and
        `server_cpu_at_once_s` read at once, as before."""
        at_once = self.src.server_cpu_s() - start[0]
        if not settle(postmaster_pid(self.src)):
            raise BenchError("the restore's backends did not end within 10 s")
        return {"server_cpu_s": self.src.server_cpu_s() - start[1],
                "server_cpu_at_once_s": at_once}

    def fingerprint(self, db: str) -> str:
        """The churn tables' rows, and the count of the --tables tables,
        their indexes and rows."""
        rows = self.src.psql(db, churn_sql.FINGERPRINT, timeout=STEP_TIMEOUT).strip()
        return rows + " " + self.src.psql(db, MANY_FINGERPRINT, timeout=STEP_TIMEOUT).strip()

    def check_and_drop(self, db: str) -> bool:
        same = self.fingerprint(db) == self.want
        self.src.psql("postgres", f"DROP DATABASE {db};", timeout=300)
        return same

    def from_file(self, archive: Path, jobs: int, createdb_timed: bool = False,
                  async_commit: bool = False) -> dict:
        """pg_restore into a new database; `createdb_timed`: the database is
        created by `createdb` inside the clock (else by psql before it);
        `async_commit`: pg_restore's session with synchronous_commit off."""
        db = "restore_file"
        if not createdb_timed:
            self.src.psql("postgres", f"CREATE DATABASE {db};", timeout=120)
        load, server = load1(), self.server_start()
        createdb_s = 0.0
        with ServerProcs(postmaster_pid(self.src), BACKENDS) as procs:
            if createdb_timed:
                host, port, user = self.src.conn(db)[1:6:2]
                createdb_s = timed([[self.src.pg_bin / "createdb", "-h", host, "-p", port,
                                     "-U", user, db]], env=self.src.env, timeout=STEP_TIMEOUT,
                                   log=self.tmp / "tools.log").seconds
            jobs_arg = [f"--jobs={jobs}"] if jobs > 1 else []
            env = dict(self.src.env)
            if async_commit:
                env["PGOPTIONS"] = "-c synchronous_commit=off"
            t = timed([[self.src.pg_bin / "pg_restore", *self.src.conn(db), "--exit-on-error",
                        *jobs_arg, archive]], env=env, timeout=STEP_TIMEOUT,
                      log=self.tmp / "tools.log")
            server = self.server_end(server)
        out = {"s": createdb_s + t.seconds, "pg_restore_cpu_s": t.cpu_s[0],
               **server, "server_by_kind": procs.by_kind,
               "server_waits_by_kind": procs.waits_by_kind, "load1": load,
               "content_matches": self.check_and_drop(db)}
        if createdb_timed:
            out["createdb_s"] = createdb_s
        return out

    def from_store(self, variant: str, jobs: int) -> dict:
        svc, _, _, inst = self.snap.workers[variant]
        db = "restore_store"
        own, children = own_and_children_cpu_s(svc.pid)
        load, server = load1(), self.server_start()
        jobs_arg = ["--jobs", str(jobs)] if jobs > 1 else []
        start = time.monotonic()
        with ServerProcs(postmaster_pid(self.src), BACKENDS) as procs:
            task = self.snap.pgsnap("restore", "now", "--dump", str(self.dumps[variant]),
                                    "--to-instance", str(inst), "--to-database", db, *jobs_arg,
                                    "--wait", "--timeout", "1h", timeout=STEP_TIMEOUT)
            cli_s = time.monotonic() - start
            server = self.server_end(server)
        if task.get("state") != "SUCCEEDED":
            raise BenchError(f"restore now on {svc.name} ended {task.get('state')}: "
                             f"{task.get('error')}")
        own2, children2 = own_and_children_cpu_s(svc.pid)
        task_s = churn.span_s(task)
        return {"s": task_s if task_s is not None else cli_s, "cli_s": cli_s,
                "pg_restore_phase_s": self.restore_phase_s(),
                "worker_own_cpu_s": own2 - own, "pg_restore_cpu_s": children2 - children,
                **server, "server_by_kind": procs.by_kind,
                "server_waits_by_kind": procs.waits_by_kind, "load1": load,
                "content_matches": self.check_and_drop(db)}


    def restore_phase_s(self) -> float | None:
        """The newest run's "restored into ... in N s" (pg_restore alone,
        without the role check, CREATE DATABASE, metadata and rename)."""
        runs = self.snap.pgsnap("restore-log", "list", "--limit", "1")
        log = self.snap.pgsnap("restore-log", "show", str(runs[0]["id"]))
        for line in log["lines"]:
            text = line.get("text", "")
            if text.startswith("restored into") and text.endswith(" s"):
                return float(text.rsplit(" in ", 1)[1][:-2])
        return None


def profile(bench: Bench, snap: churn.Pgsnapman, variant: str, jobs: int, out: Path):
    """perf record of the worker process (its threads, not pg_restore) during
    one restore; writes the top of `perf report` next to the results."""
    svc = snap.workers[variant][0]
    name = f"perf-{variant.replace(' ', '-')}-j{jobs}"
    data = out / f"{name}.data"
    rec = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-p", str(svc.pid), "-o", data],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    try:
        bench.from_store(variant, jobs)
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait(timeout=120)
    report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                             "--sort", "comm,dso,symbol", "-g", "none", "--percent-limit", "1"],
                            capture_output=True, text=True, timeout=600).stdout
    (out / f"{name}.txt").write_text(report)
    data.unlink(missing_ok=True)


def summary(rounds: dict, ref: str, name: str) -> dict:
    ratios = [a["s"] / b["s"] for a, b in zip(rounds[name], rounds[ref])]
    mean = sum(ratios) / len(ratios)
    return {"ratio_mean": round(mean, 3), "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3), "ratios": [round(r, 3) for r in ratios]}


def render(results: dict) -> str:
    rounds = results["rounds"]
    out = [f"# Restore benchmark, {results['date']}", "",
           f"`{results['command']}`; dump -Fc -Z0 {results['z0_bytes'] / 1e6:.1f} MB; "
           f"load at start {results['load_start']}, at end {results['load_end']}", "",
           "| source | wall s per round | mean | pg_restore CPU s | worker own CPU s | "
           "server CPU s (read at once) | load1 | rows match |", "|---|---|---|---|---|---|---|---|"]
    for name, runs in rounds.items():
        walls = ", ".join(f"{r['s']:.2f}" for r in runs)
        mean = sum(r["s"] for r in runs) / len(runs)
        cpu = sum(r["pg_restore_cpu_s"] for r in runs) / len(runs)
        own = [r.get("worker_own_cpu_s") for r in runs]
        own_s = f"{sum(own) / len(own):.2f}" if None not in own else "—"
        server = sum(r["server_cpu_s"] for r in runs) / len(runs)
        at_once = [r.get("server_cpu_at_once_s") for r in runs]
        server_s = f"{server:.2f}"
        if None not in at_once:
            server_s += f" ({sum(at_once) / len(at_once):.2f})"
        phase = [r.get("pg_restore_phase_s") for r in runs]
        if None not in phase:
            walls += f" (pg_restore phase {', '.join(f'{x:.1f}' for x in phase)})"
        loads = ", ".join(f"{r['load1']:.1f}" for r in runs)
        ok = all(r["content_matches"] for r in runs)
        out.append(f"| {name} | {walls} | {mean:.2f} | {cpu:.2f} | {own_s} | {server_s} | "
                   f"{loads} | {ok} |")
    out += ["", "Server CPU s by process kind (mean of the rounds; sampled every 100 ms):", ""]
    kinds = sorted({k for runs in rounds.values() for r in runs
                    for k in r.get("server_by_kind", {})})
    out += ["| source | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for name, runs in rounds.items():
        cells = [sum(r.get("server_by_kind", {}).get(k, 0.0) for r in runs) / len(runs)
                 for k in kinds]
        out.append(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    out += ["", "Waits (voluntary context switches) of the restore's backends (mean):", ""]
    for name, runs in rounds.items():
        w = [r.get("server_waits_by_kind", {}).get("backend target", 0) for r in runs]
        out.append(f"- {name}: {sum(w) / len(w):.0f} ({', '.join(map(str, w))})")
    out.append("")
    for name, s in results["ratios"].items():
        out.append(f"- {name}: {s['ratio_mean']}× (per round {s['ratios']}, "
                   f"{s['ratio_min']}–{s['ratio_max']})")
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=float, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=churn.REPO / "pgsnapman-data" / "bench" /
                   f"restore-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--perf", action="store_true",
                   help="after the rounds, profile the worker (perf record -g) during one "
                   "restore of each dump; reports go to --out")
    p.add_argument("--only", default="A,A2,A3,B,C,C2,D,E,F",
                   help="the sources to run, comma-separated (default: all)")
    p.add_argument("--tables", type=int, default=0,
                   help="add this many small tables (many objects: one commit each)")
    p.add_argument("--fsync", action="store_true",
                   help="run the server with fsync on (off by default, as in the other "
                   "benchmarks)")
    args = p.parse_args()
    only = set(args.only.split(","))
    if not only <= {"A", "A2", "A3", "B", "C", "C2", "D", "E", "F"}:
        p.error("--only takes A, A2, A3, B, C, C2, D, E, F")
    if not (1 <= args.rounds <= 20 and 1 <= args.size_mb <= 100_000):
        p.error("need 1 <= --rounds <= 20 and 1 <= --size-mb <= 100000")
    if not 0 <= args.tables <= 100_000:
        p.error("need 0 <= --tables <= 100000")

    def terminate(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)

    pg_bin = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    bins = churn.build(no_build=True)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pgsnapman-restore-", dir=args.work_dir))
    tmp.chmod(0o755)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        stack.callback(churn.copy_logs, tmp, args.out)
        env = churn.clean_env(pg_bin, tmp)
        results = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                   "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "load_start": churn.uptime(),
                   "machine": churn.machine(env, tmp, bins, pg_bin)}
        src = Cluster(tmp / "source", pg_bin, env, fsync=args.fsync)
        stack.callback(src.stop)
        src.start()
        churn.log("generating the database")
        src.psql("postgres", "CREATE DATABASE bench;", timeout=120)
        src.psql("bench", churn_sql.initial_load(args.size_mb / churn_sql.MB_AT_SCALE_1),
                 timeout=STEP_TIMEOUT)
        if args.tables:
            src.psql("bench", many_tables(args.tables), timeout=STEP_TIMEOUT)
        src.psql("bench", churn_sql.VACUUM, timeout=STEP_TIMEOUT)
        snap = churn.Pgsnapman(bins, pg_bin, tmp, env, stack)
        snap.start_coordinator()
        snap.start_worker(CUSTOM, {}, [], src.port)
        snap.start_worker(DIRECTORY, {}, ["--format", "directory", "--jobs", "2"], src.port)
        bench = Bench(src, snap, tmp)
        for variant in (CUSTOM, DIRECTORY):
            bench.dumps[variant] = snap.dump(variant, 1)["dump_id"]
        z0, fd = tmp / "bench.Z0", tmp / "bench.Fd"
        dump = [pg_bin / "pg_dump", *src.conn("bench"), "-Z0"]
        run(dump + ["-Fc", "-f", z0], env=env, timeout=STEP_TIMEOUT)
        run(dump + ["-Fd", "-j", "2", "-f", fd], env=env, timeout=STEP_TIMEOUT)
        results["z0_bytes"] = z0.stat().st_size
        sources = {
            "A": ("pg_restore -Fc -Z0 file", lambda: bench.from_file(z0, 1)),
            "A2": ("createdb + pg_restore -Fc -Z0 file",
                   lambda: bench.from_file(z0, 1, createdb_timed=True)),
            "A3": ("pg_restore -Fc -Z0 file, synchronous_commit off",
                   lambda: bench.from_file(z0, 1, async_commit=True)),
            "B": ("pgsnap restore now (custom)", lambda: bench.from_store(CUSTOM, 1)),
            "C": ("pg_restore -j 2 -Fd directory", lambda: bench.from_file(fd, 2)),
            "C2": ("createdb + pg_restore -j 2 -Fd directory",
                   lambda: bench.from_file(fd, 2, createdb_timed=True)),
            "D": ("pgsnap restore now --jobs 2 (directory)",
                  lambda: bench.from_store(DIRECTORY, 2)),
            "E": ("pg_restore -j 2 -Fc -Z0 file", lambda: bench.from_file(z0, 2)),
            "F": ("pgsnap restore now --jobs 2 (custom, served)",
                  lambda: bench.from_store(CUSTOM, 2)),
        }
        sources = {k: v for k, v in sources.items() if k in only}
        rounds = {name: [] for name, _ in sources.values()}
        for i in range(args.rounds):
            order = list(sources.values()) if i % 2 == 0 else list(sources.values())[::-1]
            churn.log(f"round {i + 1}/{args.rounds}")
            for name, source in order:
                rounds[name].append(source())
                churn.log(f"  {name}: {rounds[name][-1]['s']:.2f} s")
        results["rounds"] = rounds
        # (store, file) pairs: B against both baselines of a custom file, D
        # against both of a directory, F against E, against both of a
        # directory (the -j target) and against A (is -j 2 from the store
        # faster than the serial file restore?).
        results["ratios"] = {
            f"{sources[a][0]} / {sources[b][0]}": summary(rounds, sources[b][0], sources[a][0])
            for a, b in (("B", "A"), ("B", "A2"), ("B", "A3"), ("D", "C"), ("D", "C2"), ("F", "E"),
                         ("F", "C"), ("F", "C2"), ("F", "A"), ("F", "A2"))
            if a in sources and b in sources
        }
        if args.perf:
            for variant, jobs in ((CUSTOM, 1), (DIRECTORY, 2), (CUSTOM, 2)):
                profile(bench, snap, variant, jobs, args.out)
        results["load_end"] = churn.uptime()
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        report = render(results)
        (args.out / "report.md").write_text(report)
        print(report)
    return 0


if __name__ == "__main__":
    run_main(main, "restore")
