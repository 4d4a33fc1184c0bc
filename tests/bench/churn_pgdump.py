#!/usr/bin/env python3
"""Store growth on real pg_dump output, without the services: a throwaway
PostgreSQL cluster holds the churn benchmark's database (churn_sql.py, or
churn_sql_wide.py with --wide); each simulated day is dumped with
`pg_dump -Fc -Z0` to a file, and every store binary given (the store crate's
`churn` example, `--stdin` mode) ingests the days in order into its own
store. Prints, per day and over days 2..N, the bytes each store added (pack
bytes as the store reports them, and its whole directory) beside
`zstd --patch-from` of each day on the day before (at zstd's default level,
like the `churn` example, and at -12 --long=31, like churn.py).

  tests/bench/churn_pgdump.py --store after=<churn binary> [--store before=…]
      [--wide] [--scale 0.33] [--days 7] [--rate 0.01] [--workdir DIR]

With --workdir, the dumps are kept there and reused by the next run.

Standard library only; PostgreSQL 15 from /usr/lib/postgresql/15/bin or
PG_BINDIR; sizes are deterministic (setseed), times are not reported.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import churn_sql  # noqa: E402
import churn_sql_wide  # noqa: E402

PG_BIN = Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def as_server_user(cmd: list) -> list:
    """As root, PostgreSQL's server programs run as the OS user `postgres`."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Cluster:
    """A throwaway PostgreSQL cluster on a Unix socket in `root`."""

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        run(as_server_user([PG_BIN / "initdb", "-D", self.data, "--no-sync", "-A", "trust", "-U", "postgres"]),
            stdout=subprocess.DEVNULL)
        self.port = "5999"
        opts = f"-p {self.port} -k {root} -c fsync=off -c autovacuum=off -c listen_addresses=''"
        run(as_server_user([PG_BIN / "pg_ctl", "-D", self.data, "-w", "-l", root / "pg.log",
                            "-o", opts, "start"]), stdout=subprocess.DEVNULL)

    def conn(self):
        return ["-h", str(self.root), "-p", self.port, "-U", "postgres"]

    def psql(self, sql: str, db: str = "bench"):
        run([PG_BIN / "psql", *self.conn(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db],
            input=sql.encode(), stdout=subprocess.DEVNULL)

    def dump(self, out: Path):
        run([PG_BIN / "pg_dump", *self.conn(), "-Fc", "-Z0", "-f", out, "bench"])

    def stop(self):
        run(as_server_user([PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "stop"]),
            stdout=subprocess.DEVNULL)


def patch_from(prev: Path, cur: Path, extra: list) -> int:
    out = cur.with_suffix(".zst")
    run(["zstd", "-q", "-f", *extra, f"--patch-from={prev}", cur, "-o", out])
    size = out.stat().st_size
    out.unlink()
    return size


def generate(sql, work: Path, args):
    """Loads the database and writes day1.dump … dayN.dump into `work`."""
    shutil.rmtree(work / "pg", ignore_errors=True)
    (work / "pg").mkdir()
    cluster = Cluster(work / "pg")
    try:
        cluster.psql("CREATE DATABASE bench", db="postgres")
        cluster.psql(sql.initial_load(args.scale))
        for day in range(1, args.days + 1):
            if day > 1:
                cluster.psql(sql.churn_day(day, args.rate))
                cluster.psql(sql.VACUUM)
            path = work / f"day{day}.dump"
            cluster.dump(path)
            print(f"day {day}: dump {path.stat().st_size / 1e6:.1f} MB", flush=True)
    finally:
        cluster.stop()
    shutil.rmtree(work / "pg", ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", action="append", required=True, help="label=churn binary")
    ap.add_argument("--wide", action="store_true")
    ap.add_argument("--scale", type=float, default=0.33)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--rate", type=float, default=0.01)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    sql = churn_sql_wide if args.wide else churn_sql
    work = Path(args.workdir or tempfile.mkdtemp(prefix="churn-pgdump-"))
    work.mkdir(parents=True, exist_ok=True)
    dumps = [work / f"day{day}.dump" for day in range(1, args.days + 1)]
    if all(p.exists() for p in dumps):
        print(f"reusing the dumps in {work}")
    else:
        generate(sql, work, args)
    bound3 = [patch_from(a, b, []) for a, b in zip(dumps, dumps[1:])]
    bound12 = [patch_from(a, b, ["-12", "--long=31"]) for a, b in zip(dumps, dumps[1:])]
    results = {}
    for spec in args.store:
        label, binary = spec.split("=", 1)
        root = work / f"store-{label}"
        shutil.rmtree(root, ignore_errors=True)
        packs, dirs, before = [], [], 0
        for path in dumps:
            with open(path, "rb") as f:
                out = run([binary, "--stdin", str(root)], stdin=f, capture_output=True,
                          text=True).stdout
            m = re.search(r"as ([0-9.]+) MB new", out)
            packs.append(float(m.group(1)) * 1e6 if m else float("nan"))
            now = dir_bytes(root)
            dirs.append(now - before)
            before = now
        results[label] = (packs, dirs)
        shutil.rmtree(root, ignore_errors=True)
    mb = lambda b: f"{b / 1e6:.3f}"  # noqa: E731
    head = "| day | patch-from (zstd -3) | patch-from (-12 --long=31) |"
    for label in results:
        head += f" {label}: packs | {label}: directory |"
    print("\n" + head)
    print("|" + "---|" * (3 + 2 * len(results)))
    for d in range(args.days):
        row = f"| {d + 1} | {mb(bound3[d - 1]) if d else '–'} | {mb(bound12[d - 1]) if d else '–'} |"
        for packs, dirs in results.values():
            row += f" {mb(packs[d])} | {mb(dirs[d])} |"
        print(row)
    b3, b12 = sum(bound3), sum(bound12)
    row = f"| 2–{args.days} | {mb(b3)} | {mb(b12)} |"
    for packs, dirs in results.values():
        p, d = sum(packs[1:]), sum(dirs[1:])
        row += f" {mb(p)} = {p / b3:.2f}× / {p / b12:.2f}× | {mb(d)} = {d / b3:.2f}× / {d / b12:.2f}× |"
    print(row)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
