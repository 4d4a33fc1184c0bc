//! Churn benchmark: a deterministic pg_dump-like COPY text table, ingested on
//! day 1 and again after each simulated day in which ~1% of rows (scattered)
//! are updated (`--update-permille`) — half in place (HOT), half moved to the
//! end of the table — and 0.1% are inserted and deleted.
//!
//! cargo run --release -p pgsnapman-store --example churn -- \
//!     [--mb 200] [--days 4] [--update-permille 10] [--pack-mb 64] \
//!     [--chunk 16k/64k/256k]... [--zstd 1]... [--depth 1]... [--delta-zstd 1]... \
//!     [--features 10/4/1]... [--patch-from] [--restic] [--read | --reads N] \
//!     [--encrypt] [--positional on|off]...
//!
//! Every combination of the repeated options is one store configuration
//! (`--depth 0` stores without deltas). Prints per configuration and day the
//! new stored bytes, chunks stored as deltas / whole, ingest MB/s (the store
//! alone, reading from memory) and the generator's MB/s to /dev/null (the
//! "pg_dump > /dev/null" stand-in); then one table of new bytes per day
//! against `zstd --patch-from` of each day on the day before (the lower
//! bound, `--patch-from`) and restic's repository growth (`--restic`);
//! `--read` (`--reads N`: N times, median and best) times reading day 1 and the
//! last day back, then `verify`. `--chunk min/avg/max[/normalization]`.
//! `--stdin DIR` instead stores stdin as one dump into the store at DIR,
//! following the store's newest dump as the worker follows a job's previous
//! one (`--stdin-alone DIR`: following none); `--positional off` stores each
//! day without following the day before (positional bases, docs/store.md);
//! `--save DIR` writes each day's dump to DIR/dayN.sql; `--anatomy` prints
//! where each day's new bytes went (`anatomy.rs`). `--encrypt` stores
//! encrypted at rest with a fresh key (docs/encryption.md); run with and
//! without it under `/usr/bin/time` for the storage and CPU cost.

mod anatomy;
mod bounds;
mod table;

use std::fs::File;
use std::io::{Cursor, Write};
use std::time::Instant;

use chrono::Utc;
use pgsnapman_store::{
    BackendConfig, ChunkParams, FeatureParams, ManifestMeta, Store, StoreKey, StoreOptions,
};
use uuid::Uuid;

use table::Table;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn parse_size(s: &str) -> Option<u32> {
    let s = s.to_ascii_lowercase();
    let (num, mul) = if let Some(n) = s.strip_suffix('k') {
        (n, 1024)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 1024 * 1024)
    } else {
        (s.as_str(), 1)
    };
    num.parse::<u32>().ok().map(|n| n * mul)
}

/// `min/avg/max[/normalization]`, e.g. `64k/256k/1m` (level 0) or `16k/64k/256k/1`.
fn parse_chunk(s: &str) -> Option<ChunkParams> {
    let parts: Vec<&str> = s.split('/').collect();
    let (min, avg, max, level) = match parts.as_slice() {
        [min, avg, max] => (min, avg, max, "0"),
        [min, avg, max, level] => (min, avg, max, *level),
        _ => return None,
    };
    Some(ChunkParams {
        min_bytes: parse_size(min)?,
        avg_bytes: parse_size(avg)?,
        max_bytes: parse_size(max)?,
        normalization: level.parse().ok()?,
    })
}

fn meta() -> ManifestMeta {
    ManifestMeta {
        job_id: 1,
        task_id: 0,
        instance_id: 3,
        host: "bench".into(),
        port: 5432,
        database: "bench".into(),
        schema: String::new(),
        dump_type: "FULL".into(),
        format: "PLAIN".into(),
        server_version: "15".into(),
        client_version: "15".into(),
        started_at: Utc::now(),
        finished_at: Utc::now(),
        database_bytes: -1,
        notes: String::new(),
        script_hash: String::new(),
        restore_metadata: serde_json::Value::Null,
        table_rows: None,
        table_rows_error: String::new(),
        data_blocks: None,
    }
}

fn parse_features(s: &str) -> Option<FeatureParams> {
    let mut it = s.split('/').map(|v| v.parse::<u8>().ok());
    Some(FeatureParams {
        sample_bits: it.next()??,
        super_features: it.next()??,
        features_per_super: it.next()??,
        ..FeatureParams::default()
    })
}

