//! Work on the pack store that is not a dump: VERIFY (check every chunk of
//! every stored dump), DELETE (one dump, then gc), REBUILD (report every
//! stored dump again from its manifest), and the store figures the worker
//! reports after every change. Each returns the events to queue; the caller
//! owns the outbox and the lease.
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use pgsnapman_proto::v1::{
    DumpFinished, DumpFormat, DumpType, DumpsCompressed, DumpsDeleted, StoreStats, StoreVerified,
    TaskFinished, TaskRef, event,
};
use pgsnapman_store::{Manifest, Store, StoreError, VerifyReport};
use serde_json::json;
use uuid::Uuid;

use crate::Shared;

/// Wait after a change before the figures are computed, so that a burst of
/// changes costs one computation.
const STATS_DEBOUNCE: Duration = Duration::from_secs(2);

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("store thread failed")
}

fn finished(task: &TaskRef, res: Result<serde_json::Value>) -> event::Body {
    let (succeeded, error, result_json) = match res {
        Ok(v) => (true, String::new(), v.to_string()),
        Err(e) => (false, format!("{e:#}"), String::new()),
    };
    event::Body::TaskFinished(TaskFinished {
        task: Some(task.clone()),
        succeeded,
        error,
        result_json,
    })
}

/// VERIFY: the report as events. The task fails when anything is damaged,
/// so `pgsnap store verify --wait` exits non-zero.
pub async fn verify(store: &Store, task: &TaskRef) -> Vec<event::Body> {
    let s = store.clone();
    let report = match blocking(move || s.verify()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return vec![finished(task, Err(anyhow!("verify could not run: {e}")))],
        Err(e) => return vec![finished(task, Err(e))],
    };
    let bad = report.affected_dumps();
    tracing::info!(
        dumps = report.dumps.len(),
        chunks = report.chunks_checked,
        problems = report.problems.len(),
        "store verified"
    );
    let verified = StoreVerified {
        task: Some(task.clone()),
        good_dump_uuids: report
            .dumps
            .iter()
            .filter(|d| !bad.contains(d))
            .map(Uuid::to_string)
            .collect(),
        bad_dump_uuids: bad.iter().map(Uuid::to_string).collect(),
        problems: report.problems.iter().map(problem_line).collect(),
        chunks_checked: report.chunks_checked,
        packs: report.packs,
    };
    let result = if report.is_clean() {
        Ok(report_json(&report))
    } else {
        Err(anyhow!(
            "{} problem(s) in the store; damaged dumps: {}",
            report.problems.len(),
            verified.bad_dump_uuids.join(", ")
        ))
    };
    let mut done = finished(task, result);
    if let event::Body::TaskFinished(f) = &mut done {
        f.result_json = report_json(&report).to_string();
    }
    vec![event::Body::StoreVerified(verified), done]
}

fn problem_line(p: &pgsnapman_store::VerifyProblem) -> String {
    let dumps: Vec<String> = p.dumps.iter().map(Uuid::to_string).collect();
    let mut line = format!("{:?}: {}", p.kind, p.detail);
    if let Some(c) = p.chunk {
        line.push_str(&format!(" (chunk {c})"));
    }
    if let Some(pack) = p.pack {
        line.push_str(&format!(" (pack {pack})"));
    }
    if !dumps.is_empty() {
        line.push_str(&format!("; dumps: {}", dumps.join(", ")));
    }
    line
}

