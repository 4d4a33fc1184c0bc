//! `pgsnapman-worker store …`: the worker's pack store without coordinator or
//! catalog — list the stored dumps, extract one as pg_dump wrote it, verify
//! everything. Opens the store read-only, so it works beside a running worker.
//! This is the way back to the data when the catalog is lost.
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
    /// Read and hash-check every chunk of every stored dump
    Verify,
}

/// Runs one offline command on the store under `data_dir`; output to stdout.
pub fn run(data_dir: &Path, cmd: StoreCommand) -> Result<()> {
    let store = Store::open_read_only(data_dir)
        .map_err(|e| anyhow!("cannot open the store under {}: {e}", data_dir.display()))?;
    let mut out = std::io::stdout().lock();
    match cmd {
        StoreCommand::List => {
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
            store
                .restore_dir(dump, &to)
                .map_err(|e| anyhow!("cannot extract dump {dump}: {e}"))?;
            writeln!(out, "{}", to.display())?;
        }
        StoreCommand::Verify => {
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
                    "{:?}: {}; dumps: {}",
                    p.kind,
                    p.detail,
                    dumps.join(", ")
                )?;
            }
            if !report.is_clean() {
                bail!(
                    "the store is damaged; affected dumps: {}",
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