fn label(o: &StoreOptions) -> String {
    let c = o.chunking;
    let f = o.features;
    format!(
        "{}k/{}k/{}k/L{} z{} depth{} dz{} f{}/{}/{}",
        c.min_bytes / 1024,
        c.avg_bytes / 1024,
        c.max_bytes / 1024,
        c.normalization,
        o.zstd_level,
        o.max_delta_depth,
        o.delta_zstd_level,
        f.sample_bits,
        f.super_features,
        f.features_per_super
    )
}

/// One day of one configuration.
struct Day {
    logical: u64,
    new: u64,
    ingest_secs: f64,
    delta_chunks: u64,
    full_chunks: u64,
}

/// One configuration's run.
struct Run {
    label: String,
    days: Vec<Day>,
}

const MB: f64 = 1e6;

fn run(
    opts: StoreOptions,
    dumps: &[Vec<u8>],
    gen_mbps: &[f64],
    reads: usize,
    anatomy: bool,
    encrypt: bool,
    positional: bool,
) -> Result<Run> {
    let mut label = label(&opts);
    if encrypt {
        label.push_str(" encrypted");
    }
    if !positional {
        label.push_str(" no-positional");
    }
    println!("\n### {label}\n");
    println!(
        "| day | logical MB | new MB | delta chunks | whole chunks | ingest MB/s | gen→/dev/null MB/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let dir = tempfile::tempdir()?;
    let key = encrypt.then(StoreKey::generate);
    let store = Store::open_encrypted(dir.path(), opts, BackendConfig::Local, key.as_ref())?;
    let mut days = Vec::new();
    let mut ids = Vec::new();
    let (mut deltas_before, mut chunks_before) = (0, 0);
    let mut places = std::collections::HashMap::new();
    for (i, dump) in dumps.iter().enumerate() {
        let t = Instant::now();
        let id = Uuid::now_v7();
        let previous = ids.last().copied().filter(|_| positional);
        let mut ingest = store.begin_after(id, previous)?;
        ingest.add_file("dump.sql", Cursor::new(dump.as_slice()))?;
        let m = ingest.finish(meta())?;
        let ingest_secs = t.elapsed().as_secs_f64();
        ids.push(id);
        let s = store.stats()?;
        let day = Day {
            logical: m.logical_bytes,
            new: m.new_stored_bytes,
            ingest_secs,
            delta_chunks: s.delta_chunks - deltas_before,
            full_chunks: (s.chunks - s.delta_chunks) - (chunks_before - deltas_before),
        };
        (deltas_before, chunks_before) = (s.delta_chunks, s.chunks);
        println!(
            "| {} | {:.1} | {:.3} | {} | {} | {:.0} | {:.0} |",
            i + 1,
            day.logical as f64 / MB,
            day.new as f64 / MB,
            day.delta_chunks,
            day.full_chunks,
            day.logical as f64 / MB / day.ingest_secs,
            gen_mbps[i],
        );
        days.push(day);
        if anatomy && i == 0 {
            anatomy::first_day(&store, id, &mut places)?;
        } else if anatomy {
            anatomy::day(&store, dumps, &ids, i, &mut places)?;
        }
    }
    let s = store.stats()?;
    let index_bytes = bounds::dir_bytes(&dir.path().join("index"))?;
    println!(
        "\nstore: {} chunks ({} deltas, {:.1} MB raw → {:.2} MB stored), {} packs, {:.2} MB of packs; \
         index dir {:.2} MB with {} feature entries",
        s.chunks,
        s.delta_chunks,
        s.unique_raw_bytes as f64 / MB,
        s.stored_bytes as f64 / MB,
        s.packs,
        s.pack_bytes as f64 / MB,
        index_bytes as f64 / MB,
        s.feature_entries,
    );
    if reads > 0 {
        for (name, id) in [("day 1", ids[0]), ("last day", ids[ids.len() - 1])] {
            let mut rates = Vec::new();
            let mut n = 0;
            for _ in 0..reads {
                let t = Instant::now();
                n = store.read_file(id, "dump.sql", &mut std::io::sink())?;
                rates.push(n as f64 / MB / t.elapsed().as_secs_f64());
            }
            rates.sort_by(f64::total_cmp);
            println!(
                "read {name}: {:.1} MB, {reads} times: median {:.0} MB/s, best {:.0} MB/s",
                n as f64 / MB,
                rates[rates.len() / 2],
                rates[rates.len() - 1]
            );
        }
        let t = Instant::now();
        let report = store.verify()?;
        println!(
            "verify: {} chunks checked in {:.1} s, clean: {}",
            report.chunks_checked,
            t.elapsed().as_secs_f64(),
            report.is_clean()
        );
    }
    Ok(Run { label, days })
}

/// Prints new bytes per day for every configuration beside the references.
fn compare(runs: &[Run], patch: Option<&[u64]>, restic: Option<&[u64]>) {
    println!("\n### New bytes per day (MB)\n");
    let mut head = "| day | patch-from | restic |".to_string();
    for r in runs {
        head.push_str(&format!(" {} |", r.label));
    }
    println!("{head}");
    println!("|{}", "---|".repeat(3 + runs.len()));
    let days = runs.first().map_or(0, |r| r.days.len());
    let cell = |v: Option<u64>| v.map_or("–".to_string(), |b| format!("{:.3}", b as f64 / MB));
    for d in 0..days {
        let p = if d == 0 {
            None
        } else {
            patch.map(|p| p[d - 1])
        };
        let mut row = format!(
            "| {} | {} | {} |",
            d + 1,
            cell(p),
            cell(restic.map(|r| r[d]))
        );
        for r in runs {
            row.push_str(&format!(" {:.3} |", r.days[d].new as f64 / MB));
        }
        println!("{row}");
    }
    let p_total: Option<u64> = patch.map(|p| p.iter().sum());
    let r_total: Option<u64> = restic.map(|r| r.iter().skip(1).sum());
    let mut row = format!("| 2–{days} | {} | {} |", cell(p_total), cell(r_total));
    for r in runs {
        let t: u64 = r.days.iter().skip(1).map(|d| d.new).sum();
        let mut c = format!(" {:.3}", t as f64 / MB);
        if let Some(p) = p_total.filter(|p| *p > 0) {
            c.push_str(&format!(" = {:.2}× patch-from", t as f64 / p as f64));
        }
        if let Some(rt) = r_total.filter(|r| *r > 0) {
            c.push_str(&format!(", {:.4}× restic", t as f64 / rt as f64));
        }
        row.push_str(&c);
        row.push_str(" |");
    }
    println!("{row}");
    let mut row = "| ingest MB/s, days 2– | | |".to_string();
    for r in runs {
        let (bytes, secs) = r
            .days
            .iter()
            .skip(1)
            .fold((0u64, 0f64), |(b, s), d| (b + d.logical, s + d.ingest_secs));
        row.push_str(&format!(" {:.0} |", bytes as f64 / MB / secs));
    }
    println!("{row}");
}

/// `--stdin <store dir>`: stores stdin (e.g. `pg_dump -Fc -Z0 | churn --stdin
/// DIR`) as one dump into the store at DIR (created with the default
/// options if missing), streaming, and prints its size, cost and MB/s.
/// `follow`: following the store's newest dump (uuids are v7: the last).
fn ingest_stdin(root: &str, follow: bool) -> Result<()> {
    let t = Instant::now();
    let store = Store::open(std::path::Path::new(root), StoreOptions::default())?;
    let previous = if follow {
        store.dump_ids()?.last().copied()
    } else {
        None
    };
    let mut ingest = store.begin_after(Uuid::now_v7(), previous)?;
    ingest.add_file("dump", std::io::stdin().lock())?;
    let m = ingest.finish(meta())?;
    let secs = t.elapsed().as_secs_f64();
    let s = store.stats()?;
    println!(
        "stored {:.1} MB as {:.3} MB new in {secs:.2} s ({:.0} MB/s); store: {} chunks, {} deltas",
        m.logical_bytes as f64 / MB,
        m.new_stored_bytes as f64 / MB,
        m.logical_bytes as f64 / MB / secs,
        s.chunks,
        s.delta_chunks
    );
    Ok(())
}

fn main() -> Result<()> {
    let mut mb = 200usize;
    let mut days = 4u64;
    let mut pack_mb = 64u64;
    let mut update_permille = 10usize;
    let (mut chunks, mut levels, mut depths, mut delta_levels, mut features) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut want_patch, mut want_restic, mut reads) = (false, false, 0usize);
    let mut anatomy = false;
    let mut encrypt = false;
    let mut save: Option<String> = None;
    let mut positionals = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--stdin" | "--stdin-alone" => {
                let dir = args.next().ok_or("--stdin needs a store directory")?;
                return ingest_stdin(&dir, a == "--stdin");
            }
            "--patch-from" => want_patch = true,
            "--restic" => want_restic = true,
            "--anatomy" => anatomy = true,
            "--encrypt" => encrypt = true,
            "--read" => reads = 1,
            _ => {
                let v = args.next().ok_or_else(|| format!("{a} needs a value"))?;
                match a.as_str() {
                    "--mb" => mb = v.parse()?,
                    "--days" => days = v.parse()?,
                    "--pack-mb" => pack_mb = v.parse()?,
                    "--update-permille" => update_permille = v.parse()?,
                    "--reads" => reads = v.parse()?,
                    "--save" => save = Some(v),
                    "--positional" => positionals.push(match v.as_str() {
                        "on" => true,
                        "off" => false,
                        _ => return Err(format!("bad --positional {v:?}, want on or off").into()),
                    }),
                    "--chunk" => chunks.push(parse_chunk(&v).ok_or_else(|| {
                        format!("bad --chunk {v:?}, want min/avg/max like 64k/256k/1m")
                    })?),
                    "--zstd" => levels.push(v.parse::<i32>()?),
                    "--depth" => depths.push(v.parse::<u8>()?),
                    "--delta-zstd" => delta_levels.push(v.parse::<i32>()?),
                    "--features" => features.push(parse_features(&v).ok_or_else(|| {
                        format!("bad --features {v:?}, want sample_bits/super_features/per_super like 6/4/2")
                    })?),
                    other => return Err(format!("unknown argument {other:?}").into()),
                }
            }
        }
    }
    let d = StoreOptions::default();
    if chunks.is_empty() {
        chunks.push(d.chunking);
    }
    if levels.is_empty() {
        levels.push(d.zstd_level);
    }
    if depths.is_empty() {
        depths.push(d.max_delta_depth);
    }
    if delta_levels.is_empty() {
        delta_levels.push(d.delta_zstd_level);
    }
    if features.is_empty() {
        features.push(d.features);
    }
    if positionals.is_empty() {
        positionals.push(true);
    }
    // ~150 bytes per row.
    let rows = mb * 1024 * 1024 / 150;

    // Render every day's dump once, timing generation + write to /dev/null.
    let mut table = Table::new(rows);
    let mut dumps = Vec::new();
    let mut gen_mbps = Vec::new();
    let mut null = File::create("/dev/null")?;
    for day in 1..=days {
        if day > 1 {
            table.churn(day, update_permille);
        }
        let t = Instant::now();
        let mut buf = Vec::with_capacity(mb * 1024 * 1024 + (1 << 20));
        table.render(&mut buf);
        null.write_all(&buf)?;
        gen_mbps.push(buf.len() as f64 / MB / t.elapsed().as_secs_f64());
        if let Some(dir) = &save {
            std::fs::write(
                std::path::Path::new(dir).join(format!("day{day}.sql")),
                &buf,
            )?;
        }
        dumps.push(buf);
    }
    println!(
        "rows={rows} days={days} updates/day={update_permille}‰ dump day1={:.1} MB, pack target {pack_mb} MiB",
        dumps[0].len() as f64 / MB
    );
    let scratch = tempfile::tempdir()?;
    let patch = if want_patch {
        Some(bounds::patch_from(&dumps, scratch.path())?)
    } else {
        None
    };
    let restic = if want_restic {
        Some(bounds::restic(&dumps, scratch.path())?)
    } else {
        None
    };
    let mut runs = Vec::new();
    for chunking in &chunks {
        for &zstd_level in &levels {
            for &max_delta_depth in &depths {
                for &delta_zstd_level in &delta_levels {
                    for (&f, &positional) in features
                        .iter()
                        .flat_map(|f| positionals.iter().map(move |p| (f, p)))
                    {
                        let opts = StoreOptions {
                            pack_target_bytes: pack_mb << 20,
                            zstd_level,
                            chunking: *chunking,
                            max_delta_depth,
                            delta_zstd_level,
                            features: f,
                            ..StoreOptions::default()
                        };
                        runs.push(run(
                            opts, &dumps, &gen_mbps, reads, anatomy, encrypt, positional,
                        )?);
                    }
                }
            }
        }
    }
    compare(&runs, patch.as_deref(), restic.as_deref());
    Ok(())
}
