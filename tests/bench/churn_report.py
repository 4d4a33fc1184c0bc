"""Markdown report of the churn benchmark, from the results churn.py
collects (results.json). MB = 10^6 bytes; MiB = 2^20 bytes (memory)."""

VARIANTS = ("without deltas", "with deltas", "directory -j2")
NOT_RUN = "—"


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f}" if abs(n) < 10e6 else f"{n / 1e6:,.1f}"


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.0f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else NOT_RUN


def _table(head: list, rows: list) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _devnull(d: dict, key: str = "s") -> float:
    """The baseline (mean of the runs before and after pgsnapman's dump)."""
    return sum(x[key] for x in d["devnull"]) / len(d["devnull"])


def _growth(days: list, initial: float, key) -> list:
    """Per-day increase of a cumulative size read by `key(day)`."""
    out, before = [], initial
    for d in days:
        now = key(d)
        out.append(now - before)
        before = now
    return out


def day_line(d: dict) -> str:
    """One line of progress for the log."""
    snaps = ", ".join(f"{v}: {p['catalog_s']:.1f} s, {_mb(p['stored_bytes'])} MB new, "
                      f"peak {_mib(p['rss_peak_kib'])} MiB" for v, p in d["pgsnapman"].items())
    return (f"day {d['day']}: dump {_mb(d['z0']['bytes'])} MB; /dev/null {_devnull(d):.1f} s; "
            f"pgsnapman {snaps}; restic +{_mb(d['restic']['bytes'])} MB; "
            f"borg +{_mb(d['borg']['bytes'])} MB; zstd bound {_mb(d['zstd']['bytes'])} MB")


