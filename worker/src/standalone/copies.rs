//! The jobs file's `[copies.NAME]` (docs/standalone.md): after each
//! successful scheduled dump of a job, a standalone worker restores it into
//! the copy's instance and database with the restore pipeline, one copy at
//! a time in a restore slot, and records the outcome as a RESTORE message.
use std::sync::Arc;

use pgsnapman_proto::model::excerpt;
use pgsnapman_proto::v1::{MessageLevel, WorkerMessage, event};
use tokio_util::sync::CancellationToken;

use crate::Shared;

/// Runs the copies of `job_id` for the dump just stored (none on a managed
/// worker). A failed copy is an ERROR message; it never fails the dump.
pub async fn after_dump(shared: &Arc<Shared>, job_id: i64, dump: &str, cancel: &CancellationToken) {
    let copies: Vec<_> = shared
        .copies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|c| c.job_id == job_id)
        .cloned()
        .collect();
    if copies.is_empty() {
        return;
    }
    let Ok(uuid) = uuid::Uuid::parse_str(dump) else {
        tracing::error!(dump = %excerpt(dump), "copies skipped: the dump's uuid does not parse");
        return;
    };
    for copy in copies {
        let _slot = tokio::select! {
            p = shared.restore_slots.acquire() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = cancel.cancelled() => return,
        };
        tracing::info!(copy = %copy.name, dump, database = %copy.database, "copy starting");
        let outcome = super::local::restore_into(
            shared,
            uuid,
            copy.instance_id,
            &copy.database,
            copy.existing,
            cancel,
        )
        .await;
        let (ok, detail) = match outcome {
            Ok((None, _)) => return, // shutdown: nothing to report
            Ok((Some(f), _)) => super::local::outcome(&f),
            Err(e) => (false, format!("FAILED: {e:#}")),
        };
        let text = format!(
            "copy {} of dump {dump} into database {}: {detail}",
            copy.name,
            excerpt(&copy.database)
        );
        if ok {
            tracing::info!("{text}");
        } else {
            tracing::error!("{text}");
        }
        let level = if ok {
            MessageLevel::Info
        } else {
            MessageLevel::Error
        };
        if let Err(e) = shared.outbox.append(event::Body::Message(WorkerMessage {
            level: level as i32,
            class: "RESTORE".into(),
            job_id,
            text,
        })) {
            tracing::error!("cannot record the copy in the outbox: {e:#}");
        }
    }
}
