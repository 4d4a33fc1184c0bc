//! The jobs file's `[restores.NAME]` (docs/standalone.md): cron-scheduled
//! restores of a job's newest stored dump, as a managed REPEAT restore job
//! does. The scheduler fires them (cron in UTC, like the coordinator's);
//! this module finds the dump, runs the restore in a restore slot and
//! records one RESTORE message.
use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Context, Result};
use pgsnapman_proto::v1::MessageLevel;
use uuid::Uuid;

use super::jobs::Restore;
use crate::Shared;

/// One fire of `restore`: the newest stored dump of its job, restored; a
/// job with no stored dump is one WARNING message and nothing changes.
pub async fn run(shared: Arc<Shared>, restore: Restore) {
    let cancel = shared.tasks_token.child_token();
    let target = &restore.target;
    let dump = match newest_dump(&shared, target.job_id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            crate::scheduler::report(
                &shared,
                "RESTORE",
                MessageLevel::Warning,
                target.job_id,
                format!(
                    "restore {}: its job has no stored dump yet; nothing restored",
                    target.name
                ),
            );
            return;
        }
        Err(e) => {
            crate::scheduler::report(
                &shared,
                "RESTORE",
                MessageLevel::Error,
                target.job_id,
                format!("restore {}: cannot find its dump: {e:#}", target.name),
            );
            return;
        }
    };
    super::copies::restore_and_report(&shared, "restore", target, dump, &cancel).await;
}

/// The newest dump of `job_id` in this worker's store that is recorded
/// (a dump still between its ingest and its outbox event is not yet one).
async fn newest_dump(shared: &Shared, job_id: i64) -> Result<Option<Uuid>> {
    let unrecorded: HashSet<Uuid> = shared
        .runner
        .unrecorded_now()
        .context("list the dumps not yet recorded")?
        .into_iter()
        .collect();
    let store = shared.runner.store().clone();
    tokio::task::spawn_blocking(move || {
        let mut newest: Option<(chrono::DateTime<chrono::Utc>, Uuid)> = None;
        for m in store.each_manifest().context("list the manifests")? {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("restore skips an unreadable manifest: {e}");
                    continue;
                }
            };
            if m.meta.job_id != job_id || unrecorded.contains(&m.dump_uuid) {
                continue;
            }
            if newest.is_none_or(|(at, _)| m.meta.started_at > at) {
                newest = Some((m.meta.started_at, m.dump_uuid));
            }
        }
        Ok::<_, anyhow::Error>(newest.map(|(_, u)| u))
    })
    .await
    .context("read the manifests")?
}
