"""Where a PostgreSQL server's CPU goes during one benchmark step: every
child of the postmaster is sampled (/proc/<pid>/stat and its process title)
every 100 ms, and its CPU growth is summed by kind — backends by database
(a restore's target, the maintenance database), autovacuum workers, the
long-lived processes (checkpointer, WAL writer, ...). A child that ends
between two samples loses at most its last 100 ms; that part shows as
"unsampled" (the postmaster's reaped-children CPU minus what was sampled of
the children that ended).

    with ServerProcs(postmaster_pid, databases={"restore_file": "target"}) as s:
        ...
    s.by_kind  ->  {"backend target": 1.2, "autovacuum worker": 0.0, ...}
    s.waits_by_kind  ->  {"backend target": 3100, ...}  (voluntary context
    switches up to the last sample: how often those processes waited)
"""
import os
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own CPU s, reaped children's CPU s) of a process; None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    own = (int(fields[11]) + int(fields[12])) / TICK
    children = (int(fields[13]) + int(fields[14])) / TICK
    return int(fields[1]), own, children


def _waits(pid: int) -> int:
    """Voluntary context switches of a (single-threaded) process: how often
    it waited (for a COPY backend, mostly for the client's next bytes)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _title(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


LONG_LIVED = ("autovacuum launcher", "checkpointer", "background writer", "walwriter",
              "logical replication launcher", "archiver", "startup", "stats collector",
              "walsummarizer", "io worker")


def kind_of(title: str, databases: dict) -> str:
    """The kind of a postmaster child from its process title
    ("postgres: <user> <database> <host> <state>" for a backend)."""
    rest = title.removeprefix("postgres:").strip()
    for fixed in LONG_LIVED + ("autovacuum worker", "parallel worker"):
        if rest.startswith(fixed):
            return fixed
    parts = rest.split()
    if len(parts) >= 2:
        db = parts[1]
        for prefix, label in databases.items():
            if db.startswith(prefix):
                return f"backend {label}"
        return f"backend {db}"
    return "other: " + rest[:40]


def children(postmaster: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[0] == postmaster:
                out.append(int(entry.name))
    return out


def settle(postmaster: int, timeout: float = 10.0) -> bool:
    """Waits until the postmaster has only its long-lived children: every
    backend (and autovacuum or parallel worker) has ended and been reaped,
    so its CPU is in the postmaster's reaped-children figure. A backend
    outlives its client's exit by a little; read at once, its CPU would
    land in the next step's figure. False if some child stayed."""
    deadline = time.monotonic() + timeout
    while True:
        # A zombie has no title: it is not reaped yet.
        if all(kind_of(_title(pid), {}) in LONG_LIVED for pid in children(postmaster)):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


class ServerProcs:
    """Samples the children of `postmaster` in a thread while in a `with`
    block. `databases`: database-name prefix -> label for the backends."""

    def __init__(self, postmaster: int, databases: dict | None = None, period: float = 0.1):
        self.postmaster, self.databases, self.period = postmaster, databases or {}, period
        self.first: dict = {}   # pid -> CPU s when first seen
        self.last: dict = {}    # pid -> CPU s when last seen
        self.kinds: dict = {}   # pid -> kind (from the newest title)
        self.waits: dict = {}   # pid -> (voluntary switches when first seen, last seen)
        self.by_kind: dict = {}
        self.waits_by_kind: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, initial: bool = False):
        for pid in children(self.postmaster):
            st = _stat(pid)
            if st is None:
                continue
            # A child seen first after the start began during the step: all
            # of its CPU counts.
            self.first.setdefault(pid, st[1] if initial else 0.0)
            self.last[pid] = st[1]
            waits = _waits(pid)
            self.waits[pid] = (self.waits.get(pid, (waits if initial else 0,))[0], waits)
            title = _title(pid)
            if title:
                self.kinds[pid] = kind_of(title, self.databases)

    def _run(self):
        while not self._stop.wait(self.period):
            self._sample()

    def __enter__(self):
        pm = _stat(self.postmaster)
        self._pm0 = pm[1:] if pm else (0.0, 0.0)
        self._sample(initial=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample()
        pm = _stat(self.postmaster)
        pm1 = pm[1:] if pm else self._pm0
        alive = set(children(self.postmaster))
        by_kind: dict = {}
        waits: dict = {}
        ended_sampled = 0.0
        for pid, cpu in self.last.items():
            grew = cpu - self.first[pid]
            kind = self.kinds.get(pid, "other")
            by_kind[kind] = by_kind.get(kind, 0.0) + grew
            w0, w1 = self.waits.get(pid, (0, 0))
            waits[kind] = waits.get(kind, 0) + w1 - w0
            if pid not in alive:
                ended_sampled += cpu
        by_kind["postmaster"] = pm1[0] - self._pm0[0]
        # Reaped children's CPU includes what they used before the step
        # began (a child alive at the start and ended during it), so the
        # residual is a rough figure, never negative.
        reaped = pm1[1] - self._pm0[1]
        by_kind["unsampled"] = max(0.0, reaped - ended_sampled)
        self.by_kind = {k: round(v, 3) for k, v in sorted(by_kind.items()) if v > 0}
        self.reaped_s = round(reaped, 3)
        self.waits_by_kind = {k: v for k, v in sorted(waits.items()) if v > 0}
        return False
