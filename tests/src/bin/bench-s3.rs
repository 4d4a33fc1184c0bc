//! Benchmark (issue 16 item 1 target): storing a dump into an S3 store (a
//! local moto server, `tests/src/s3.rs`) against the local store, and
//! reading it back from each (target: ≤ 1.3× the local wall time both ways).
//!
//! Feeds N MiB of pg_dump-like text (rows of words and numbers; a third of
//! it repeats earlier rows, so dedup and delta encoding run) through
//! `Store::begin` / `add_file` / `finish`, then reads the file back with a
//! cold cache (S3: `cache_size` 0, every pack fetched with ranged GETs).
//! Prints wall and process CPU seconds and the 1-minute load average.
//!
//! Run: `source deploy/python-env.sh; cargo run --release -p pgsnapman-tests
//! --bin bench-s3 [-- MIB]` (default 256).
use std::io::Read;
use std::time::Instant;

use anyhow::{Result, anyhow};
use pgsnapman_store::{BackendConfig, ManifestMeta, Store, StoreOptions};
use pgsnapman_tests::S3Server;

/// Deterministic pseudo-random text, `len` bytes.
struct Rows {
    left: u64,
    state: u64,
    line: Vec<u8>,
    pos: usize,
    earlier: Vec<Vec<u8>>,
}

impl Read for Rows {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        if self.pos == self.line.len() {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            self.line = if self.state.is_multiple_of(3) && !self.earlier.is_empty() {
                self.earlier[(self.state as usize / 3) % self.earlier.len()].clone()
            } else {
                let l = format!(
                    "{}\tcustomer-{}\t{}\t2026-{:02}-{:02}\tstatus {}\n",
                    self.state % 1_000_000,
                    self.state % 77_777,
                    self.state,
                    self.state % 12 + 1,
                    self.state % 28 + 1,
                    ["open", "paid", "shipped", "returned"][(self.state % 4) as usize]
                )
                .into_bytes();
                if self.earlier.len() < 100_000 {
                    self.earlier.push(l.clone());
                }
                l
            };
            self.pos = 0;
        }
        let n = buf
            .len()
            .min(self.line.len() - self.pos)
            .min(self.left as usize);
        buf[..n].copy_from_slice(&self.line[self.pos..self.pos + n]);
        self.pos += n;
        self.left -= n as u64;
        Ok(n)
    }
}

/// This process's user + system CPU seconds (from /proc/self/stat, in
/// clock ticks of 1/100 s). Covers the store's threads, not moto.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn meta() -> Result<ManifestMeta> {
    serde_json::from_value(serde_json::json!({
        "job_id": 1, "task_id": 0, "host": "h", "port": 5432, "database": "bench",
        "schema": "", "dump_type": "FULL", "format": "CUSTOM",
        "server_version": "15", "client_version": "15",
        "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z",
        "restore_metadata": null
    }))
    .map_err(|e| anyhow!("manifest meta: {e}"))
}

fn restore(
    label: &str,
    root: &std::path::Path,
    backend: BackendConfig,
    dump: uuid::Uuid,
) -> Result<()> {
    let store =
        Store::open_with(root, StoreOptions::default(), backend).map_err(|e| anyhow!("{e}"))?;
    let (t, c, l) = (Instant::now(), cpu_seconds(), load());
    let n = store
        .read_file(dump, "data.dump", &mut std::io::sink())
        .map_err(|e| anyhow!("{e}"))?;
    println!(
        "{label:6} restore {} MiB  wall {:.2} s  cpu {:.2} s  load {l}",
        n >> 20,
        t.elapsed().as_secs_f64(),
        cpu_seconds() - c
    );
    Ok(())
}

fn main() -> Result<()> {
    let mib: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(256);
    let s3 = S3Server::start()?;
    for (label, backend) in [
        ("local", BackendConfig::Local),
        ("s3", s3.store_config("bench", 0)),
    ] {
        let dir = tempfile::tempdir()?;
        let dump = uuid::Uuid::now_v7();
        {
            let store = Store::open_with(dir.path(), StoreOptions::default(), backend.clone())
                .map_err(|e| anyhow!("{e}"))?;
            let rows = Rows {
                left: mib << 20,
                state: 0x9e37_79b9_7f4a_7c15,
                line: Vec::new(),
                pos: 0,
                earlier: Vec::new(),
            };
            let (t, c, l) = (Instant::now(), cpu_seconds(), load());
            let mut ingest = store.begin(dump).map_err(|e| anyhow!("{e}"))?;
            ingest
                .add_file("data.dump", rows)
                .map_err(|e| anyhow!("{e}"))?;
            let m = ingest.finish(meta()?).map_err(|e| anyhow!("{e}"))?;
            println!(
                "{label:6} dump    {mib} MiB  wall {:.2} s  cpu {:.2} s  load {l}  stored {} bytes",
                t.elapsed().as_secs_f64(),
                cpu_seconds() - c,
                m.new_stored_bytes
            );
        }
        restore(label, dir.path(), backend, dump)?;
    }
    Ok(())
}
