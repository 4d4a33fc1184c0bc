//! `pgsnapman-worker outbox …`: the events waiting on this worker and the
//! ones the coordinator refused, without coordinator or catalog. `refused`
//! opens the state read-only (safe beside a running worker); `requeue`
//! needs the worker stopped (RocksDB's lock says so).
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use clap::Subcommand;

use crate::state::{self, State};

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List the events the coordinator refused and this worker set aside
    /// (one line each, tab-separated: event id, refused at, kind, reason)
    Refused,
    /// Put every refused event back into the outbox, to be sent again (after
    /// the catalog was put right); the worker must be stopped
    Requeue,
}

/// Runs one offline outbox command for the worker whose data directory is
/// `data_dir`; output to stdout.
pub fn run(data_dir: &Path, cmd: OutboxCommand) -> Result<()> {
    let path = state::dir(data_dir);
    let mut out = std::io::stdout().lock();
    match cmd {
        OutboxCommand::Refused => {
            for r in super::refused_at(&path)? {
                let at = i64::try_from(r.refused_at)
                    .ok()
                    .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                    .map_or_else(|| r.refused_at.to_string(), |t| t.to_rfc3339());
                writeln!(out, "{}\t{at}\t{}\t{}", r.id, r.kind(), r.reason)?;
            }
        }
        OutboxCommand::Requeue => {
            let state = State::open(&path).map_err(|e| {
                anyhow!(
                    "cannot open the worker state {} (stop the worker first): {e:#}",
                    path.display()
                )
            })?;
            let outbox = super::Outbox::open(&state)?;
            let n = outbox
                .requeue_refused()
                .context("queue the refused events again")?;
            writeln!(out, "{n} refused event(s) queued again")?;
        }
    }
    Ok(())
}
