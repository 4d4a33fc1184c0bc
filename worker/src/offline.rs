//! `pgsnapman-worker store …`: the worker's pack store without coordinator or
//! catalog — list the stored dumps, extract one as pg_dump wrote it, verify
//! everything (read-only, so beside a running worker), and rebuild a lost
//! or damaged index (only with the worker stopped). The way back to the
//! data when the catalog or the index is lost.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use pgsnapman_store::Store;
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
}

/// What `verify` says when the index cannot be opened.
const INDEX_REPAIR: &str =
    "index missing or damaged: stop the worker and run `pgsnapman-worker store rebuild-index`";

/// Runs one offline command on the store under `data_dir`; output to stdout.
pub fn run(data_dir: &Path, cmd: StoreCommand) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        StoreCommand::RebuildIndex => rebuild_index(data_dir, &mut out)?,
        StoreCommand::List => {
            let store = open(data_dir, "")?;
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
            let store = open(data_dir, "")?;
            store
                .restore_dir(dump, &to)
                .map_err(|e| anyhow!("cannot extract dump {dump}: {e}"))?;
            writeln!(out, "{}", to.display())?;
        }
        StoreCommand::Verify => {
            let store = open(data_dir, INDEX_REPAIR)?;
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
fn open(data_dir: &Path, hint: &str) -> Result<Store> {
    Store::open_read_only(data_dir).map_err(|e| {
        let sep = if hint.is_empty() { "" } else { "\n" };
        anyhow!(
            "cannot open the store under {}: {e}{sep}{hint}",
            data_dir.display()
        )
    })
}

/// `store rebuild-index`: refused while the worker runs (its state database
/// or the index is locked), then `pgsnapman_store::rebuild_index`.
fn rebuild_index(data_dir: &Path, out: &mut impl Write) -> Result<()> {
    let state_lock = crate::state::dir(data_dir).join("LOCK");
    if pgsnapman_store::locked_by_another_process(&state_lock)? {
        bail!(
            "a worker is running on {} ({} is locked): stop it first",
            data_dir.display(),
            state_lock.display()
        );
    }
    let started = std::time::Instant::now();
    let r = pgsnapman_store::rebuild_index(data_dir)
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
