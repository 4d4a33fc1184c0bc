//! The jobs file's `[copies.NAME]` (docs/standalone.md): after each
//! successful scheduled dump of a job, a standalone worker restores it into
//! the copy's instance and database with the restore pipeline, in a restore
//! slot and detached from the dump's run (the job's next fire never waits
//! behind a copy), and records the outcome as a RESTORE message.
use std::sync::Arc;

use pgsnapman_proto::model::excerpt;
use pgsnapman_proto::v1::MessageLevel;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::jobs::Copy;
use crate::Shared;

/// Starts the copies of `job_id` for the dump just stored and returns at
/// once (none on a managed worker). A copy still running from an earlier
/// dump copies this one when it ends (only the newest waiting dump).
pub fn after_dump(shared: &Arc<Shared>, job_id: i64, dump: &str) {
    let copies = shared.standalone.copies_of(job_id);
    if copies.is_empty() {
        return;
    }
    let Ok(uuid) = Uuid::parse_str(dump) else {
        tracing::error!(dump = %excerpt(dump), "copies skipped: the dump's uuid does not parse");
        return;
    };
    for copy in copies {
        if !shared.standalone.begin_copy(&copy.name, uuid) {
            tracing::info!(copy = %copy.name, dump, "copy still running: this dump is copied when it ends");
            continue;
        }
        let span = tracing::info_span!("standalone.copy", copy = %copy.name);
        shared
            .tasks
            .spawn(run_copy(Arc::clone(shared), copy, uuid).instrument(span));
    }
}

/// Runs copy `copy` of `dump`, then of each dump that waited for it.
async fn run_copy(shared: Arc<Shared>, copy: Copy, dump: Uuid) {
    let cancel = shared.tasks_token.child_token();
    let mut next = Some(dump);
    while let Some(dump) = next {
        let done = restore_and_report(&shared, "copy", &copy, dump, &cancel).await;
        next = shared.standalone.end_copy(&copy.name, !done);
    }
}

/// Restores `dump` as `target` says (a copy's or a cron restore's, `what`
/// names which in the message) in a restore slot and records the outcome as
/// one RESTORE message of the target's dump job. False when it was
/// cancelled (shutdown: nothing recorded).
pub(crate) async fn restore_and_report(
    shared: &Arc<Shared>,
    what: &str,
    target: &Copy,
    dump: Uuid,
    cancel: &CancellationToken,
) -> bool {
    let _slot = tokio::select! {
        p = shared.restore_slots.acquire() => match p {
            Ok(p) => p,
            Err(_) => return false,
        },
        () = cancel.cancelled() => return false,
    };
    tracing::info!(%dump, database = %target.database, "{what} starting");
    let outcome = super::local::restore_into(
        shared,
        dump,
        target.instance_id,
        &target.database,
        target.existing,
        cancel,
    )
    .await;
    let (ok, detail) = match outcome {
        Ok((None, _)) => return false,
        Ok((Some(f), _)) => super::local::outcome(&f),
        Err(e) => (false, format!("FAILED: {e:#}")),
    };
    let text = format!(
        "{what} {} of dump {dump} into database {}: {detail}",
        target.name,
        excerpt(&target.database)
    );
    let level = if ok {
        MessageLevel::Info
    } else {
        MessageLevel::Error
    };
    crate::scheduler::report(shared, "RESTORE", level, target.job_id, text);
    true
}