def render(r: dict) -> str:
    days, m = r["days"], r["machine"]
    run_vars = [v for v in VARIANTS if v in days[0]["pgsnapman"]]

    def snap(d, v, key):
        return d["pgsnapman"][v][key] if v in d["pgsnapman"] else None

    store_growth = {v: _growth(days, r["store_du_initial"][v], lambda d, v=v: snap(d, v, "store_du"))
                    for v in run_vars}
    out = [f"# Churn benchmark, {r['date']}", "",
           f"Command: `tests/bench/{r['command']}`  ",
           f"Generated database in {r['generate_s']:.0f} s; {len(days)} days, "
           f"{float(r['args']['rate']) * 100:g}% of rows updated per day.", "",
           "## Machine", "",
           _table(["", ""], [[k, v] for k, v in m.items()]), "",
           f"Load average (1, 5, 15 min): **{r['load_start']}** at the start, "
           f"**{r.get('load_end', '?')}** at the end; during the run 1-min mean "
           f"{r['load_run']['load1_mean']}, max {r['load_run']['load1_max']}; other builds' "
           f"compiler processes seen at once: at most {r['load_run']['build_procs_max']}.", ""]

    # Sizes.
    head = ["day", "dump (-Fc -Z0)", "(a) -Fc files", "(b) restic", "(c) borg",
            "(d) pgsnapman stored_bytes", "(d) store growth (du)", "(d) with deltas",
            "bound: zstd", "(d) ÷ bound", "with deltas ÷ bound"]
    rows, tot = [], [0.0] * 8
    for i, d in enumerate(days):
        vals = [d["z0"]["bytes"], d["fc"]["bytes"], d["restic"]["bytes"], d["borg"]["bytes"],
                snap(d, "without deltas", "stored_bytes"),
                store_growth["without deltas"][i] if "without deltas" in run_vars else None,
                snap(d, "with deltas", "stored_bytes"), d["zstd"]["bytes"]]
        tot = [t + (v or 0) for t, v in zip(tot, vals)]
        rows.append([d["day"]] + [NOT_RUN if v is None else _mb(v) for v in vals]
                    + [_ratio(vals[4], vals[7]) if vals[4] is not None else NOT_RUN,
                       _ratio(vals[6], vals[7]) if vals[6] is not None else NOT_RUN])
    rows.append(["**total**"] + [_mb(t) if t else NOT_RUN for t in tot]
                + [_ratio(tot[4], tot[7]) if tot[4] else NOT_RUN,
                   _ratio(tot[6], tot[7]) if tot[6] else NOT_RUN])
    out += ["## Stored size per day (MB new; dump = what pg_dump -Fc -Z0 wrote)", "",
            _table(head, rows), "",
            f"Bound: `zstd {r['zstd_flags']}` of day 1's dump, then `--patch-from` the previous "
            "day's dump. (a) is the sum of the -Fc files; (b), (c) and \"store growth\" are the "
            "growth of the repository / store directory (du -sb: packs, index, manifests for "
            "pgsnapman); stored_bytes is the catalog row's figure (pack bytes the dump added). "
            "\"with deltas\" is a second worker whose store writes delta chunks "
            "(`--deltas both`); — = not run.", ""]

    # Wall times.
    head = ["day", "load1 mean (builds)", "churn + vacuum", "pg_dump -Fc -Z0 > /dev/null",
            "(a) pg_dump -Fc -f", "(b) pg_dump \\| restic", "(c) pg_dump \\| borg",
            "(d) pgsnapman", "(d) dump now --wait", "(d) with deltas", "zstd bound",
            "(d) ÷ /dev/null", "(d) ÷ -Fc file"]
    rows, tot = [], [0.0] * 9
    for d in days:
        p = d["pgsnapman"].get("without deltas") or d["pgsnapman"][run_vars[0]]
        vals = [d.get("churn_s", 0), _devnull(d), d["fc"]["s"], d["restic"]["s"], d["borg"]["s"],
                p["catalog_s"], p["cli_s"], snap(d, "with deltas", "catalog_s"), d["zstd"]["s"]]
        tot = [t + (v or 0) for t, v in zip(tot, vals)]
        load = f"{d['load']['load1_mean']} ({d['load']['build_procs_max']})"
        rows.append([d["day"], load] + [NOT_RUN if v is None else f"{v:.1f}" for v in vals]
                    + [_ratio(vals[5], vals[1]), _ratio(vals[5], vals[2])])
    rows.append(["**total**", ""] + [f"{t:.1f}" if t else NOT_RUN for t in tot]
                + [_ratio(tot[5], tot[1]), _ratio(tot[5], tot[2])])
    out += ["## Wall time per day (s)", "", _table(head, rows), "",
            "pgsnapman = the catalog row's finished_at − started_at (probe, metadata, pg_dump "
            "streamed into the store, read-back check); \"dump now --wait\" adds queueing, "
            "lease and the CLI's 500 ms polling. /dev/null is the mean of one run before and "
            "one after pgsnapman's dump. \"load1 mean (builds)\" is the 1-minute load average "
            "sampled every 5 s during the day's dumps and the most compiler processes of other "
            "builds seen at once; on 2 cores, anything above about 1.5 means the timings "
            "shared the CPUs with someone else.", ""]

    # CPU.
    head = ["day", "server for /dev/null", "pg_dump -Fc -Z0 > /dev/null", "(a) pg_dump -Fc -f",
            "(b) pg_dump + restic", "(c) pg_dump + borg", "server for (d)",
            "(d) worker + its pg_dump", "(d) with deltas", "(d) minus /dev/null"]
    rows, tot = [], [0.0] * 9
    for d in days:
        p = d["pgsnapman"].get("without deltas") or d["pgsnapman"][run_vars[0]]
        vals = [_devnull(d, "server_cpu_s"), _devnull(d, "cpu_s"), d["fc"]["cpu_s"],
                d["restic"]["cpu_s"], d["borg"]["cpu_s"], p["server_cpu_s"], p["cpu_s"],
                snap(d, "with deltas", "cpu_s"), p["cpu_s"] - _devnull(d, "cpu_s")]
        tot = [t + (v or 0) for t, v in zip(tot, vals)]
        rows.append([d["day"]] + [NOT_RUN if v is None else f"{v:.1f}" for v in vals])
    rows.append(["**total**"] + [f"{t:.1f}" if t else NOT_RUN for t in tot])
    out += ["## CPU time per day (s, user + system)", "", _table(head, rows), "",
            "Unlike wall time, CPU time hardly depends on other load. \"server\" is the "
            "PostgreSQL server's share (the postmaster's reaped backends, /proc/<pid>/stat "
            "cutime + cstime, over the dump). The worker's figure is the growth of its utime + "
            "stime + cutime + cstime: its own threads plus the pg_dump, psql and pg_restore "
            "--list it ran and reaped. The tools' figures come from wait4 (both stages of a "
            "pipeline).", ""]

    # Memory.
    head = ["day", "worker idle", "worker peak (VmRSS at 20 Hz)", "worker VmHWM since start",
            "with deltas peak", "restic", "borg", "zstd bound"]
    rows = []
    for d in days:
        p = d["pgsnapman"].get("without deltas") or d["pgsnapman"][run_vars[0]]
        wd = d["pgsnapman"].get("with deltas")
        rows.append([d["day"], _mib(p["rss_idle_kib"]),
                     f"{_mib(p['rss_peak_kib'])} ({p['rss_samples']} samples)",
                     _mib(p["vmhwm_kib"]), _mib(wd["rss_peak_kib"]) if wd else NOT_RUN,
                     _mib(d["restic"]["maxrss_kib"]), _mib(d["borg"]["maxrss_kib"]),
                     _mib(d["zstd"]["maxrss_kib"])])
    out += ["## Peak memory (MiB)", "", _table(head, rows), "",
            "Worker: /proc/<pid>/status VmRSS sampled every 50 ms during `dump now --wait` "
            "(pg_dump is a separate process and not included); VmHWM is the high-water mark "
            "since the worker started. restic, borg, zstd: ru_maxrss from wait4.", ""]

    # Restore.
    rs = r.get("restore", {})
    rows = []
    for name, x in rs.items():
        parts = (f"extract {x['extract_s']:.1f} + pg_restore {x['pg_restore_s']:.1f}"
                 if "extract_s" in x else
                 f"`restore now --wait` {x['cli_s']:.1f}; worker peak "
                 f"{_mib(x['rss_peak_kib'])} MiB" if "cli_s" in x else "")
        rows.append([name, f"{x['s']:.1f}", " / ".join(f"{s:.1f}" for s in x["rounds"]), parts,
                     "yes" if x["content_matches"] else "**NO**"])
    out += [f"## Restore of day {len(days)} into a fresh database (s)", "",
            _table(["from", "mean", "round 1 / round 2", "mean parts", "content matches"],
                   rows), "",
            "Two rounds, the second in reverse order. \"pgsnapman restore now\" is the real "
            "restore: `pgsnap restore now --wait` into a new database on the source instance; "
            "the worker streams the dump from its store into pg_restore's stdin, restores into "
            "a temporary database and renames it (mean = the task's started_at → finished_at, "
            "without queueing and the CLI's polling). \"pgsnapman <variant>\" is "
            "`pgsnapman-worker store extract` to a local file, then pg_restore of that file. "
            "\"content matches\" compares row counts and a hash of every row with the source "
            "database.", ""]

    if "directory -j2" in run_vars and "with deltas" in run_vars:
        rows = []
        for i, d in enumerate(days):
            c, x = d["pgsnapman"]["with deltas"], d["pgsnapman"]["directory -j2"]
            rows.append([d["day"], f"{c['catalog_s']:.1f}", f"{x['catalog_s']:.1f}",
                         _ratio(x["catalog_s"], c["catalog_s"]),
                         _mb(store_growth["with deltas"][i]), _mb(store_growth["directory -j2"][i]),
                         _mib(c["rss_peak_kib"]), _mib(x["rss_peak_kib"])])
        out += ["## Custom vs directory format (both with delta chunks)", "",
                _table(["day", "custom (s)", "directory -j2 (s)", "directory ÷ custom",
                        "custom stored (MB)", "directory stored (MB)", "custom peak RSS (MiB)",
                        "directory peak RSS (MiB)"], rows), "",
                "Each in its own worker and store. The directory format runs pg_dump -j 2; the "
                "worker ingests each file as pg_dump completes it and frees its spool.", ""]

    out += ["## Targets (measured, never asserted)", "", _table(
        ["target", "variant", "measured", "verdict"], targets(r, run_vars, store_growth)), ""]
    problems = r.get("log_problems", [])
    out += ["## WARN and ERROR lines of pgsnapman's logs", ""]
    out += [f"    {line}" for line in problems] if problems else ["None."]
    out.append("")
    return "\n".join(out)


