//! What a store's metadata costs (docs/benchmarks.md, "Half the metadata"):
//! index entries and key + value bytes per kind, the index directory's
//! files, the manifests' bytes; with `--compact`, the same after a full
//! compaction of the index. The store must not be open elsewhere.
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
    for s in store.index().sizes()? {
        println!(
            "  {}: {} entries, keys {} B, values {} B, {:.1} B/entry",
            char::from(s.prefix),
            s.entries,
            s.key_bytes,
            s.value_bytes,
            (s.key_bytes + s.value_bytes) as f64 / s.entries.max(1) as f64
        );
    }
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
