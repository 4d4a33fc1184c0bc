#!/usr/bin/env python3
"""Churn benchmark (issue 3 item 9, issue 4's delta column).

A generated database with mixed content churns for N simulated days (about
1% of rows updated across each table, inserts, deletes, VACUUM). Each day it
is dumped by (a) pg_dump -Fc into files kept side by side, (b) restic with
compression, (c) borg, (d) pgsnapman through the real coordinator and worker,
and zstd --patch-from of the day's uncompressed dump against the previous
day's gives the lower bound. Reports wall time, peak RSS and stored size per
day, restore times for the last day, the machine and its load.

    tests/bench/churn.py [--size-mb 300] [--days 7] [--rate 0.01] [--out DIR]

Installs restic, borgbackup, zstd and PostgreSQL with apt-get when missing,
builds the release binaries (CARGO_TARGET_DIR, default
~/.cache/pgsnapman-bench-target), and works in one temporary directory that
it removes on exit, also on Ctrl-C. See docs/benchmarks.md.
"""
import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import churn_report
import churn_sql
from churn_proc import (BenchError, Cluster, RssSampler, Service, du, proc_cpu_s, proc_kib, run,
                        run_main, timed, wait_for)

REPO = Path(__file__).resolve().parents[2]
# The worker's store.max_delta_depth (issue 4): 0 stores whole chunks only.
DELTA_KEY = "PGSNAPMAN_STORE__MAX_DELTA_DEPTH"
# Bound on any single step (a dump, a restore, the initial load).
STEP_TIMEOUT = 3600
# Tools from Debian packages: command → package.
TOOLS = {"restic": "restic", "borg": "borgbackup", "zstd": "zstd"}
# Compilers and linkers: processes of other people's builds on a shared machine.
BUILD_PROCS = {"rustc", "cc1plus", "cc1", "ld", "ld.lld", "mold", "clang", "cargo"}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=float, default=300,
                   help="uncompressed dump size on day 1, MB (default 300)")
    p.add_argument("--days", type=int, default=7, help="simulated days (default 7)")
    p.add_argument("--rate", type=float, default=0.01,
                   help="fraction of each table's rows updated per day (default 0.01)")
    p.add_argument("--out", type=Path,
                   default=REPO / "pgsnapman-data" / "bench" /
                   f"churn-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}",
                   help="where results go (default pgsnapman-data/bench/churn-<time>)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="parent of the temporary directory (default $TMPDIR or /tmp)")
    p.add_argument("--deltas", choices=["off", "on", "both"], default="off",
                   help="pgsnapman without delta chunks (off), with them (on), or both, one "
                   f"worker each; 'on' needs a build that knows {DELTA_KEY}")
    p.add_argument("--directory", action="store_true",
                   help="one more worker (delta chunks on) whose job dumps in the directory "
                   "format with pg_dump -j 2, to compare it with the custom format")
    p.add_argument("--delta-depth", type=int, default=None,
                   help="max delta depth for the 'with deltas' worker (default: the build's)")
    p.add_argument("--zstd-level", type=int, default=12,
                   help="zstd level of the lower bound (default 12, with --long=31)")
    p.add_argument("--pg-bin", type=Path, default=None,
                   help="PostgreSQL bin directory (default newest /usr/lib/postgresql/*/bin)")
    p.add_argument("--no-build", action="store_true",
                   help="use the release binaries already in $CARGO_TARGET_DIR/release")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    if not (0 < args.rate < 0.5 and 1 <= args.days <= 60 and 1 <= args.size_mb <= 100_000):
        p.error("need 0 < --rate < 0.5, 1 <= --days <= 60, 1 <= --size-mb <= 100000")
    return args


def span_s(row: dict) -> float | None:
    """Seconds from a catalog row's or task's started_at to its finished_at
    (None while either is unset)."""
    if not (row.get("started_at") and row.get("finished_at")):
        return None
    return (datetime.fromisoformat(row["finished_at"])
            - datetime.fromisoformat(row["started_at"])).total_seconds()


def log(msg: str):
    print(f"[{datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# ───────────────────────────── prerequisites ─────────────────────────────

def install_missing():
    """apt-get installs the tools that are missing (as deploy/prereqs.sh does)."""
    need = [pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None]
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        need += ["postgresql", "postgresql-contrib"]
    if not need:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    if sudo and shutil.which("sudo") is None:
        raise BenchError(f"need root or sudo to install {' '.join(need)}")
    log(f"installing {' '.join(need)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(sudo + ["apt-get", "update", "-qq"], env=env, timeout=600)
    run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need],
        env=env, timeout=1800)
    missing = [cmd for cmd in TOOLS if shutil.which(cmd) is None]
    if missing:
        raise BenchError(f"still missing after apt-get: {' '.join(missing)}")


def build(no_build: bool) -> Path:
    """Builds the workspace's binaries in release mode; returns the bin dir."""
    target = Path(os.environ.get("CARGO_TARGET_DIR")
                  or Path.home() / ".cache" / "pgsnapman-bench-target")
    if not no_build:
        log(f"building release binaries into {target} (a clean build takes 20-30 minutes)")
        env = dict(os.environ, CARGO_TARGET_DIR=str(target))
        # prereqs.sh installs the build dependencies and finds cargo.
        done = subprocess.run(
            ["bash", "-c", "source deploy/prereqs.sh && "
             "cargo build --release --workspace --bins --locked"],
            cwd=REPO, env=env, timeout=2 * 3600)
        if done.returncode != 0:
            raise BenchError("cargo build --release failed (output above)")
    bins = target / "release"
    for name in ("pgsnapman-coordinator", "pgsnapman-worker", "pgsnap"):
        if not (bins / name).is_file():
            raise BenchError(f"{bins / name} is missing (build without --no-build)")
    return bins


def clean_env(pg_bin: Path, tmp: Path) -> dict:
    """The environment of every child: no PG* or PGSNAPMAN_* of the caller, the
    PostgreSQL tools first on PATH, tool caches inside the temporary dir."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "PGSNAPMAN_", "RESTIC_", "BORG_"))}
    env.update(PATH=f"{pg_bin}:{env.get('PATH', '/usr/bin:/bin')}", NO_COLOR="1", LC_ALL="C.UTF-8",
               XDG_CONFIG_HOME=str(tmp / "xdg"), XDG_CACHE_HOME=str(tmp / "xdg-cache"),
               RESTIC_REPOSITORY=str(tmp / "restic"), RESTIC_CACHE_DIR=str(tmp / "restic-cache"),
               RESTIC_PASSWORD_FILE=str(tmp / "restic.password"),
               BORG_REPO=str(tmp / "borg"), BORG_BASE_DIR=str(tmp / "borg-base"),
               BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
               BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
    return env


def first_line(argv, env) -> str:
    try:
        return run(argv, env=env, timeout=60).strip().splitlines()[0]
    except (BenchError, IndexError):
        return "unknown"


def machine(env, tmp: Path, bins: Path, pg_bin: Path) -> dict:
    mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown")
    df = run(["df", "-hT", str(tmp)], env=env, timeout=30).strip().splitlines()[-1].split()
    commit = first_line(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], env)
    dirty = run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                env=env, timeout=60).strip()
    return {
        "cpus": os.cpu_count(), "cpu": cpu, "ram_gib": round(int(mem) / 2**20, 1),
        "disk": f"{df[0]} ({df[1]}, {df[2]}, {df[4]} free) holding the temporary dir",
        "kernel": platform.release(), "os": first_line(["sh", "-c", ". /etc/os-release; "
                                                        "echo $PRETTY_NAME"], env),
        "pg_dump": first_line([pg_bin / "pg_dump", "--version"], env),
        "restic": first_line(["restic", "version"], env),
        "borg": first_line(["borg", "--version"], env),
        "zstd": first_line(["zstd", "--version"], env).strip("* "),
        "pgsnapman": f"{commit}{' (with uncommitted changes)' if dirty else ''}, "
                     f"{first_line([bins / 'pgsnapman-worker', '--version'], env)} from {bins}",
    }


class LoadMonitor:
    """Samples /proc/loadavg and counts other builds' compiler processes every
    5 s, so the report can say when the machine was busy."""

    def __init__(self):
        self.samples = []  # (monotonic, load1, compiler processes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            load1 = float(Path("/proc/loadavg").read_text().split()[0])
            builds = 0
            for comm in Path("/proc").glob("[0-9]*/comm"):
                with contextlib.suppress(OSError):
                    builds += comm.read_text().strip() in BUILD_PROCS
            self.samples.append((time.monotonic(), load1, builds))
            self._stop.wait(5)

    def window(self, since: float) -> dict:
        s = [x for x in self.samples if x[0] >= since] or self.samples[-1:]
        return {"load1_mean": round(sum(x[1] for x in s) / len(s), 2),
                "load1_max": max(x[1] for x in s), "build_procs_max": max(x[2] for x in s)}

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def uptime() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ───────────────────────────── pgsnapman ─────────────────────────────

class Pgsnapman:
    """The real system: a coordinator with its embedded catalog and one worker
    per variant (with and/or without delta chunks), each with its own store."""

    def __init__(self, bins: Path, pg_bin: Path, tmp: Path, env: dict,
                 stack: contextlib.ExitStack):
        self.bins, self.pg_bin, self.tmp, self.env, self.stack = bins, pg_bin, tmp, env, stack
        self.workers = {}  # variant → (Service, data dir, job id, instance id)
        self.initial_du = {}  # variant → bytes of the empty store

    def pgsnap(self, *args, timeout=120):
        out = run([self.bins / "pgsnap", "--output", "json", *args], env=self.env, timeout=timeout)
        return json.loads(out)

    def start_coordinator(self):
        ready, data = self.tmp / "coordinator.ready", self.tmp / "coordinator"
        env = dict(self.env, PGSNAPMAN_SERVER__LISTEN="127.0.0.1:0",
                   PGSNAPMAN_SERVER__READY_FILE=str(ready),
                   PGSNAPMAN_COORDINATOR__DATA_DIR=str(data))
        svc = Service("pgsnapman-coordinator", [self.bins / "pgsnapman-coordinator"], env=env,
                      log=self.tmp / "coordinator.log")
        self.stack.callback(self._stop_coordinator, svc, data)

        def up():
            svc.check_alive()
            return ready.exists() and ready.read_text().strip()
        addr = wait_for("the coordinator", up, timeout=300, log=svc.log)
        self.env["PGSNAPMAN_COORDINATOR"] = f"https://{addr}"
        # TLS with the coordinator's own CA (docs/security-tls.md).
        self.env["PGSNAPMAN_CA_FILE"] = str(data / "pki" / "ca.crt")
        # The admin token the coordinator wrote on its first start (0600).
        self.env["PGSNAPMAN_TOKEN_FILE"] = str(data / "admin.token")

    def _stop_coordinator(self, svc: Service, data: Path):
        code = svc.stop(grace=60)
        if code not in (0, None):
            log(f"warning: the coordinator exited {code} at shutdown")
        # A coordinator killed hard leaves its embedded catalog running.
        Cluster(data / "catalog", self.pg_bin, self.env).stop()

    def start_worker(self, variant: str, extra_env: dict, job_args: list, source_port: int,
                     worker_bin: Path | None = None):
        """`worker_bin`: another build's worker (tests/bench/ingest.py compares two)."""
        name = "bench-" + variant.replace(" ", "-")
        data = self.tmp / name
        self.pgsnap("worker", "register", name)
        # Workers authenticate with a certificate they enroll for on first start.
        token = self.pgsnap("worker", "enroll-token", name)["enrollment_token"]
        env = dict(self.env, PGSNAPMAN_WORKER__NAME=name, PGSNAPMAN_WORKER__DATA_DIR=str(data),
                   PGSNAPMAN_COORDINATOR__ENROLL_TOKEN=token,
                   PGSNAPMAN_COORDINATOR__URL=self.env["PGSNAPMAN_COORDINATOR"],
                   PGSNAPMAN_COORDINATOR__CA_FILE=self.env["PGSNAPMAN_CA_FILE"],
                   # Every simulated day is dumped on the same calendar day: the job's
                   # daily retention would keep one of them and delete the rest.
                   PGSNAPMAN_RETENTION__ENABLED="false", **extra_env)
        svc = Service(name, [worker_bin or self.bins / "pgsnapman-worker"], env=env,
                      log=self.tmp / f"{name}.log")
        self.stack.callback(self._stop_worker, svc)

        def connected():
            svc.check_alive()
            return self.pgsnap("worker", "show", name).get("connected")
        wait_for(f"worker {name} to connect", connected, timeout=120, period=0.5, log=svc.log)
        depth = self._delta_depth(svc)
        if variant != "without deltas" and not depth:
            raise BenchError(f"this build's worker does not store delta chunks ({DELTA_KEY} "
                             "unknown or 0); run with --deltas off")
        if variant == "without deltas" and depth:
            raise BenchError(f"{name} stores delta chunks (depth {depth}) although {DELTA_KEY}=0")
        inst = self.pgsnap("instance", "add", "--name", f"source-{name}", "--host", "127.0.0.1",
                           "--port", str(source_port), "--user", "postgres", "--worker", name)
        # A cron time that does not come during the run: only `dump now` dumps.
        job = self.pgsnap("job", "add", "--instance", str(inst["id"]), "--database", "bench",
                          "--cron", "0 3 1 1 *", "--comment", "churn benchmark", *job_args)
        self.workers[variant] = (svc, data, job["id"], inst["id"])
        self.initial_du[variant] = du(*self._store_dirs(data))

    @staticmethod
    def _store_dirs(data: Path) -> list[Path]:
        """What the store keeps of dumps: packs, chunk index, manifests (not the
        worker's state database: outbox, schedule mirror)."""
        return [data / d for d in ("packs", "index", "manifests")]

    @staticmethod
    def _delta_depth(svc: Service) -> int | None:
        """max_delta_depth from the worker's "pack store open" log line; None if
        the build has no such option."""
        line = wait_for("the worker's pack store", lambda: next(
            (ln for ln in svc.log.read_text(errors="replace").splitlines()
             if "pack store open" in ln), None), timeout=60, log=svc.log)
        marker = "max_delta_depth: "
        if marker not in line:
            return None
        return int(line.split(marker, 1)[1].split(",")[0].split()[0].rstrip("}"))

    def _stop_worker(self, svc: Service):
        code = svc.stop(grace=30)
        if code not in (0, None):
            log(f"warning: {svc.name} exited {code} at shutdown")

    def dump(self, variant: str, day: int) -> dict:
        """`dump now --wait` on the variant's worker, sampling its RSS at 20 Hz;
        returns the catalog row's figures and the store's."""
        svc, data, job, _ = self.workers[variant]
        idle, cpu = proc_kib(svc.pid, "VmRSS"), proc_cpu_s(svc.pid)
        with RssSampler(svc.pid) as rss:
            start = time.monotonic()
            task = self.pgsnap("dump", "now", str(job), "--wait", "--timeout", "1h",
                               timeout=STEP_TIMEOUT)
            cli_s = time.monotonic() - start
        cpu = proc_cpu_s(svc.pid) - cpu
        if task.get("state") != "SUCCEEDED" or not task.get("dump_id"):
            raise BenchError(f"dump now on {svc.name} ended {task.get('state')}: {task.get('error')}")
        row = self.pgsnap("catalog", "show", str(task["dump_id"]))

        def stats():  # the worker reports its store after every stored dump
            for s in self.pgsnap("store", "stats"):
                if s["worker_name"] == svc.name and s["dumps"] >= day:
                    return s
        store = wait_for(f"store stats of {svc.name}", stats, timeout=60, period=0.5)
        span = span_s(row)
        if span is None:
            raise BenchError(f"catalog row {row['id']} has no start or end time: {row}")
        return {
            "catalog_s": span, "cli_s": cli_s, "cpu_s": cpu, "dump_id": row["id"], "uuid": row["dump_uuid"],
            "dump_bytes": row["dump_bytes"], "stored_bytes": row["stored_bytes"],
            "store_pack_bytes": store["pack_bytes"], "store_dumps": store["dumps"],
            "store_du": du(*self._store_dirs(data)),
            "store_du_parts": {p.name: du(p) for p in self._store_dirs(data)},
            "rss_idle_kib": idle, "rss_peak_kib": rss.peak, "rss_samples": rss.samples,
            "vmhwm_kib": proc_kib(svc.pid, "VmHWM"),
        }

    def extract(self, variant: str, uuid: str, to: Path) -> tuple[float, Path]:
        """`pgsnapman-worker store extract`: the dump as a local file, for
        pg_restore of a file (compared with the streaming `restore now`)."""
        _, data, _, _ = self.workers[variant]
        start = time.monotonic()
        run([self.bins / "pgsnapman-worker", "store", "--data-dir", data, "extract", uuid,
             "--to", to], env=self.env, timeout=STEP_TIMEOUT)
        seconds = time.monotonic() - start
        files = [f for f in to.iterdir() if f.is_file()]
        if len(files) != 1:
            raise BenchError(f"extract of {uuid} gave {len(files)} files, expected one archive")
        return seconds, files[0]

    def restore_now(self, variant: str, dump_id: int, database: str) -> dict:
        """The real restore: `pgsnap restore now --wait` onto the source
        instance, into a new database (the worker streams the dump from its
        store into pg_restore's stdin, then renames the temporary database)."""
        svc, _, _, inst = self.workers[variant]
        with RssSampler(svc.pid) as rss:
            start = time.monotonic()
            task = self.pgsnap("restore", "now", "--dump", str(dump_id), "--to-instance",
                               str(inst), "--to-database", database, "--wait", "--timeout", "1h",
                               timeout=STEP_TIMEOUT)
            cli_s = time.monotonic() - start
        if task.get("state") != "SUCCEEDED":
            raise BenchError(f"restore now on {svc.name} ended {task.get('state')}: "
                             f"{task.get('error')}")
        return {"cli_s": cli_s, "task_s": span_s(task), "rss_peak_kib": rss.peak}


# ───────────────────────────── the other tools ─────────────────────────────

class Others:
    """pg_dump -Fc files side by side, restic, borg and the zstd bound, each
    reading the same day's database."""

    def __init__(self, src: Cluster, tmp: Path, env: dict, zstd_level: int):
        self.src, self.tmp, self.env, self.level = src, tmp, env, zstd_level
        self.files = tmp / "files"
        self.files.mkdir()
        self.errlog = tmp / "tools.log"
        self.pg_dump = [src.pg_bin / "pg_dump", *src.conn("bench")]

    def _timed(self, *stages, stdout=subprocess.DEVNULL):
        return timed(list(stages), env=self.env, timeout=STEP_TIMEOUT, log=self.errlog,
                     stdout=stdout)

    def init_repos(self) -> dict:
        (self.tmp / "restic.password").write_text("churn-benchmark\n")
        run(["restic", "init", "--repository-version", "2"], env=self.env, timeout=120)
        config = json.loads(run(["restic", "cat", "config"], env=self.env, timeout=120))
        run(["borg", "init", "-e", "none", self.tmp / "borg"], env=self.env, timeout=120)
        return {"restic_repo_version": config.get("version"),
                "restic_repo_bytes": du(self.tmp / "restic"), "borg_repo_bytes": du(self.tmp / "borg")}

    def devnull(self) -> dict:
        """pg_dump -Fc -Z0 > /dev/null: the baseline of the time targets."""
        t = self._timed(self.pg_dump + ["-Fc", "-Z0"])
        return {"s": t.seconds, "cpu_s": t.cpu_s[0]}

    def fc_file(self, day: int) -> dict:
        path = self.files / f"day{day}.Fc"
        t = self._timed(self.pg_dump + ["-Fc", "-f", path])
        return {"s": t.seconds, "cpu_s": t.cpu_s[0], "bytes": path.stat().st_size,
                "path": str(path)}

    def z0_file(self, day: int) -> tuple[dict, Path]:
        path = self.files / f"day{day}.Z0"
        t = self._timed(self.pg_dump + ["-Fc", "-Z0", "-f", path])
        return {"s": t.seconds, "bytes": path.stat().st_size}, path

    def _repo(self, name: str, consumer: list) -> dict:
        repo = self.tmp / name
        before = du(repo)
        t = self._timed(self.pg_dump + ["-Fc", "-Z0"], consumer)
        after = du(repo)
        return {"s": t.seconds, "cpu_s": sum(t.cpu_s), "bytes": after - before,
                "repo_bytes": after, "maxrss_kib": t.maxrss_kib[1]}

    def restic(self, day: int) -> dict:
        return self._repo("restic", ["restic", "backup", "--compression", "auto", "--stdin",
                                     "--stdin-filename", "db.dump", "--host", "churn",
                                     "--quiet"])

    def borg(self, day: int) -> dict:
        return self._repo("borg", ["borg", "create", "--compression", "zstd,3",
                                   f"::day{day}", "-"])

    def zstd(self, day: int, dump: Path, prev: Path | None) -> dict:
        """Day 1: zstd of the dump; later days: zstd --patch-from the previous."""
        out = self.tmp / f"day{day}.zst"
        patch = [f"--patch-from={prev}"] if prev else []
        t = self._timed(["zstd", "-q", "-f", f"-{self.level}", "--long=31", *patch, dump,
                         "-o", out])
        size = out.stat().st_size
        out.unlink()
        return {"s": t.seconds, "bytes": size, "patch": bool(prev), "maxrss_kib": t.maxrss_kib[0]}


# ───────────────────────────── the run ─────────────────────────────

DIRECTORY = "directory -j2"


def variants(args) -> list[tuple[str, dict, list]]:
    """The pgsnapman workers to run: (label, extra environment, job options)."""
    without = ("without deltas", {DELTA_KEY: "0"}, [])
    depth = {DELTA_KEY: str(args.delta_depth)} if args.delta_depth else {}
    with_ = ("with deltas", depth, [])
    out = {"off": [without], "on": [with_], "both": [without, with_]}[args.deltas]
    if args.directory:
        out.append((DIRECTORY, depth, ["--format", "directory", "--jobs", "2"]))
    return out


def restore(src: Cluster, snap: Pgsnapman, last: dict, fc: Path, z0: Path, tmp: Path) -> dict:
    """Times pg_restore of the last day from local files and from each store
    (`restore now`, and extract then pg_restore of the file),
    in two rounds, the second in reverse order so that drifting load hits all
    sources alike; each restored database is checked against the source."""
    want = src.psql("bench", churn_sql.FINGERPRINT, timeout=STEP_TIMEOUT).strip()

    def restore_into(db: str, archive: Path) -> tuple[float, bool]:
        src.psql("postgres", f"CREATE DATABASE {db};", timeout=120)
        t = timed([[src.pg_bin / "pg_restore", *src.conn(db), "--exit-on-error", archive]],
                  env=src.env, timeout=STEP_TIMEOUT, log=tmp / "tools.log")
        same = src.psql(db, churn_sql.FINGERPRINT, timeout=STEP_TIMEOUT).strip() == want
        src.psql("postgres", f"DROP DATABASE {db};", timeout=300)
        return t.seconds, same

    def from_store(variant: str) -> dict:
        to = tmp / "extract"
        extract_s, archive = snap.extract(variant, last["pgsnapman"][variant]["uuid"], to)
        restore_s, same = restore_into("restore_store", archive)
        shutil.rmtree(to)
        return {"extract_s": extract_s, "pg_restore_s": restore_s, "s": extract_s + restore_s,
                "content_matches": same}

    def real(variant: str) -> dict:
        db = "restore_real"
        x = snap.restore_now(variant, last["pgsnapman"][variant]["dump_id"], db)
        same = src.psql(db, churn_sql.FINGERPRINT, timeout=STEP_TIMEOUT).strip() == want
        src.psql("postgres", f"DROP DATABASE {db};", timeout=300)
        # The task's own span when the coordinator recorded it: without the
        # lease wait and the CLI's polling.
        return dict(s=x["task_s"] if x["task_s"] is not None else x["cli_s"],
                    cli_s=x["cli_s"], content_matches=same, rss_peak_kib=x["rss_peak_kib"])

    def from_file(archive: Path) -> dict:
        restore_s, same = restore_into("restore_file", archive)
        return {"s": restore_s, "content_matches": same}

    sources = {"pg_restore -Fc file": lambda: from_file(fc),
               "pg_restore -Fc -Z0 file": lambda: from_file(z0)}
    for variant in snap.workers:
        if variant != DIRECTORY:  # extract gives a directory, not one archive
            sources[f"pgsnapman {variant}"] = lambda v=variant: from_store(v)
        sources[f"pgsnapman restore now, {variant}"] = lambda v=variant: real(v)
    rounds = {name: [] for name in sources}
    for order in (list(sources), list(sources)[::-1]):
        for name in order:
            rounds[name].append(sources[name]())
    out = {}
    for name, runs in rounds.items():
        mean = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]
                if k == "s" or k.endswith("_s")}
        mean.update({k: max(r[k] for r in runs) for k in runs[0] if k.endswith("_kib")})
        out[name] = dict(mean, rounds=[r["s"] for r in runs],
                         content_matches=all(r["content_matches"] for r in runs))
    return out


