//! Auto-discovery in the catalog: which instances a worker lists, and
//! applying a worker's list of an instance's databases — a job for each
//! database without one, a WARNING once when a database with jobs is gone
//! (its jobs are kept). Rules in docs/discovery.md.
use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use pgsnapman_proto::model::{BackupWindow, validate_identifier};
use pgsnapman_proto::v1;

use super::Catalog;
use super::events::Messages;
use crate::error::ApiResult;
use crate::rows::InstanceRow;
use crate::window::{DayTime, daily_time, discovered_cron};

const CLASS: &str = "DISCOVERY";
/// Comment of the jobs discovery adds.
const COMMENT: &str = "auto-discovered";

/// A job of the instance, as discovery sees it.
#[derive(sqlx::FromRow)]
struct JobOfInstance {
    id: i64,
    database: String,
    cron: String,
    missing: bool,
}

impl Catalog {
    /// Instances whose databases `worker_id` lists: discovery on, and it is
    /// the default worker.
    pub async fn discovery_instances(&self, worker_id: i64) -> ApiResult<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM instances WHERE auto_discover AND default_worker_id = $1 ORDER BY id",
        )
        .bind(worker_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Applies one `DatabasesDiscovered` inside the batch's transaction.
    ///
    /// The instance's `instance_discovery` row is locked (upserted) first,
    /// so two reports for one instance (a reconnect racing an old stream,
    /// two coordinators) apply one after the other and the second sees the
    /// jobs the first added. A report is ignored when discovery is off, the
    /// sender is not the default worker, or a list taken later was already
    /// applied (a report that waited in an outbox must not undo a newer one).
    pub(super) async fn apply_databases_discovered(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        worker_id: i64,
        d: &v1::DatabasesDiscovered,
        at: DateTime<Utc>,
        msgs: &mut Messages,
    ) -> ApiResult<()> {
        let listed_at = d
            .listed_at
            .as_ref()
            .and_then(pgsnapman_proto::from_timestamp)
            .unwrap_or(at);
        let Some(instance) = sqlx::query_as::<_, InstanceRow>(&format!(
            "SELECT {} FROM instances WHERE id = $1",
            super::instances::COLUMNS
        ))
        .bind(d.instance_id)
        .fetch_optional(&mut **tx)
        .await?
        else {
            tracing::info!(
                instance = d.instance_id,
                "databases of a removed instance ignored"
            );
            return Ok(());
        };
        if !instance.discovered_by(worker_id) {
            tracing::info!(
                instance = instance.id,
                worker_id,
                "databases ignored: discovery is off or the worker is not the default worker"
            );
            return Ok(());
        }
        let newer: bool = sqlx::query_scalar(
            "INSERT INTO instance_discovery (instance_id, listed_at, databases) VALUES ($1, $2, $3) \
             ON CONFLICT (instance_id) DO UPDATE SET listed_at = EXCLUDED.listed_at, \
               databases = EXCLUDED.databases \
             WHERE instance_discovery.listed_at < EXCLUDED.listed_at RETURNING true",
        )
        .bind(instance.id)
        .bind(listed_at)
        .bind(&d.databases)
        .fetch_optional(&mut **tx)
        .await?
        .unwrap_or(false);
        if !newer {
            tracing::info!(instance = instance.id, %listed_at, "an older list of databases ignored");
            return Ok(());
        }
        let jobs: Vec<JobOfInstance> = sqlx::query_as(
            "SELECT id, database, cron, database_missing_since IS NOT NULL AS missing \
             FROM dump_jobs WHERE instance_id = $1 ORDER BY id",
        )
        .bind(instance.id)
        .fetch_all(&mut **tx)
        .await?;
        let listed: BTreeSet<&str> = d.databases.iter().map(String::as_str).collect();
        let mut by_database: BTreeMap<&str, Vec<&JobOfInstance>> = BTreeMap::new();
        for j in jobs.iter().filter(|j| !j.database.is_empty()) {
            by_database.entry(j.database.as_str()).or_default().push(j);
        }
        let what = format!("instance {} ({})", instance.id, instance.name);
        let mut new = Vec::new();
        // Report-only discovery keeps the list (above) for the dashboard
        // and adds no job; vanished databases are still reported below.
        let unjobbed = listed
            .iter()
            .filter(|db| !by_database.contains_key(*db) && !instance.discover_report_only);
        for database in unjobbed {
            match validate_identifier("database", database) {
                Ok(()) => new.push(*database),
                Err(e) => msgs.push(
                    v1::MessageLevel::Warning,
                    CLASS,
                    None,
                    format!("{what}: no job added: {e}"),
                    listed_at,
                ),
            }
        }
        let window = BackupWindow::new(
            u32::try_from(instance.backup_window_start).unwrap_or(0),
            u32::try_from(instance.backup_window_end).unwrap_or(0),
        )
        .unwrap_or(BackupWindow::DEFAULT);
        let taken = jobs.iter().filter_map(|j| daily_time(&j.cron)).collect();
        let added = self
            .add_discovered_jobs(tx, worker_id, &instance, window, taken, &new)
            .await?;
        for (id, database, cron) in &added {
            msgs.push(
                v1::MessageLevel::Info,
                CLASS,
                Some(*id),
                format!(
                    "database {database:?} on {what} discovered: added FULL job {id}, cron \
                     \"{cron}\" (backup window {window}), {}",
                    instance.discovered_status
                ),
                listed_at,
            );
        }
        let mut gone = Vec::new();
        let mut present = Vec::new();
        for (database, js) in &by_database {
            let ids: Vec<String> = js.iter().map(|j| j.id.to_string()).collect();
            let first = js.first().map(|j| j.id);
            if !listed.contains(database) {
                gone.push(*database);
                if js.iter().all(|j| !j.missing) {
                    msgs.push(
                        v1::MessageLevel::Warning,
                        CLASS,
                        first,
                        format!(
                            "database {database:?} on {what} is no longer listed (dropped, renamed \
                             or not connectable); its jobs are kept: {}",
                            ids.join(", ")
                        ),
                        listed_at,
                    );
                }
            } else {
                present.push(*database);
                if js.iter().any(|j| j.missing) {
                    msgs.push(
                        v1::MessageLevel::Info,
                        CLASS,
                        first,
                        format!(
                            "database {database:?} on {what} is listed again (jobs {})",
                            ids.join(", ")
                        ),
                        listed_at,
                    );
                }
            }
        }
        // Remember what is gone (so the WARNING is written once per
        // disappearance) and forget it when it is back; rows already right
        // are not touched.
        sqlx::query(
            "UPDATE dump_jobs SET database_missing_since = CASE WHEN database = ANY($2) \
             THEN $4 END WHERE instance_id = $1 AND ( \
               (database = ANY($2) AND database_missing_since IS NULL) \
               OR (database = ANY($3) AND database_missing_since IS NOT NULL))",
        )
        .bind(instance.id)
        .bind(&gone)
        .bind(&present)
        .bind(listed_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Inserts a job for each of `databases` on the reporting (default)
    /// worker, at minutes of `window` not in `taken`, and bumps the worker's
    /// schedule so that it mirrors them. Returns (id, database, cron).
    async fn add_discovered_jobs(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        worker_id: i64,
        instance: &InstanceRow,
        window: BackupWindow,
        mut taken: HashSet<DayTime>,
        databases: &[&str],
    ) -> ApiResult<Vec<(i64, String, String)>> {
        if databases.is_empty() {
            return Ok(Vec::new());
        }
        let crons: Vec<String> = databases
            .iter()
            .map(|db| discovered_cron(window, instance.id, db, &mut taken))
            .collect();
        let added: Vec<(i64, String, String)> = sqlx::query_as(
            "INSERT INTO dump_jobs (worker_id, instance_id, database, dump_type, format, cron, \
             kind, status, keep_daily, keep_weekly, keep_monthly, keep_yearly, comment) \
             SELECT $1, $2, u.db, 'FULL', 'CUSTOM', u.cron, 'REPEAT', $5, $6, $7, $8, $9, $10 \
             FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS u(db, cron, ord) \
             ORDER BY u.ord RETURNING id, database, cron",
        )
        .bind(worker_id)
        .bind(instance.id)
        .bind(databases)
        .bind(&crons)
        .bind(&instance.discovered_status)
        .bind(instance.discovered_keep_daily)
        .bind(instance.discovered_keep_weekly)
        .bind(instance.discovered_keep_monthly)
        .bind(instance.discovered_keep_yearly)
        .bind(COMMENT)
        .fetch_all(&mut **tx)
        .await?;
        tracing::info!(
            instance = instance.id,
            jobs = added.len(),
            "discovered databases got jobs"
        );
        self.bump_schedule(&mut **tx, &[worker_id]).await?;
        Ok(added)
    }
}