def targets(r: dict, run_vars: list, store_growth: dict) -> list:
    days, rows = r["days"], []

    def verdict(x: float, limit: float) -> str:
        return "met" if x <= limit else f"**missed** by {(x / limit - 1) * 100:.0f}%"

    for v in run_vars:
        dn = [p["pgsnapman"][v]["catalog_s"] / _devnull(p) for p in days]
        tot = sum(p["pgsnapman"][v]["catalog_s"] for p in days) / sum(_devnull(p) for p in days)
        rows.append(["dump ≤ 1.15× `pg_dump -Fc -Z0 > /dev/null`", v,
                     f"{tot:.2f}× over all days (per day {min(dn):.2f}–{max(dn):.2f}×)",
                     verdict(tot, 1.15)])
        fc = sum(p["pgsnapman"][v]["catalog_s"] for p in days) / sum(p["fc"]["s"] for p in days)
        per = [p["pgsnapman"][v]["catalog_s"] / p["fc"]["s"] for p in days]
        rows.append(["dump ≤ 0.5× `pg_dump -Fc` to a file", v,
                     f"{fc:.2f}× over all days (per day {min(per):.2f}–{max(per):.2f}×)",
                     verdict(fc, 0.5)])
        first = days[0]
        rows.append(["first-day stored size ≤ 1.1× restic's", v,
                     f"{_ratio(store_growth[v][0], first['restic']['bytes'])} (store du "
                     f"{_mb(store_growth[v][0])} MB vs {_mb(first['restic']['bytes'])} MB); "
                     f"stored_bytes {_ratio(first['pgsnapman'][v]['stored_bytes'], first['restic']['bytes'])}",
                     verdict(store_growth[v][0] / first["restic"]["bytes"], 1.1)])
        peak = max(max(p["pgsnapman"][v]["rss_peak_kib"], p["pgsnapman"][v]["vmhwm_kib"])
                   for p in days)
        rows.append(["worker peak RSS ≤ 256 MiB", v, f"{_mib(peak)} MiB (max of sampled peaks "
                     "and VmHWM)", verdict(peak / 1024, 256)])
        rs = r.get("restore", {})
        for how, key in (("restore now", f"pgsnapman restore now, {v}"),
                         ("extract + pg_restore", f"pgsnapman {v}")):
            mine = rs.get(key)
            if not mine:
                continue
            local = rs["pg_restore -Fc -Z0 file"]["s"]
            rows.append(["restore ≤ 1.1× pg_restore of a local file of the same dump", v,
                         f"{how}: {mine['s'] / local:.2f}× ({mine['s']:.1f} s vs {local:.1f} s "
                         f"from the -Z0 file; {mine['s'] / rs['pg_restore -Fc file']['s']:.2f}× "
                         "the compressed -Fc file)", verdict(mine["s"] / local, 1.1)])
        if len(days) > 1:
            later = days[1:]
            mine = sum(store_growth[v][1:])
            bound = sum(p["zstd"]["bytes"] for p in later)
            restic = sum(p["restic"]["bytes"] for p in later)
            span = f"days 2–{len(days)}"
            rows.append([f"{span} stored ≤ 2× `zstd --patch-from` (issue 4)", v,
                         f"{_ratio(mine, bound)} (store du {_mb(mine)} MB vs {_mb(bound)} MB)",
                         verdict(mine / bound, 2.0) if bound else NOT_RUN])
            rows.append([f"{span} stored ≤ 0.05× restic (issue 4)", v,
                         f"{_ratio(mine, restic)} ({_mb(mine)} MB vs {_mb(restic)} MB)",
                         verdict(mine / restic, 0.05) if restic else NOT_RUN])
    return rows