fn report_json(r: &VerifyReport) -> serde_json::Value {
    json!({
        "dumps": r.manifests,
        "packs": r.packs,
        "chunks_checked": r.chunks_checked,
        "problems": r.problems.iter().map(|p| json!({
            "kind": format!("{:?}", p.kind),
            "chunk": p.chunk.map(|c| c.to_string()),
            "pack": p.pack.map(|p| p.to_string()),
            "detail": p.detail,
            "dumps": p.dumps.iter().map(Uuid::to_string).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// DELETE: forgets the dump (already gone counts as done), then collects
/// garbage. The deletion is reported even when gc fails (it is retried by
/// the next deletion).
pub async fn delete(
    store: &Store,
    task: &TaskRef,
    dump_uuid: &str,
    repack_below: f64,
) -> Vec<event::Body> {
    let Ok(uuid) = Uuid::parse_str(dump_uuid) else {
        return vec![finished(
            task,
            Err(anyhow!("dump id {dump_uuid:?} is not a UUID")),
        )];
    };
    let s = store.clone();
    let deleted = blocking(move || match s.delete_dump(uuid) {
        Ok(()) | Err(StoreError::ManifestNotFound(_)) => Ok(()),
        Err(e) => Err(e),
    })
    .await;
    match deleted {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return vec![finished(
                task,
                Err(anyhow!("cannot delete dump {uuid}: {e}")),
            )];
        }
        Err(e) => return vec![finished(task, Err(e))],
    }
    tracing::info!(dump_id = %uuid, "dump deleted from the store");
    let s = store.clone();
    let gc = blocking(move || s.gc(repack_below)).await;
    let result = match gc {
        Ok(Ok(r)) => {
            tracing::info!(
                reclaimed_bytes = r.reclaimed_bytes,
                packs_deleted = r.packs_deleted,
                packs_repacked = r.packs_repacked,
                "garbage collected"
            );
            json!({
                "deleted": [uuid.to_string()],
                "reclaimed_bytes": r.reclaimed_bytes,
                "packs_deleted": r.packs_deleted,
                "packs_repacked": r.packs_repacked,
                "packs_skipped_corrupt": r.packs_skipped_corrupt,
                "pack_bytes_before": r.pack_bytes_before,
                "pack_bytes_after": r.pack_bytes_after,
                "index_entries_removed": r.index_entries_removed,
            })
        }
        Ok(Err(e)) => {
            tracing::warn!("gc after a deletion failed: {e}");
            json!({ "deleted": [uuid.to_string()], "gc_error": e.to_string() })
        }
        Err(e) => json!({ "deleted": [uuid.to_string()], "gc_error": format!("{e:#}") }),
    };
    vec![
        event::Body::DumpsDeleted(DumpsDeleted {
            dump_uuids: vec![uuid.to_string()],
            reason: format!("deleted by task {}", task.task_id),
        }),
        finished(task, Ok(result)),
    ]
}

/// REBUILD: a `DumpFinished` (no task) for every stored dump; the catalog
/// keeps the rows it has and recreates the others. The manifests are read
/// one at a time and each turned into its row at once, so only the rows
/// (not every manifest's chunk list) are held.
pub async fn rebuild(store: &Store, task: &TaskRef) -> Vec<event::Body> {
    let s = store.clone();
    let root = store.root().to_path_buf();
    let listed = blocking(
        move || -> Result<(Vec<DumpFinished>, Vec<String>), StoreError> {
            let mut rows = Vec::new();
            let mut bad = Vec::new();
            for m in s.each_manifest()? {
                match m {
                    Ok(m) => rows.push(dump_finished_of(&m, &root)),
                    Err(e) => bad.push(e.to_string()),
                }
            }
            rows.sort_by(|a, b| a.dump_uuid.cmp(&b.dump_uuid));
            bad.sort();
            Ok((rows, bad))
        },
    )
    .await;
    let (rows, unreadable) = match listed {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return vec![finished(task, Err(anyhow!("cannot list the store: {e}")))],
        Err(e) => return vec![finished(task, Err(e))],
    };
    let result = json!({ "dumps_reported": rows.len(), "unreadable": unreadable });
    let mut out: Vec<event::Body> = rows.into_iter().map(event::Body::DumpFinished).collect();
    out.push(finished(task, Ok(result)));
    out
}

/// The catalog row of a stored dump, as its manifest describes it.
pub fn dump_finished_of(m: &Manifest, root: &std::path::Path) -> DumpFinished {
    let meta = &m.meta;
    DumpFinished {
        dump_uuid: m.dump_uuid.to_string(),
        task: None,
        job_id: meta.job_id,
        instance_id: meta.instance_id,
        host: meta.host.clone(),
        port: meta.port,
        database: meta.database.clone(),
        schema: meta.schema.clone(),
        dump_type: DumpType::from_label(&meta.dump_type).map_or(0, |t| t as i32),
        format: DumpFormat::from_label(&meta.format).map_or(0, |f| f as i32),
        succeeded: true,
        error: meta.notes.clone(),
        started_at: Some(pgsnapman_proto::timestamp(meta.started_at)),
        finished_at: Some(pgsnapman_proto::timestamp(meta.finished_at)),
        dump_bytes: m.logical_bytes,
        stored_bytes: m.new_stored_bytes,
        database_bytes: meta.database_bytes,
        server_version: meta.server_version.clone(),
        client_version: meta.client_version.clone(),
        location: root
            .join("manifests")
            .join(pgsnapman_store::manifest::file_name(m))
            .to_string_lossy()
            .into_owned(),
        restore_metadata_json: if meta.restore_metadata.is_null() {
            String::new()
        } else {
            meta.restore_metadata.to_string()
        },
        script_stderr: Vec::new(),
        script_hash: meta.script_hash.clone(),
        table_rows: crate::rowcount::of_manifest(meta),
        table_rows_counted: meta.table_rows.is_some(),
        table_rows_error: meta.table_rows_error.clone(),
    }
}

/// The store's figures now.
pub async fn stats(store: &Store) -> Result<StoreStats> {
    let s = store.clone();
    let (st, free, backend) = blocking(move || -> Result<_> {
        let st = s.stats().map_err(|e| anyhow!("store statistics: {e}"))?;
        let backend = s.backend().map_err(|e| anyhow!("store backend: {e}"))?;
        let vfs = nix::sys::statvfs::statvfs(s.root()).context("statvfs of the store")?;
        let free = vfs.blocks_available() * vfs.fragment_size();
        Ok((st, free, backend))
    })
    .await??;
    let key_id = store.key_id().map(str::to_string);
    Ok(StoreStats {
        worker_id: 0,
        worker_name: String::new(),
        reported_at: Some(pgsnapman_proto::timestamp(chrono::Utc::now())),
        packs: st.packs,
        pack_bytes: st.pack_bytes,
        chunks: st.chunks,
        unique_raw_bytes: st.unique_raw_bytes,
        stored_bytes: st.stored_bytes,
        dumps: st.manifests,
        logical_bytes: st.logical_bytes,
        free_bytes: free,
        backend: backend.kind,
        backend_location: backend.location,
        cache_bytes: backend.cache_bytes,
        cache_limit: backend.cache_limit,
        encrypted: key_id.is_some(),
        key_id: key_id.unwrap_or_default(),
    })
}

/// Reports the figures at start and after every change of the store, and
/// the stored bytes of dumps compressed after they were stored.
pub async fn stats_loop(shared: Arc<Shared>) {
    loop {
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || {
            let batch = s.runner.compressed_unqueued();
            if batch.dumps.is_empty() {
                return anyhow::Ok(());
            }
            let dumps = batch.dumps.clone();
            s.outbox
                .append(event::Body::DumpsCompressed(DumpsCompressed { dumps }))?;
            // Only once queued: after a failed append the next round
            // sends the figures again.
            s.runner.compressed_queued(&batch);
            Ok(())
        })
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!("cannot queue the stored bytes of compressed dumps: {e:#}")
            }
            Err(e) => tracing::warn!("cannot queue the stored bytes of compressed dumps: {e}"),
        }
        match stats(shared.runner.store()).await {
            Ok(s) => {
                let outbox = shared.outbox.clone();
                let body = event::Body::StoreStats(s);
                match tokio::task::spawn_blocking(move || outbox.append(body)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!("cannot queue the store figures: {e:#}"),
                    Err(e) => tracing::warn!("cannot queue the store figures: {e}"),
                }
            }
            Err(e) => tracing::warn!("cannot compute the store figures: {e:#}"),
        }
        // A dump, deletion or gc, or the compression of what a dump stored
        // uncompressed (`Runner::compress_later`).
        tokio::select! {
            () = shared.store_changed.notified() => {}
            () = shared.runner.compressed() => {}
        }
        tokio::time::sleep(STATS_DEBOUNCE).await;
    }
}
