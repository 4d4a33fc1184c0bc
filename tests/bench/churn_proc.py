"""Processes for the churn benchmark: running and timing commands (with
their peak memory), sampling a daemon's RSS, throwaway PostgreSQL clusters
and long-running services. Everything waits with a deadline; nothing here
touches a path it was not given.
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def run(argv, *, env, timeout, input=None, cwd=None) -> str:
    """Runs a command to completion and returns its stdout; raises BenchError
    with the tail of stderr if it fails or outlives `timeout` seconds."""
    try:
        done = subprocess.run(argv, env=env, input=input, cwd=cwd, capture_output=True,
                              text=True, timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"{argv[0]} did not finish within {timeout} s: {' '.join(map(str, argv))}") from err
    except FileNotFoundError as err:
        raise BenchError(f"{argv[0]} is not installed") from err
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise BenchError(f"{' '.join(map(str, argv))} exited {done.returncode}:\n{tail}")
    return done.stdout


@dataclass
class Timed:
    seconds: float
    # ru_maxrss of each process of the pipeline, KiB.
    maxrss_kib: list
    # User + system CPU seconds of each process of the pipeline.
    cpu_s: list


def timed(stages, *, env, timeout, log: Path, stdout=subprocess.DEVNULL) -> Timed:
    """Runs a pipeline (a list of argv; 1 or 2 stages) and measures its wall
    time from the first spawn to the last exit and each stage's peak RSS
    (from wait4). `stdout` receives the last stage's output. Raises BenchError
    if any stage fails or the pipeline outlives `timeout`."""
    procs = []
    with open(log, "ab") as err:
        start = time.monotonic()
        for i, argv in enumerate(stages):
            last = i == len(stages) - 1
            stdin = procs[-1].stdout if procs else subprocess.DEVNULL
            procs.append(subprocess.Popen(
                argv, env=env, stdin=stdin, stderr=err, start_new_session=True,
                stdout=stdout if last else subprocess.PIPE))
            if i > 0:
                procs[-2].stdout.close()  # the consumer owns the pipe now
        status, rss, cpu, ends = {}, {}, {}, {}
        deadline = start + timeout
        try:
            while len(status) < len(procs):
                for p in procs:
                    if p.pid in status:
                        continue
                    pid, st, usage = os.wait4(p.pid, os.WNOHANG)
                    if pid:
                        status[p.pid] = p.returncode = os.waitstatus_to_exitcode(st)
                        rss[p.pid], ends[p.pid] = usage.ru_maxrss, time.monotonic()
                        cpu[p.pid] = usage.ru_utime + usage.ru_stime
                if time.monotonic() > deadline:
                    raise BenchError(f"{' | '.join(str(s[0]) for s in stages)} did not finish "
                                     f"within {timeout} s")
                time.sleep(0.005)
        except BaseException:  # timeout, Ctrl-C: leave nothing running
            for p in procs:
                if p.pid not in status:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            raise
    seconds = max(ends.values()) - start
    for p, argv in zip(procs, stages):
        if status[p.pid] != 0:
            raise BenchError(f"{' '.join(map(str, argv))} exited {status[p.pid]}:\n{_tail(log)}")
    return Timed(seconds, [rss[p.pid] for p in procs], [cpu[p.pid] for p in procs])


def proc_kib(pid: int, field: str) -> int:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM) in KiB, 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and of its children it has
    reaped (/proc/<pid>/stat utime, stime, cutime, cstime); 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")" of comm, field 3 (state) is index 0: utime is field 14.
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples VmRSS of one process at `hz` while in a `with` block; `.peak`
    is the largest value seen, in KiB."""

    def __init__(self, pid: int, hz: float = 20.0):
        self.pid, self.period, self.peak, self.samples = pid, 1.0 / hz, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, proc_kib(self.pid, "VmRSS"))
            self.samples += 1
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def du(*paths: Path) -> int:
    """Apparent size in bytes of every file under the paths (du -sb)."""
    total = 0
    for root in paths:
        if root.is_file():
            total += root.stat().st_size
            continue
        for dirpath, _, files in os.walk(root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    pass  # a temporary file that went away while we looked
    return total


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float, period: float = 0.2, log: Path | None = None):
    """Polls `check()` until it returns something truthy, which it returns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(period)
    raise BenchError(f"timed out after {timeout} s waiting for {what}\n{_tail(log)}")


class Service:
    """A daemon started in its own session, logging to a file."""

    def __init__(self, name: str, argv, *, env, log: Path):
        self.name, self.log = name, log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self):
        if not self.alive():
            raise BenchError(f"{self.name} exited {self.proc.returncode}:\n{_tail(self.log, 30)}")

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        return self.proc.returncode


class Cluster:
    """A throwaway PostgreSQL cluster under `root`, listening on loopback only
    (fsync off and autovacuum off: the benchmark vacuums itself, so the churn
    is deterministic). As root, the server runs as the postgres OS user."""

    def __init__(self, root: Path, pg_bin: Path, env, template: Path | None = None,
                 existing: bool = False, fsync: bool = False):
        """`template`: a stopped cluster's data directory to start a copy of
        (tests/bench/ingest.py --from-cluster) instead of a new one.
        `existing`: start the stopped cluster already in `root` in place
        (tests/bench/scale.py --cluster: too big to copy).
        `fsync`: run with fsync on, as a production server does
        (tests/bench/restore.py --fsync)."""
        self.root, self.pg_bin, self.env, self.template = root, pg_bin, env, template
        self.existing, self.fsync = existing, fsync
        self.data, self.log, self.port = root / "data", root / "pg.log", 0
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self):
        if not self.existing:
            self._create()
        self._start()

    def _create(self):
        self.root.mkdir(parents=True)
        if self.as_pg:
            run(["chown", "postgres:", self.root], env=self.env, timeout=30)
        if self.template:
            run(["cp", "-a", self.template, self.data], env=self.env, timeout=1800)
            run(["rm", "-f", self.data / "postmaster.pid"], env=self.env, timeout=30)
            if self.as_pg:
                run(["chown", "-R", "postgres:", self.data], env=self.env, timeout=300)
        else:
            run(self.as_pg + [self.pg_bin / "initdb", "-D", self.data, "-U", "postgres",
                              "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"],
                env=self.env, timeout=300)

    def _start(self):
        settings = (f"-c listen_addresses=127.0.0.1 -c fsync={'on' if self.fsync else 'off'} "
                    "-c autovacuum=off "
                    "-c max_wal_size=4GB -c maintenance_work_mem=256MB "
                    "-c max_parallel_workers_per_gather=0")
        for _ in range(5):  # another process may take the port first
            self.port = free_port()
            try:
                run(self.as_pg + [self.pg_bin / "pg_ctl", "-D", self.data, "-l", self.log, "-w",
                                  "-t", "120", "-o", f"-p {self.port} -k {self.root} {settings}",
                                  "start"], env=self.env, timeout=180)
                return
            except BenchError:
                if "could not bind" not in _tail(self.log, 5):
                    raise BenchError(f"the PostgreSQL cluster did not start:\n{_tail(self.log)}")
        raise BenchError("no free port for the PostgreSQL cluster after 5 tries")

    def stop(self):
        if (self.data / "postmaster.pid").exists():
            subprocess.run(self.as_pg + [self.pg_bin / "pg_ctl", "-D", self.data, "-m",
                                         "immediate", "-w", "-t", "60", "stop"],
                           env=self.env, capture_output=True, timeout=90)

    def server_cpu_s(self) -> float:
        """CPU seconds of the postmaster and the backends it has reaped: the
        growth over a dump is the server's work for it (the checkpointer and
        other long-lived processes are not included)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return proc_cpu_s(pid)

    def conn(self, db: str) -> list:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db]

    def psql(self, db: str, sql: str, timeout: float) -> str:
        """Runs SQL (a script on stdin) and returns the unaligned output."""
        return run([self.pg_bin / "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                    *self.conn(db), "-f", "-"], input=sql, env=self.env, timeout=timeout)


def run_main(main, name: str):
    """Exits with `main()`'s code: 1 on a BenchError, 130 when interrupted
    (SIGINT too: a shell may start a background job with SIGINT ignored)."""
    def terminate(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    try:
        sys.exit(main())
    except BenchError as err:
        print(f"{name}: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
