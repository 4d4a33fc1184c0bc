//! Churn benchmark: a deterministic pg_dump-like COPY text table, ingested on
//! day 1 and again after each simulated day in which ~1% of rows (scattered)
//! are updated (`--update-permille`) — half in place (HOT), half moved to the end of the table —
//! and 0.1% are inserted and deleted.
//!
//! cargo run --release -p pgsnapman-store --example churn -- \
//!     [--mb 200] [--days 4] [--chunk 16k/64k/256k]... [--zstd 1]... [--pack-mb 64]
//!     [--update-permille 10]
//!
//! Prints, per configuration and day: logical bytes, new stored bytes, the
//! store's overall ratio, ingest MB/s, and generation MB/s of the same bytes
//! to /dev/null (the "pg_dump > /dev/null" stand-in).

use std::fs::File;
use std::io::{Cursor, Write};
use std::time::Instant;

use chrono::Utc;
use pgsnapman_store::{ChunkParams, ManifestMeta, Store, StoreOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const WORDS: &[&str] = &[
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "order",
    "invoice",
    "customer",
    "shipped",
    "pending",
    "cancelled",
    "refund",
    "warehouse",
    "berlin",
    "paris",
    "tokyo",
];

/// The table: row ids in physical order, each with an update counter.
struct Table {
    order: Vec<u32>,
    version: Vec<u32>,
}

impl Table {
    fn new(rows: usize) -> Table {
        Table {
            order: (0..rows as u32).collect(),
            version: vec![0; rows],
        }
    }

    /// One day of churn; deterministic for a given day.
    fn churn(&mut self, day: u64, update_permille: usize) {
        let mut rng = StdRng::seed_from_u64(0xC0FFEE + day);
        let n = self.order.len();
        let mut moved = Vec::new();
        let mut keep = vec![true; n];
        for _ in 0..n * update_permille / 1000 {
            let pos = rng.gen_range(0..n);
            let id = self.order[pos] as usize;
            self.version[id] += 1;
            if rng.gen_bool(0.5) && keep[pos] {
                keep[pos] = false;
                moved.push(self.order[pos]);
            }
        }
        for _ in 0..n / 1000 {
            let pos = rng.gen_range(0..n);
            keep[pos] = false; // deleted
        }
        let mut order: Vec<u32> = self
            .order
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(id, _)| *id)
            .collect();
        order.extend(moved);
        for _ in 0..n / 1000 {
            order.push(self.version.len() as u32);
            self.version.push(0);
        }
        self.order = order;
    }

    /// Renders the dump: a header, then one COPY line per row.
    fn render(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(b"--\n-- PostgreSQL database dump\n--\nCOPY public.orders (id, customer, note, amount, qty, created_at, payload) FROM stdin;\n");
        for &id in &self.order {
            render_row(id, self.version[id as usize], out);
        }
        out.extend_from_slice(b"\\.\n");
    }
}

fn render_row(id: u32, version: u32, out: &mut Vec<u8>) {
    let mut rng = StdRng::seed_from_u64((u64::from(id) << 20) ^ u64::from(version));
    let w = |rng: &mut StdRng| WORDS[rng.gen_range(0..WORDS.len())];
    let customer = format!("{} {}", w(&mut rng), w(&mut rng));
    let words = rng.gen_range(3..12);
    let mut note = String::new();
    for i in 0..words {
        if i > 0 {
            note.push(' ');
        }
        note.push_str(w(&mut rng));
    }
    let amount: u32 = rng.gen_range(0..10_000_000);
    let qty: u16 = rng.r#gen();
    let ts = 1_700_000_000u64 + u64::from(id) * 37 + u64::from(version) * 86_400;
    // A short incompressible token, like a bytea or hash column.
    let token: u64 = rng.r#gen();
    let _ = writeln!(
        out,
        "{id}\t{customer}\t{note}\t{}.{:02}\t{qty}\t{ts}\t{{\"v\": {version}, \"tag\": \"{}\", \"token\": \"{token:016x}\"}}",
        amount / 100,
        amount % 100,
        w(&mut rng),
    );
}

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

