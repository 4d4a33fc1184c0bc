//! What a store's metadata costs (docs/benchmarks.md, "Half the metadata"):
//! index entries and key + value bytes per kind, the index directory's
//! files, the manifests' bytes and what the same manifests and entries
//! would take in the old formats (JSON manifests, index format 2); with
//! `--compact`, the index after a full compaction. The store must not be
//! open elsewhere.
//!
//! cargo run --release -p pgsnapman-store --example index_sizes -- <store root> [--compact]

use std::path::Path;

use pgsnapman_store::Store;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn dir_bytes(dir: &Path, ends: &[&str]) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if ends.is_empty() || ends.iter().any(|s| name.ends_with(s)) {
            n += e.metadata()?.len();
        }
    }
    Ok(n)
}

fn report(root: &Path, store: &Store, when: &str) -> Result<()> {
    let index = root.join("index");
    println!(
        "{when}: index dir {} B (sst {} B, wal {} B), manifests {} B",
        dir_bytes(&index, &[])?,
        dir_bytes(&index, &[".sst"])?,
        dir_bytes(&index, &[".log"])?,
        dir_bytes(&root.join("manifests"), &[])?
    );
    let (mut now, mut v2) = (0u64, 0u64);
    for s in store.index().sizes()? {
        println!(
            "  {}/{}: {} entries, keys {} B, values {} B, {:.1} B/entry",
            char::from(s.prefix),
            s.value_len,
            s.entries,
            s.key_bytes,
            s.value_bytes,
            (s.key_bytes + s.value_bytes) as f64 / s.entries.max(1) as f64
        );
        // Index format 2 wrote 65-byte FULL entries and 32-byte feature values.
        let grow = match (s.prefix, s.value_len) {
            (b'c', 33) => 32,
            (b'f', 8) => 24,
            _ => 0,
        };
        now += s.key_bytes + s.value_bytes;
        v2 += s.key_bytes + s.value_bytes + grow * s.entries;
    }
    println!("  index keys + values: {now} B; in index format 2: {v2} B");
    let (mut files, mut json) = (0u64, 0u64);
    for m in store.each_manifest()? {
        let mut m = m?;
        files += std::fs::metadata(
            root.join("manifests")
                .join(pgsnapman_store::manifest::file_name(&m)),
        )?
        .len();
        m.format_version = 1;
        json += serde_json::to_vec_pretty(&m)?.len() as u64;
    }
    println!("  manifests: {files} B as stored; as JSON (format 1): {json} B");
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let root = args
        .next()
        .ok_or("usage: index_sizes <store root> [--compact]")?;
    let compact = args.next().as_deref() == Some("--compact");
    let root = Path::new(&root);
    if compact {
        let store = Store::open(root, pgsnapman_store::StoreOptions::default())?;
        report(root, &store, "before")?;
        store.index().compact()?;
        drop(store);
        let store = Store::open_read_only(root)?;
        report(root, &store, "after compaction")?;
    } else {
        let store = Store::open_read_only(root)?;
        report(root, &store, "now")?;
    }
    Ok(())
}
