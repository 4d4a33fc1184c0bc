#!/usr/bin/env python3
"""What largest-first order is worth to pg_restore -j 2 when the largest
table has the highest dump id (docs/benchmarks.md, "Restores from the store",
eleventh session). One throwaway PostgreSQL 15 cluster; a database of 4
tables of ~M MB created first and one of ~5M MB created last (each with a
primary key and an index); pg_dump -Fd -Z0. Then, rounds alternating in
order, into a new database each:
  C    pg_restore -j 2 of the directory (files: pg_restore sizes them)
  CF   the same toc.dat, every data file a FIFO fed by `cat` (size 0:
       dump-id order, what a served restore did before renumbering)
  CFR  as CF, toc.dat renumbered largest first (the worker's rule, ported
       here: non-pre-data entries sorted by (size desc, id), given their
       own ids in that order, dependencies rewritten; a port for this
       experiment only: the e2e restore_served tests check that the
       worker's own code gives this order)
Every restore is checked by the large table's row count.

    tests/bench/restore_order.py [M=40] [ROUNDS=3]

Run it under flock /tmp/bench.lock like every benchmark; as root, the
cluster runs as the postgres user (runuser)."""
import os, subprocess, sys, time, shutil, tempfile, socket

BIN = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")
M = int(sys.argv[1]) if len(sys.argv) > 1 else 40
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3

AS_PG = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

def run(*a, **k):
    return subprocess.run(a, check=True, **k)

def run_pg(*a, **k):
    return subprocess.run(AS_PG + list(a), check=True, **k)

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

# --- the renumbering, ported from worker/src/restore/order.rs ---
def renumber(toc, sizes):
    pos = 0
    def take(n):
        nonlocal pos
        b = toc[pos:pos+n]; pos += n; return b
    head = take(11); isz = head[8]; ver = (head[5], head[6])
    def rint():
        b = take(1 + isz); v = int.from_bytes(b[1:], "little"); return -v if b[0] else v
    def rstr():
        n = rint()
        return None if n < 0 else take(n)
    if ver >= (1, 15): take(1)
    else: rint()
    for _ in range(7): rint()
    for _ in range(3): rstr()
    entries = []
    for _ in range(rint()):
        s = pos; i = rint(); idr = (s, pos)
        rint(); rstr(); rstr(); rstr(); desc = rstr(); sec = rint()
        for _ in range(5): rstr()
        if ver >= (1, 14): rstr()
        if ver >= (1, 16): rint()
        rstr(); rstr()
        deps = []
        while True:
            a = pos; d = rstr()
            if d is None: break
            deps.append(((a, pos), int(d)))
        f = rstr(); f = f.decode() if f else None
        entries.append(dict(id=i, idr=idr, sec=sec, file=f, deps=deps))
    ren = [e for e in entries if e["sec"] != 2]
    ids = sorted(e["id"] for e in ren)
    ren.sort(key=lambda e: (-sizes.get(e["file"], 0) if e["file"] else 0, e["id"]))
    new = {e["id"]: n for e, n in zip(ren, ids)}
    def pint(v): return bytes([v < 0]) + abs(v).to_bytes(isz, "little")
    pieces = []
    for e in entries:
        pieces.append((e["idr"], pint(new.get(e["id"], e["id"]))))
        for r, d in e["deps"]:
            t = str(new.get(d, d)).encode(); pieces.append((r, pint(len(t)) + t))
    out = bytearray(); at = 0
    for (a, b), rep in pieces:
        out += toc[at:a] + rep; at = b
    out += toc[at:]
    return bytes(out)

def main():
    tmp = tempfile.mkdtemp(prefix="orderexp-")
    data = os.path.join(tmp, "data"); port = free_port()
    os.chmod(tmp, 0o777)
    run_pg(f"{BIN}/initdb", "-D", data, "-U", "postgres", "-A", "trust", stdout=subprocess.DEVNULL)
    with open(os.path.join(data, "postgresql.conf"), "a") as c:
        c.write(f"port={port}\nlisten_addresses='127.0.0.1'\nunix_socket_directories='{tmp}'\n"
                "shared_buffers=512MB\nmax_wal_size=4GB\nfsync=off\n")
    run_pg(f"{BIN}/pg_ctl", "-D", data, "-l", os.path.join(tmp, "log"), "-w", "start", stdout=subprocess.DEVNULL)
    env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="postgres")
    psql = lambda db, sql: run(f"{BIN}/psql", "-qAtX", "-d", db, "-c", sql, env=env, stdout=subprocess.PIPE).stdout.decode().strip()
    try:
        psql("postgres", "CREATE DATABASE src")
        rows = M * 1024 * 1024 // 150
        def table(name, n):
            psql("src", f"CREATE TABLE {name} (id bigint PRIMARY KEY, a text, b text, c int);"
                        f"INSERT INTO {name} SELECT g, md5(g::text) || md5((g*7)::text), repeat(md5((g*3)::text), 2), g % 1000 FROM generate_series(1, {n}) g;"
                        f"CREATE INDEX ON {name} (c);")
        for i in range(4): table(f"small{i}", rows)
        table("large", rows * 5)
        dump = os.path.join(tmp, "dump")
        run(f"{BIN}/pg_dump", "-Fd", "-Z0", "-f", dump, "src", env=env)
        sizes = {f: os.path.getsize(os.path.join(dump, f)) for f in os.listdir(dump) if f.endswith(".dat") and f != "toc.dat"}
        print("data files MB:", sorted(round(v / 1e6, 1) for v in sizes.values()), flush=True)
        toc = open(os.path.join(dump, "toc.dat"), "rb").read()
        toc_r = renumber(toc, sizes)
        res = {"C": [], "CF": [], "CFR": []}
        n = 0
        for r in range(ROUNDS):
            order = ["C", "CF", "CFR"] if r % 2 == 0 else ["CFR", "CF", "C"]
            for mode in order:
                n += 1; db = f"t{n}"
                psql("postgres", f"CREATE DATABASE {db}")
                if mode == "C":
                    src, feeders = dump, []
                else:
                    src = os.path.join(tmp, f"fifo{n}"); os.mkdir(src)
                    open(os.path.join(src, "toc.dat"), "wb").write(toc if mode == "CF" else toc_r)
                    feeders = []
                    for f in sizes:
                        p = os.path.join(src, f); os.mkfifo(p)
                        feeders.append(subprocess.Popen(["sh", "-c", f"cat '{os.path.join(dump, f)}' > '{p}'"]))
                t = time.monotonic()
                run(f"{BIN}/pg_restore", "-j", "2", "-d", db, src, env=env)
                el = time.monotonic() - t
                for p in feeders: p.wait()
                if src != dump: shutil.rmtree(src)
                assert psql(db, "SELECT count(*) FROM large") == str(rows * 5)
                psql("postgres", f"DROP DATABASE {db}")
                res[mode].append(el)
                print(f"round {r+1} {mode}: {el:.2f} s load {os.getloadavg()[0]:.2f}", flush=True)
        for m, v in res.items():
            print(m, ", ".join(f"{x:.2f}" for x in v), "mean", round(sum(v) / len(v), 2))
        for m in ("CF", "CFR"):
            rat = [a / b for a, b in zip(res[m], res["C"])]
            print(f"{m}/C", ", ".join(f"{x:.3f}" for x in rat), "mean", round(sum(res[m]) / sum(res["C"]), 3))
    finally:
        run_pg(f"{BIN}/pg_ctl", "-D", data, "-m", "fast", "stop", stdout=subprocess.DEVNULL)
        shutil.rmtree(tmp)

main()
