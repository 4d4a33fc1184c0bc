//! `pgsnapman-worker store …`: the worker's pack store without coordinator or
//! catalog — list the stored dumps, extract one as pg_dump wrote it, verify
//! everything (read-only, so beside a running worker), and rebuild a lost
//! or damaged index (only with the worker stopped). The way back to the
//! data when the catalog or the index is lost.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use pgsnapman_store::{Store, StoreKey};
use uuid::Uuid;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// List the stored dumps (one line each, tab-separated: uuid, finished
    /// at, type, format, server, database, schema, bytes, files)
    List,
    /// Write every file of one dump into a directory, as pg_dump wrote them
    Extract {
        /// The dump's uuid (`pgsnap catalog show` calls it uuid)
        dump: Uuid,
        /// Directory to write into (created; existing files are not overwritten)
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Read and hash-check every chunk of every stored dump; says which
    /// repair applies to what it finds
    Verify,
    /// Recreate the chunk index from the packs and manifests (the worker
    /// must be stopped); the old index, if any, is replaced atomically
    RebuildIndex,
    /// The store's encryption key (docs/encryption.md): export it for
    /// safekeeping, import it on a rebuilt worker
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print the key file's text on stdout (its id on stderr): keep it
    /// apart from the worker and the bucket; without it no dump can be read
    Export,
    /// Read a key exported by `export` from stdin (never from argv) and
    /// write it as the key file (0600); refused if a key file exists
    Import,
}

/// What `verify` says when the index cannot be opened.
const INDEX_REPAIR: &str =
    "index missing or damaged: stop the worker and run `pgsnapman-worker store rebuild-index`";

/// Runs one offline command on the store under `data_dir`; output to
/// stdout. `key_file`: the store's encryption key (default
/// `<data_dir>/store.key`, used when it exists).
pub fn run(data_dir: &Path, key_file: Option<&Path>, cmd: StoreCommand) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let key_path = key_file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| data_dir.join(crate::store_key::DEFAULT_KEY_FILE));
    let key = || crate::store_key::offline_key(data_dir, key_file);
    match cmd {
        StoreCommand::Key {
            command: KeyCommand::Export,
        } => {
            let key = pgsnapman_store::StoreKey::load(&key_path)
                .map_err(|e| anyhow!("cannot export the store key: {e}"))?;
            eprintln!(
                "store key {} from {}: keep this text secret and apart from the worker",
                key.id(),
                key_path.display()
            );
            out.write_all(key.to_text().as_bytes())?;
        }
        StoreCommand::Key {
            command: KeyCommand::Import,
        } => {
            let mut text = zeroize::Zeroizing::new(String::new());
            std::io::stdin()
                .lock()
                .take(4096)
                .read_to_string(&mut text)
                .context("read the key from stdin")?;
            let key = pgsnapman_store::StoreKey::from_text(&text, "stdin")
                .map_err(|e| anyhow!("cannot import the store key: {e}"))?;
            if key_path.exists() {
                bail!(
                    "cannot import store key {}: {} exists (move it away first)",
                    key.id(),
                    key_path.display()
                );
            }
            key.write_new(&key_path)
                .map_err(|e| anyhow!("cannot import store key {}: {e}", key.id()))?;
            writeln!(
                out,
                "store key {} written to {}",
                key.id(),
                key_path.display()
            )?;
        }
        StoreCommand::RebuildIndex => rebuild_index(data_dir, key()?.as_ref(), &mut out)?,
        StoreCommand::List => {
            let store = open(data_dir, key()?.as_ref(), "")?;
            for uuid in store.dump_ids().context("list the stored dumps")? {
                match store.manifest(uuid) {
                    Ok(m) => writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}:{}\t{}\t{}\t{}\t{}",
                        m.dump_uuid,
                        m.meta.finished_at.to_rfc3339(),
                        m.meta.dump_type,
                        m.meta.format,
                        m.meta.host,
                        m.meta.port,
                        m.meta.database,
                        m.meta.schema,
                        m.logical_bytes,
                        m.files
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    )?,
                    Err(e) => writeln!(out, "{uuid}\tunreadable manifest: {e}")?,
                }
            }
        }
        StoreCommand::Extract { dump, to } => {
            let store = open(data_dir, key()?.as_ref(), "")?;
            store
                .restore_dir(dump, &to)
                .map_err(|e| anyhow!("cannot extract dump {dump}: {e}"))?;
            writeln!(out, "{}", to.display())?;
        }
        StoreCommand::Verify => {
            let store = open(data_dir, key()?.as_ref(), INDEX_REPAIR)?;
            let report = store.verify().context("verify the store")?;
            writeln!(
                out,
                "{} dump(s), {} pack(s), {} chunk(s) checked, {} problem(s)",
                report.manifests,
                report.packs,
                report.chunks_checked,
                report.problems.len()
            )?;
            for p in &report.problems {
                let dumps: Vec<String> = p.dumps.iter().map(Uuid::to_string).collect();
                writeln!(
                    out,
                    "{:?}: {}; dumps: {}\n  repair: {}",
                    p.kind,
                    p.detail,
                    dumps.join(", "),
                    p.kind.repair()
                )?;
            }
            if !report.is_clean() {
                bail!(
                    "the store is damaged (repairs above); affected dumps: {}",
                    report
                        .affected_dumps()
                        .iter()
                        .map(Uuid::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    Ok(())
}

/// The store opened read-only; `hint` follows the error when it cannot be.
fn open(data_dir: &Path, key: Option<&StoreKey>, hint: &str) -> Result<Store> {
    Store::open_read_only_encrypted(data_dir, key).map_err(|e| {
        let sep = if hint.is_empty() { "" } else { "\n" };
        anyhow!(
            "cannot open the store under {}: {e}{sep}{hint}",
            data_dir.display()
        )
    })
}

/// `store rebuild-index`: refused while the worker runs (its state database
/// or the index is locked), then `pgsnapman_store::rebuild_index`.
fn rebuild_index(data_dir: &Path, key: Option<&StoreKey>, out: &mut impl Write) -> Result<()> {
    let state_lock = crate::state::dir(data_dir).join("LOCK");
    if pgsnapman_store::locked_by_another_process(&state_lock)? {
        bail!(
            "a worker is running on {} ({} is locked): stop it first",
            data_dir.display(),
            state_lock.display()
        );
    }
    let started = std::time::Instant::now();
    let r = pgsnapman_store::rebuild_index_encrypted(data_dir, key)
        .map_err(|e| anyhow!("cannot rebuild the index under {}: {e}", data_dir.display()))?;
    writeln!(
        out,
        "index rebuilt in {:.2}s: {} pack(s), {} chunk(s) ({} delta), {} duplicate record(s), \
         {} feature entr(ies), {} dump(s){}",
        started.elapsed().as_secs_f64(),
        r.packs,
        r.chunks,
        r.delta_chunks,
        r.duplicate_records,
        r.feature_entries,
        r.dumps,
        if r.params_kept {
            ""
        } else {
            "; the chunking parameters were unreadable: the defaults were recorded"
        }
    )?;
    for (pack, why) in &r.damaged_packs {
        writeln!(out, "damaged pack {pack}: {why}")?;
    }
    if r.undecodable_chunks > 0 || !r.damaged_packs.is_empty() {
        writeln!(
            out,
            "{} chunk(s) could not be decoded; run `pgsnapman-worker store verify` for the affected dumps",
            r.undecodable_chunks
        )?;
    }
    Ok(())
}