def one_day(day: int, args, src: Cluster, snap: Pgsnapman, others: Others,
            mon: LoadMonitor, prev: Path | None) -> tuple[dict, Path]:
    rec = {"day": day, "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if day > 1:
        start = time.monotonic()
        src.psql("bench", churn_sql.churn_day(day, args.rate), timeout=STEP_TIMEOUT)
        src.psql("bench", churn_sql.VACUUM, timeout=STEP_TIMEOUT)
        rec["churn_s"] = time.monotonic() - start
    rec["rows"] = src.psql("bench", churn_sql.COUNTS, timeout=STEP_TIMEOUT).strip()
    since = time.monotonic()

    def measured(step) -> dict:
        """The step's figures plus the CPU the PostgreSQL server spent on it."""
        before = src.server_cpu_s()
        figures = step()
        return dict(figures, server_cpu_s=src.server_cpu_s() - before)

    # The baseline before and after pgsnapman's dumps: their mean is the reference.
    rec["devnull"] = [measured(others.devnull)]
    rec["pgsnapman"] = {v: measured(lambda v=v: snap.dump(v, day)) for v in snap.workers}
    rec["devnull"].append(measured(others.devnull))
    rec["fc"] = measured(lambda: others.fc_file(day))
    rec["z0"], z0 = others.z0_file(day)
    rec["restic"] = measured(lambda: others.restic(day))
    rec["borg"] = measured(lambda: others.borg(day))
    rec["zstd"] = others.zstd(day, z0, prev)
    rec["load"] = mon.window(since)
    return rec, z0


def main() -> int:
    args = parse_args()

    install_missing()
    pg_bin = args.pg_bin or max(Path("/usr/lib/postgresql").glob("*/bin"),
                                key=lambda p: int(p.parent.name))
    bins = build(args.no_build)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pgsnapman-churn-", dir=args.work_dir))
    tmp.chmod(0o755)  # the postgres OS user runs the clusters inside it
    log(f"working in {tmp}; results go to {args.out}")
    with contextlib.ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        stack.callback(copy_logs, tmp, args.out)
        env = clean_env(pg_bin, tmp)
        mon = stack.enter_context(LoadMonitor())
        results = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                   "args": {k: str(v) for k, v in vars(args).items()},
                   "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "load_start": uptime(), "machine": machine(env, tmp, bins, pg_bin),
                   "zstd_flags": f"-{args.zstd_level} --long=31", "days": []}

        src = Cluster(tmp / "source", pg_bin, env)
        stack.callback(src.stop)
        src.start()
        scale = args.size_mb / churn_sql.MB_AT_SCALE_1
        log(f"generating the database (scale {scale:.2f})")
        start = time.monotonic()
        src.psql("postgres", "CREATE DATABASE bench;", timeout=120)
        src.psql("bench", churn_sql.initial_load(scale), timeout=STEP_TIMEOUT)
        src.psql("bench", churn_sql.VACUUM, timeout=STEP_TIMEOUT)
        results["generate_s"] = time.monotonic() - start

        snap = Pgsnapman(bins, pg_bin, tmp, env, stack)
        snap.start_coordinator()
        for variant, extra, job_args in variants(args):
            snap.start_worker(variant, extra, job_args, src.port)
        others = Others(src, tmp, env, args.zstd_level)
        results["store_du_initial"] = snap.initial_du
        results["repos"] = others.init_repos()

        prev = None
        for day in range(1, args.days + 1):
            log(f"day {day}/{args.days}")
            rec, z0 = one_day(day, args, src, snap, others, mon, prev)
            if prev:
                prev.unlink()
            prev = z0
            results["days"].append(rec)
            log(churn_report.day_line(rec))
            (args.out / "results.json").write_text(json.dumps(results, indent=2))

        log("restoring the last day")
        results["restore"] = restore(src, snap, results["days"][-1],
                                     Path(results["days"][-1]["fc"]["path"]), prev, tmp)
        results["load_end"] = uptime()
        results["log_problems"] = log_problems(tmp)
        results["load_run"] = mon.window(0)
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        report = churn_report.render(results)
        (args.out / "report.md").write_text(report)
        print(report)
    log(f"results in {args.out}")
    return 0


def log_problems(tmp: Path, limit: int = 20) -> list[str]:
    """WARN and ERROR lines of the coordinator's and workers' logs."""
    found = []
    for f in sorted([tmp / "coordinator.log", *tmp.glob("bench-*.log")]):
        for line in f.read_text(errors="replace").splitlines():
            if " WARN " in line or " ERROR " in line:
                found.append(f"{f.name}: {line.strip()[:300]}")
    return found[:limit] + ([f"… and {len(found) - limit} more"] if len(found) > limit else [])


def copy_logs(tmp: Path, out: Path):
    """Keeps the daemons' and tools' logs with the results."""
    for f in tmp.glob("*.log"):
        with contextlib.suppress(OSError):
            shutil.copy(f, out / f.name)


if __name__ == "__main__":
    run_main(main, "churn")
