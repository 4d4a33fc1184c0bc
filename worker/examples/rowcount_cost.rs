//! What counting rows costs on the dump path: stores a pg_dump output file
//! into a fresh pack store twice, without and with the row counter reading
//! the bytes on the way (the worker's ingest path, minus pg_dump), and the
//! counter alone. Usage: `rowcount_cost FILE custom|plain` (docs/verification.md).
use std::io::{BufReader, Read};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pgsnapman_worker::rowcount::{Kind, RowCounter, Tee};

fn store_once(file: &str, kind: Option<Kind>) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = pgsnapman_store::Store::open(dir.path(), pgsnapman_store::StoreOptions::default())
        .context("open a store")?;
    let mut ingest = store.begin(uuid::Uuid::now_v7())?;
    let input = BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    let started = Instant::now();
    match kind {
        None => {
            ingest.add_file("dump", input)?;
        }
        Some(kind) => {
            let mut counter = RowCounter::new(kind);
            ingest.add_file("dump", Tee::new(input, "dump", &mut counter))?;
            let rows = counter.finish().map_err(anyhow::Error::msg)?;
            eprintln!("  {} tables counted", rows.len());
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(file), Some(kind)) = (args.get(1), args.get(2)) else {
        bail!("usage: rowcount_cost FILE custom|plain");
    };
    let kind = match kind.as_str() {
        "custom" => Kind::Custom,
        "plain" => Kind::Plain,
        other => bail!("unknown kind {other:?}"),
    };
    let mb = std::fs::metadata(file)?.len() as f64 / 1e6;
    let mut data = Vec::new();
    std::fs::File::open(file)?.read_to_end(&mut data)?;
    let started = Instant::now();
    let mut counter = RowCounter::new(kind);
    counter.begin_file("dump");
    for piece in data.chunks(1 << 20) {
        counter.feed(piece);
    }
    counter.finish().map_err(anyhow::Error::msg)?;
    let alone = started.elapsed().as_secs_f64();
    println!(
        "{mb:.0} MB: the counter alone {alone:.2} s ({:.0} MB/s)",
        mb / alone
    );
    for round in 1..=2 {
        let without = store_once(file, None)?;
        let with = store_once(file, Some(kind))?;
        println!(
            "round {round}: stored without counting {without:.2} s, with counting {with:.2} s ({:+.1}%)",
            (with - without) / without * 100.0
        );
    }
    Ok(())
}