fn parse_chunk(s: &str) -> Option<ChunkParams> {
    let mut it = s.split('/').map(parse_size);
    let p = ChunkParams {
        min_bytes: it.next()??,
        avg_bytes: it.next()??,
        max_bytes: it.next()??,
    };
    Some(p)
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
        restore_metadata: serde_json::Value::Null,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut mb = 200usize;
    let mut days = 4u64;
    let mut pack_mb = 64u64;
    let mut update_permille = 10usize;
    let mut chunks = Vec::new();
    let mut levels = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--mb" => mb = v.parse()?,
            "--days" => days = v.parse()?,
            "--pack-mb" => pack_mb = v.parse()?,
            "--update-permille" => update_permille = v.parse()?,
            "--chunk" => {
                chunks.push(parse_chunk(&v).ok_or_else(|| {
                    format!("bad --chunk {v:?}, want min/avg/max like 64k/256k/1m")
                })?)
            }
            "--zstd" => levels.push(v.parse::<i32>()?),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if chunks.is_empty() {
        chunks.push(ChunkParams::default());
    }
    if levels.is_empty() {
        levels.push(StoreOptions::default().zstd_level);
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
        gen_mbps.push(buf.len() as f64 / 1e6 / t.elapsed().as_secs_f64());
        dumps.push(buf);
    }
    println!(
        "rows={rows} days={days} updates/day={update_permille}‰ dump day1={:.1} MB, pack target {pack_mb} MiB",
        dumps[0].len() as f64 / 1e6
    );
    println!(
        "| chunk min/avg/max | zstd | day | logical MB | new stored MB | new/logical | store ratio | ingest MB/s | gen→/dev/null MB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for p in &chunks {
        for &level in &levels {
            let dir = tempfile::tempdir()?;
            let store = Store::open(
                dir.path(),
                StoreOptions {
                    pack_target_bytes: pack_mb << 20,
                    zstd_level: level,
                    chunking: *p,
                },
            )?;
            let mut total_new = 0u64;
            let mut total_logical = 0u64;
            for (i, dump) in dumps.iter().enumerate() {
                let t = Instant::now();
                let mut ingest = store.begin(Uuid::now_v7())?;
                ingest.add_file("dump.sql", Cursor::new(dump.as_slice()))?;
                let m = ingest.finish(meta())?;
                let secs = t.elapsed().as_secs_f64();
                total_new += m.new_stored_bytes;
                total_logical += m.logical_bytes;
                println!(
                    "| {}k/{}k/{}k | {level} | {} | {:.1} | {:.2} | {:.4} | {:.1} | {:.0} | {:.0} |",
                    p.min_bytes / 1024,
                    p.avg_bytes / 1024,
                    p.max_bytes / 1024,
                    i + 1,
                    m.logical_bytes as f64 / 1e6,
                    m.new_stored_bytes as f64 / 1e6,
                    m.new_stored_bytes as f64 / m.logical_bytes as f64,
                    total_logical as f64 / total_new as f64,
                    m.logical_bytes as f64 / 1e6 / secs,
                    gen_mbps[i],
                );
            }
            let s = store.stats()?;
            println!(
                "| total | {level} | {days} days | {:.1} | {:.2} | days 2..: {:.2} MB | {:.1} | chunks {} | packs {} |",
                total_logical as f64 / 1e6,
                total_new as f64 / 1e6,
                (total_new - dumps_first_new(&store)?) as f64 / 1e6,
                s.dedup_ratio,
                s.chunks,
                s.packs
            );
        }
    }
    Ok(())
}

/// New stored bytes of the oldest dump (day 1).
fn dumps_first_new(store: &Store) -> Result<u64, Box<dyn std::error::Error>> {
    let ms = store.manifests()?;
    Ok(ms
        .iter()
        .min_by_key(|m| m.dump_uuid)
        .map_or(0, |m| m.new_stored_bytes))
}
