//! Auto-discovery on the worker: for each instance the mirror marks
//! `discover` (this worker is its default worker and discovery is on), list
//! the connectable, non-template databases with the newest psql and queue
//! the complete list as a `DatabasesDiscovered` event. The coordinator adds
//! the jobs; nothing here changes a job. Works from the mirror, so offline
//! lists wait in the outbox like every other fact (docs/discovery.md).
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use pgsnapman_proto::v1::{
    DatabasesDiscovered, InstanceConnection, MessageLevel, Status, WorkerMessage, event,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Shared;
use crate::runner::process::excerpt;

/// The list as one JSON array, so that any name (quotes, spaces, newlines,
/// unicode) survives psql's text output intact.
const LIST_SQL: &str = "SELECT coalesce(json_agg(datname ORDER BY datname), '[]') \
     FROM pg_database WHERE datallowconn AND NOT datistemplate";

/// Longest one listing may take. It reads one small catalog table; only a
/// broken server is slower, and it must not hold up the other instances.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

const CLASS: &str = "DISCOVERY";

/// Runs until `stop` fires. An instance is listed when it first shows up in
/// the mirror (so also at every start), when its connection details change,
/// and then every `discovery.interval`. One instance at a time.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let every = shared.config.discovery.interval;
    let mut changed = shared.mirror.subscribe();
    // Per instance: the connection it was last listed with, and when next.
    let mut due: HashMap<i64, (InstanceConnection, Instant)> = HashMap::new();
    // Per instance: the error last reported, so a failure is reported once
    // and not at every interval.
    let mut failing: HashMap<i64, String> = HashMap::new();
    loop {
        let snap = shared.mirror.snapshot();
        let mut targets: Vec<&InstanceConnection> = snap
            .instances
            .values()
            .filter(|i| i.discover && i.status() == Status::Active && !snap.worker_halted)
            .collect();
        targets.sort_by_key(|i| i.instance_id);
        due.retain(|id, _| targets.iter().any(|t| t.instance_id == *id));
        for instance in targets {
            let is_due = match due.get(&instance.instance_id) {
                Some((seen, at)) => seen != instance || *at <= Instant::now(),
                None => true,
            };
            if !is_due {
                continue;
            }
            let span = tracing::info_span!("discovery.list", instance_id = instance.instance_id);
            list_and_report(&shared, instance, &stop, &mut failing)
                .instrument(span)
                .await;
            if stop.is_cancelled() {
                return;
            }
            due.insert(
                instance.instance_id,
                (instance.clone(), Instant::now() + every),
            );
        }
        let next = due
            .values()
            .map(|(_, at)| *at)
            .min()
            .unwrap_or_else(|| Instant::now() + every);
        tokio::select! {
            () = stop.cancelled() => return,
            res = changed.changed() => {
                if res.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

/// Lists one instance's databases and queues the list, or a WARNING
/// message when listing fails (once per distinct error).
async fn list_and_report(
    shared: &Shared,
    instance: &InstanceConnection,
    stop: &CancellationToken,
    failing: &mut HashMap<i64, String>,
) {
    let listed_at = chrono::Utc::now();
    let body = match list(shared, instance, stop).await {
        Ok(None) => return,
        Ok(Some(databases)) => {
            tracing::info!(databases = databases.len(), "databases listed");
            if failing.remove(&instance.instance_id).is_some() {
                tracing::info!("listing the databases works again");
            }
            event::Body::DatabasesDiscovered(DatabasesDiscovered {
                instance_id: instance.instance_id,
                databases,
                listed_at: Some(pgsnapman_proto::timestamp(listed_at)),
            })
        }
        Err(err) => {
            let text = format!(
                "instance {} ({}): cannot list the databases for auto-discovery: {err:#}",
                instance.instance_id, instance.name
            );
            tracing::warn!("{text}");
            if failing.get(&instance.instance_id) == Some(&text) {
                return;
            }
            failing.insert(instance.instance_id, text.clone());
            event::Body::Message(WorkerMessage {
                level: MessageLevel::Warning as i32,
                class: CLASS.into(),
                job_id: 0,
                text,
            })
        }
    };
    let outbox = Arc::clone(&shared.outbox);
    match tokio::task::spawn_blocking(move || outbox.append(body)).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::error!("cannot queue the database list in the outbox: {err:#}"),
        Err(err) => tracing::error!("cannot queue the database list in the outbox: {err}"),
    }
}

/// The sorted names, or `None` when `stop` fired.
async fn list(
    shared: &Shared,
    instance: &InstanceConnection,
    stop: &CancellationToken,
) -> Result<Option<Vec<String>>> {
    let database = if instance.maintenance_db.is_empty() {
        "postgres"
    } else {
        &instance.maintenance_db
    };
    let cancel = stop.child_token();
    let timer = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LIST_TIMEOUT).await;
            cancel.cancel();
        })
    };
    let session = shared.runner.session(instance, "pgsnapman-discovery")?;
    let out = session.run(database, &[LIST_SQL], &cancel).await;
    timer.abort();
    match out? {
        Some(json) => parse_list(&json).map(Some),
        None if stop.is_cancelled() => Ok(None),
        None => Err(anyhow!("no answer within {LIST_TIMEOUT:?}")),
    }
}

/// Parses the JSON array `LIST_SQL` returns.
fn parse_list(json: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = serde_json::from_str(json)
        .with_context(|| format!("unexpected answer {:?}", excerpt(json)))?;
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_names_survive_the_list() {
        let names = parse_list(r#"["zeta", "My \"odd\" db.ünï 'x'", "two\nlines", "a b", "zeta"]"#)
            .unwrap();
        assert_eq!(
            names,
            ["My \"odd\" db.ünï 'x'", "a b", "two\nlines", "zeta"]
        );
        assert_eq!(parse_list("[]").unwrap(), Vec::<String>::new());
        let err = parse_list("ERROR").unwrap_err().to_string();
        assert!(err.contains("ERROR"), "{err}");
    }
}
