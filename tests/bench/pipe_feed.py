#!/usr/bin/env python3
"""How a pipe's writer disturbs pg_restore (docs/benchmarks.md, "Restores
from the store", eighth session): pg_restore of the churn benchmark's
database as a -Fc -Z0 file read
  file   from the file,
  block  from a 1 MiB pipe fed with blocking 256 KiB writes (what the worker
         did before),
  half   from a pipe fed only when half of it is free, 1 ms sleeps between,
and (-j 2) of a -Fd directory read
  dir-file  from its files,
  dir-fifo  from FIFOs fed by threads (what a served restore looks like).
Prints, per restore: wall s, the server's CPU once its backends are reaped,
pg_restore's CPU and context switches, the writer's.

    tests/bench/pipe_feed.py [ROUNDS] [MODES]   e.g. 3 file,block,half

Run it under flock /tmp/bench.lock like every benchmark."""
import fcntl
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import churn
import churn_sql
from churn_proc import Cluster, run
from server_procs import settle

F_SETPIPE_SZ, FIONREAD = 1031, 0x541B
CAP = 1 << 20


def ctxsw(tid):
    st = Path(f"/proc/self/task/{tid}/status").read_text().splitlines()
    return [int(line.split()[1]) for line in st
            if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt"))]


def writer(path, wfd, mode, out):
    tid = threading.get_native_id()
    t0 = time.thread_time()
    c0 = ctxsw(tid)
    with open(path, "rb", buffering=0) as f:
        data = f.read(256 * 1024)
        pos = 0
        try:
            while data:
                if mode == "half":
                    buf = bytearray(4)
                    fcntl.ioctl(wfd, FIONREAD, buf)
                    used = int.from_bytes(buf, "little")
                    free = CAP - used
                    if free < CAP // 2:
                        time.sleep(0.001)
                        continue
                    n = os.write(wfd, data[pos:pos + free])
                else:
                    n = os.write(wfd, data[pos:])
                pos += n
                if pos >= len(data):
                    data, pos = f.read(256 * 1024), 0
        except BrokenPipeError:
            pass
    os.close(wfd)
    c1 = ctxsw(tid)
    out["writer_cpu_s"] = time.thread_time() - t0
    out["writer_vol_cs"], out["writer_invol_cs"] = c1[0] - c0[0], c1[1] - c0[1]


def fifo_dir(src_dir, dst):
    """A copy of directory dump `src_dir` whose .dat files are FIFOs, each
    fed by a thread once opened."""
    dst.mkdir()
    threads = []
    for f in sorted(src_dir.iterdir()):
        if f.name.endswith(".dat") and f.name != "toc.dat":
            os.mkfifo(dst / f.name)
            def feed(f=f, fifo=dst / f.name):
                w = os.open(fifo, os.O_WRONLY)
                fcntl.fcntl(w, F_SETPIPE_SZ, CAP)
                with open(f, "rb") as r:
                    while True:
                        b = r.read(256 * 1024)
                        if not b:
                            break
                        try:
                            os.write(w, b)
                        except BrokenPipeError:
                            break
                os.close(w)
            t = threading.Thread(target=feed, daemon=True)
            t.start()
            threads.append(t)
        else:
            shutil.copy(f, dst / f.name)
    os.system(f"chmod -R a+rwX {dst}")
    return threads


def one_dir(src, fd, mode, tmp, db="x"):
    src.psql("postgres", f"CREATE DATABASE {db};", timeout=120)
    pm = int((src.data / "postmaster.pid").read_text().split()[0])
    archive = fd
    if mode == "fifo":
        archive = tmp / "fifo"
        shutil.rmtree(archive, ignore_errors=True)
        fifo_dir(fd, archive)
    settle(pm)
    s0 = src.server_cpu_s()
    t0 = time.monotonic()
    p = subprocess.Popen([src.pg_bin / "pg_restore", *src.conn(db), "--exit-on-error", "-j", "2",
                          archive], env=src.env)
    _, st, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    settle(pm)
    out = dict(mode="dir-" + mode, wall=round(wall, 2), server=round(src.server_cpu_s() - s0, 2), rc=st)
    src.psql("postgres", f"DROP DATABASE {db};", timeout=120)
    return out


def one(src, archive, mode, db="x"):
    src.psql("postgres", f"CREATE DATABASE {db};", timeout=120)
    pm = int((src.data / "postmaster.pid").read_text().split()[0])
    settle(pm)
    s0 = src.server_cpu_s()
    out = {}
    t0 = time.monotonic()
    if mode == "file":
        p = subprocess.Popen([src.pg_bin / "pg_restore", *src.conn(db), "--exit-on-error", archive],
                             env=src.env)
        th = None
    else:
        r, w = os.pipe()
        fcntl.fcntl(w, F_SETPIPE_SZ, CAP)
        p = subprocess.Popen([src.pg_bin / "pg_restore", *src.conn(db), "--exit-on-error"],
                             env=src.env, stdin=r)
        os.close(r)
        th = threading.Thread(target=writer, args=(archive, w, mode, out))
        th.start()
    _, st, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    if th:
        th.join()
    settle(pm)
    out.update(mode=mode, wall=round(wall, 2), server=round(src.server_cpu_s() - s0, 2),
               pgr_cpu=round(ru.ru_utime + ru.ru_stime, 2), pgr_vol_cs=ru.ru_nvcsw,
               pgr_invol_cs=ru.ru_nivcsw, rc=st)
    if "writer_cpu_s" in out:
        out["writer_cpu_s"] = round(out["writer_cpu_s"], 2)
    src.psql("postgres", f"DROP DATABASE {db};", timeout=120)
    return out


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    modes = sys.argv[2].split(",") if len(sys.argv) > 2 else ["file", "block", "half"]
    pg_bin = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    tmp = Path(tempfile.mkdtemp(prefix="pgsnapman-pipe-feed-"))
    tmp.chmod(0o755)
    env = churn.clean_env(pg_bin, tmp)
    src = Cluster(tmp / "source", pg_bin, env)
    try:
        src.start()
        src.psql("postgres", "CREATE DATABASE bench;", timeout=120)
        src.psql("bench", churn_sql.initial_load(100 / churn_sql.MB_AT_SCALE_1), timeout=3600)
        src.psql("bench", churn_sql.VACUUM, timeout=3600)
        z0 = tmp / "bench.Z0"
        run([pg_bin / "pg_dump", *src.conn("bench"), "-Z0", "-Fc", "-f", z0], env=env, timeout=3600)
        z0.chmod(0o644)
        fd = tmp / "bench.Fd"
        run([pg_bin / "pg_dump", *src.conn("bench"), "-Z0", "-Fd", "-j", "2", "-f", fd], env=env, timeout=3600)
        os.system(f"chmod -R a+rX {fd}")
        print(run([pg_bin / "pg_restore", "-l", fd], env=env, timeout=60))
        print(sorted((f.stat().st_size, f.name) for f in fd.iterdir()))
        for i in range(rounds):
            order = modes if i % 2 == 0 else modes[::-1]
            for m in order:
                if m.startswith("dir-"):
                    print(one_dir(src, fd, m[4:], tmp), "load", open("/proc/loadavg").read().split()[0], flush=True)
                    continue
                print(one(src, z0, m), "load", open("/proc/loadavg").read().split()[0], flush=True)
    finally:
        src.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
