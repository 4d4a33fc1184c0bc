//! The catalog side of alerts (migration 0025): channels and rules, the
//! conditions rules watch, incidents opened once per rule and subject, and
//! the delivery outbox claimed with FOR UPDATE SKIP LOCKED.
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Catalog;
use crate::error::{ApiError, ApiResult};

/// Most subjects one rule fires for in one evaluation (the rest wait for
/// the next one; docs/alerts.md "Limits").
pub const MAX_FIRING_PER_RULE: i64 = 1000;
/// How far back a failed ad-hoc restore run is still an incident (it has no
/// job whose next run could resolve it; a later run onto its target does).
pub const ADHOC_RESTORE_WINDOW_DAYS: i32 = 7;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChannelRow {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub settings: Value,
    pub sealed_secret: Option<Vec<u8>>,
    pub key_id: String,
    pub created_at: DateTime<Utc>,
    pub failing_since: Option<DateTime<Utc>>,
    pub last_error: String,
    pub rules: Vec<String>,
}

const CHANNEL_COLUMNS: &str = "c.id, c.name, c.kind, c.settings, c.sealed_secret, c.key_id, \
    c.created_at, c.failing_since, c.last_error, ARRAY(SELECT r.name FROM notify_rule_channels rc \
    JOIN notify_rules r ON r.id = rc.rule_id WHERE rc.channel_id = c.id ORDER BY r.name) AS rules";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuleRow {
    pub id: i64,
    pub name: String,
    pub class: String,
    pub severity: String,
    pub job_id: Option<i64>,
    pub threshold_seconds: Option<i64>,
    pub threshold_count: Option<i64>,
    pub send_resolved: bool,
    pub created_at: DateTime<Utc>,
    pub channels: Vec<String>,
    pub channel_ids: Vec<i64>,
    pub open_incidents: i64,
}

const RULE_COLUMNS: &str = "r.id, r.name, r.class, r.severity, r.job_id, r.threshold_seconds, \
    r.threshold_count, r.send_resolved, r.created_at, \
    ARRAY(SELECT c.name FROM notify_rule_channels rc JOIN notify_channels c ON c.id = rc.channel_id \
      WHERE rc.rule_id = r.id ORDER BY c.name) AS channels, \
    ARRAY(SELECT rc.channel_id FROM notify_rule_channels rc WHERE rc.rule_id = r.id \
      ORDER BY rc.channel_id) AS channel_ids, \
    (SELECT count(*) FROM notify_incidents i WHERE i.rule_id = r.id AND i.resolved_at IS NULL) \
      AS open_incidents";

/// A new rule as the handler validated it.
pub struct NewRule<'a> {
    pub name: &'a str,
    pub class: &'a str,
    pub severity: &'a str,
    pub job_id: Option<i64>,
    pub threshold_seconds: Option<i64>,
    pub threshold_count: Option<i64>,
    pub send_resolved: bool,
    pub channels: &'a [String],
}

/// A subject for which a rule's condition holds now.
#[derive(Debug, Clone)]
pub struct Firing {
    pub subject: String,
    pub summary: String,
    pub details: Value,
}

/// An incident still open.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OpenIncident {
    pub id: i64,
    pub subject: String,
    pub summary: String,
    pub details: Value,
    pub opened_at: DateTime<Utc>,
}

/// A delivery claimed for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub channel_id: i64,
    pub payload: Value,
    pub attempts: i32,
}

/// A job's newest good dump, for DUMP_MISSING (ages are judged in Rust
/// against the job's cron).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobFreshness {
    pub job_id: i64,
    pub cron: String,
    pub database: String,
    pub worker: String,
    pub created_at: DateTime<Utc>,
    pub last_success: Option<DateTime<Utc>>,
}

/// A restore job's failed run: job, run, database, error, finish time.
type FailedRun = (i64, i64, String, String, Option<DateTime<Utc>>);
/// A failed ad-hoc restore run: run, target instance, target database,
/// source database, error, end.
type FailedAdhocRun = (i64, i64, String, String, String, Option<DateTime<Utc>>);
/// A failed verification: dump, job, database, method, time, detail.
type FailedVerification = (
    i64,
    i64,
    String,
    Option<String>,
    Option<DateTime<Utc>>,
    Value,
);

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Catalog {
    // ───────────── channels ─────────────

    pub async fn add_notify_channel(
        &self,
        name: &str,
        kind: &str,
        settings: &Value,
        sealed_secret: Option<Vec<u8>>,
        key_id: &str,
    ) -> ApiResult<ChannelRow> {
        let res = sqlx::query(
            "INSERT INTO notify_channels (name, kind, settings, sealed_secret, key_id) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name)
        .bind(kind)
        .bind(settings)
        .bind(sealed_secret)
        .bind(key_id)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => self.notify_channel(name).await,
            Err(e) if crate::error::is_unique_violation(&e) => Err(ApiError::Exists(format!(
                "notification channel {name:?} exists (remove it first to change it)"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_notify_channels(&self) -> ApiResult<Vec<ChannelRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM notify_channels c ORDER BY c.name"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn notify_channel(&self, name: &str) -> ApiResult<ChannelRow> {
        sqlx::query_as(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM notify_channels c WHERE c.name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| unknown_channel(name))
    }

    /// Removes a channel no rule names (with its pending deliveries).
    pub async fn remove_notify_channel(&self, name: &str) -> ApiResult<()> {
        let c = self.notify_channel(name).await?;
        if !c.rules.is_empty() {
            return Err(ApiError::Precondition(format!(
                "notification channel {name:?} is used by rule(s) {}: remove them first",
                c.rules.join(", ")
            )));
        }
        sqlx::query("DELETE FROM notify_channels WHERE id = $1")
            .bind(c.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ───────────── rules ─────────────

    pub async fn add_notify_rule(&self, r: &NewRule<'_>) -> ApiResult<RuleRow> {
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query_scalar::<_, i64>(
            "INSERT INTO notify_rules (name, class, severity, job_id, threshold_seconds, \
             threshold_count, send_resolved) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(r.name)
        .bind(r.class)
        .bind(r.severity)
        .bind(r.job_id)
        .bind(r.threshold_seconds)
        .bind(r.threshold_count)
        .bind(r.send_resolved)
        .fetch_one(&mut *tx)
        .await;
        let id = match res {
            Ok(id) => id,
            Err(e) if crate::error::is_unique_violation(&e) => {
                return Err(ApiError::Exists(format!(
                    "notification rule {:?} exists",
                    r.name
                )));
            }
            Err(e) => return Err(e.into()),
        };
        for name in r.channels {
            let n = sqlx::query(
                "INSERT INTO notify_rule_channels (rule_id, channel_id) \
                 SELECT $1, id FROM notify_channels WHERE name = $2 ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0
                && sqlx::query_scalar::<_, i64>("SELECT id FROM notify_channels WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_none()
            {
                return Err(unknown_channel(name));
            }
        }
        tx.commit().await?;
        self.notify_rule(r.name).await
    }

    pub async fn list_notify_rules(&self) -> ApiResult<Vec<RuleRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {RULE_COLUMNS} FROM notify_rules r ORDER BY r.name"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn notify_rule(&self, name: &str) -> ApiResult<RuleRow> {
        sqlx::query_as(&format!(
            "SELECT {RULE_COLUMNS} FROM notify_rules r WHERE r.name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| unknown_rule(name))
    }

    /// Removes a rule with its incidents and their pending deliveries.
    pub async fn remove_notify_rule(&self, name: &str) -> ApiResult<()> {
        let n = sqlx::query("DELETE FROM notify_rules WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(unknown_rule(name));
        }
        Ok(())
    }

    // ───────────── conditions ─────────────

    /// Jobs whose newest finished dump FAILED.
    pub async fn failed_dump_jobs(&self, job: Option<i64>) -> ApiResult<Vec<Firing>> {
        let rows: Vec<(i64, i64, String, String, DateTime<Utc>, String)> = sqlx::query_as(
            "SELECT j.id, d.id, d.database, d.message, d.finished_at, w.name FROM dump_jobs j \
             JOIN workers w ON w.id = j.worker_id \
             CROSS JOIN LATERAL (SELECT id, database, message, finished_at, status FROM dumps \
               WHERE job_id = j.id AND status IN ('SUCCEEDED', 'FAILED') \
               ORDER BY started_at DESC, id DESC LIMIT 1) d \
             WHERE d.status = 'FAILED' AND ($1::bigint IS NULL OR j.id = $1) \
             ORDER BY j.id LIMIT $2",
        )
        .bind(job)
        .bind(MAX_FIRING_PER_RULE)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(job_id, dump_id, db, message, at, worker)| Firing {
                subject: format!("job:{job_id}"),
                summary: format!(
                    "dump job {job_id} ({}) on worker {worker} failed: {}",
                    display_db(&db),
                    cut(&message, 300)
                ),
                details: serde_json::json!({
                    "job_id": job_id, "dump_id": dump_id, "database": db,
                    "worker": worker, "finished_at": at, "error": cut(&message, 2000),
                }),
            })
            .collect())
    }

    /// Restore jobs whose newest finished run FAILED.
    pub async fn failed_restore_jobs(&self) -> ApiResult<Vec<Firing>> {
        let rows: Vec<FailedRun> = sqlx::query_as(
            "SELECT r.id, u.id, u.source_database, u.error, u.finished_at FROM restore_jobs r \
             CROSS JOIN LATERAL (SELECT id, source_database, error, finished_at, status \
               FROM restore_runs WHERE restore_job_id = r.id \
               AND status IN ('SUCCEEDED', 'FAILED') ORDER BY id DESC LIMIT 1) u \
             WHERE u.status = 'FAILED' ORDER BY r.id LIMIT $1",
        )
        .bind(MAX_FIRING_PER_RULE)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(job_id, run_id, db, error, at)| Firing {
                subject: format!("restore_job:{job_id}"),
                summary: format!(
                    "restore job {job_id} ({}) failed: {}",
                    display_db(&db),
                    cut(&error, 300)
                ),
                details: serde_json::json!({
                    "restore_job_id": job_id, "run_id": run_id, "source_database": db,
                    "finished_at": at, "error": cut(&error, 2000),
                }),
            })
            .collect())
    }

    /// Targets of ad-hoc restores (`restore now`, `restore server`: runs of
    /// no restore job) whose newest finished run of the last
    /// [`ADHOC_RESTORE_WINDOW_DAYS`] days FAILED, one per target instance and
    /// database: a later run onto the same target that succeeds resolves it.
    pub async fn failed_adhoc_restores(&self) -> ApiResult<Vec<Firing>> {
        let rows: Vec<FailedAdhocRun> = sqlx::query_as(
            "SELECT id, target_instance_id, target_database, source_database, error, finished_at \
             FROM (SELECT DISTINCT ON (target_instance_id, target_database) id, \
                 target_instance_id, target_database, source_database, error, finished_at, status \
               FROM (SELECT id, target_instance_id, source_database, error, finished_at, status, \
                   COALESCE(NULLIF(target->>'database', ''), source_database) AS target_database \
                 FROM restore_runs WHERE restore_job_id IS NULL \
                 AND status IN ('SUCCEEDED', 'FAILED') \
                 AND finished_at > now() - make_interval(days => $2)) r \
               ORDER BY target_instance_id, target_database, id DESC) u \
             WHERE u.status = 'FAILED' ORDER BY u.id LIMIT $1",
        )
        .bind(MAX_FIRING_PER_RULE)
        .bind(ADHOC_RESTORE_WINDOW_DAYS)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(run_id, instance, target_db, db, error, at)| Firing {
                subject: format!("restore_target:{instance}/{target_db}"),
                summary: format!(
                    "ad-hoc restore run {run_id} of {} onto instance {instance} failed: {}",
                    display_db(&db),
                    cut(&error, 300)
                ),
                details: serde_json::json!({
                    "run_id": run_id, "target_instance_id": instance,
                    "target_database": target_db, "source_database": db,
                    "finished_at": at, "error": cut(&error, 2000),
                }),
            })
            .collect())
    }

    /// Stored dumps whose last verification (`pgsnap verify now`, or a
    /// job's verification schedule) failed.
    pub async fn failed_verifications(&self, job: Option<i64>) -> ApiResult<Vec<Firing>> {
        let rows: Vec<FailedVerification> = sqlx::query_as(
            "SELECT d.id, d.job_id, d.database, d.restore_verified_method, \
                 d.restore_verified_at, COALESCE(d.restore_verified_detail, 'null'::jsonb) \
                 FROM dumps d WHERE d.restore_verified_ok = false AND d.status = 'SUCCEEDED' \
                 AND ($1::bigint IS NULL OR d.job_id = $1) ORDER BY d.id LIMIT $2",
        )
        .bind(job)
        .bind(MAX_FIRING_PER_RULE)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(dump_id, job_id, db, method, at, detail)| Firing {
                subject: format!("dump:{dump_id}"),
                summary: format!(
                    "verification ({}) of dump {dump_id} of job {job_id} ({}) failed",
                    method.as_deref().unwrap_or("?"),
                    display_db(&db)
                ),
                details: serde_json::json!({
                    "dump_id": dump_id, "job_id": job_id, "database": db,
                    "method": method, "verified_at": at, "detail": detail,
                }),
            })
            .collect())
    }

    /// ACTIVE REPEAT jobs with the time of their newest good dump.
    pub async fn job_freshness(&self, job: Option<i64>) -> ApiResult<Vec<JobFreshness>> {
        Ok(sqlx::query_as(
            "SELECT j.id AS job_id, j.cron, j.database, w.name AS worker, j.created_at, \
             (SELECT max(d.finished_at) FROM dumps d WHERE d.job_id = j.id \
               AND d.status = 'SUCCEEDED') AS last_success \
             FROM dump_jobs j JOIN workers w ON w.id = j.worker_id \
             WHERE j.status = 'ACTIVE' AND j.kind = 'REPEAT' AND w.status = 'ACTIVE' \
             AND ($1::bigint IS NULL OR j.id = $1) ORDER BY j.id LIMIT $2",
        )
        .bind(job)
        .bind(MAX_FIRING_PER_RULE)
        .fetch_all(&self.pool)
        .await?)
    }

    /// ACTIVE workers seen once, with no live session, last seen longer
    /// than `after` ago.
    pub async fn offline_workers(&self, after: Duration) -> ApiResult<Vec<Firing>> {
        let rows: Vec<(i64, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT w.id, w.name, w.last_seen_at FROM workers w \
             WHERE w.status = 'ACTIVE' AND w.revoked_at IS NULL AND w.last_seen_at IS NOT NULL \
             AND w.last_seen_at < now() - make_interval(secs => $1) \
             AND NOT EXISTS (SELECT 1 FROM worker_sessions s WHERE s.worker_id = w.id \
               AND s.stale_after > now()) ORDER BY w.id LIMIT $2",
        )
        .bind(secs(after))
        .bind(MAX_FIRING_PER_RULE)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, seen)| Firing {
                subject: format!("worker:{id}"),
                summary: format!(
                    "worker {name} is offline: last seen {} (longer than {})",
                    seen.format("%Y-%m-%d %H:%M:%S UTC"),
                    humantime::format_duration(after)
                ),
                details: serde_json::json!({
                    "worker_id": id, "worker": name, "last_seen_at": seen,
                    "threshold_seconds": after.as_secs(),
                }),
            })
            .collect())
    }

    /// Workers whose outbox (as last reported) holds more than `above` events.
    pub async fn outbox_backlogs(&self, above: i64) -> ApiResult<Vec<Firing>> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT id, name, outbox_backlog FROM workers WHERE status = 'ACTIVE' \
             AND outbox_backlog > $1 ORDER BY id LIMIT $2",
        )
        .bind(above)
        .bind(MAX_FIRING_PER_RULE)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, backlog)| Firing {
                subject: format!("worker:{id}"),
                summary: format!(
                    "worker {name} has {backlog} events waiting in its outbox (more than {above})"
                ),
                details: serde_json::json!({
                    "worker_id": id, "worker": name, "outbox_backlog": backlog,
                    "threshold_count": above,
                }),
            })
            .collect())
    }

    /// Channels whose deliveries give up.
    pub async fn failing_channels(&self) -> ApiResult<Vec<Firing>> {
        let rows: Vec<(i64, String, DateTime<Utc>, String)> = sqlx::query_as(
            "SELECT id, name, failing_since, last_error FROM notify_channels \
             WHERE failing_since IS NOT NULL ORDER BY id LIMIT $1",
        )
        .bind(MAX_FIRING_PER_RULE)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, since, error)| Firing {
                subject: format!("channel:{id}"),
                summary: format!("notification channel {name} fails: {}", cut(&error, 300)),
                details: serde_json::json!({
                    "channel_id": id, "channel": name, "failing_since": since,
                    "error": cut(&error, 2000),
                }),
            })
            .collect())
    }

    // ───────────── incidents ─────────────

    pub async fn open_incidents(&self, rule_id: i64) -> ApiResult<Vec<OpenIncident>> {
        Ok(sqlx::query_as(
            "SELECT id, subject, summary, details, opened_at FROM notify_incidents \
             WHERE rule_id = $1 AND resolved_at IS NULL",
        )
        .bind(rule_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Opens the incident of `rule_id` for `f` unless one is open, and queues
    /// one delivery per channel (except `skip_channel`) in the same
    /// transaction. `Some(id)` when this call opened it.
    pub async fn open_incident(
        &self,
        rule_id: i64,
        channel_ids: &[i64],
        skip_channel: Option<i64>,
        f: &Firing,
        payload: impl Fn(i64, DateTime<Utc>) -> Value,
    ) -> ApiResult<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        let opened: Option<(i64, DateTime<Utc>)> = sqlx::query_as(
            "INSERT INTO notify_incidents (rule_id, subject, summary, details) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (rule_id, subject) WHERE resolved_at IS NULL DO NOTHING \
             RETURNING id, opened_at",
        )
        .bind(rule_id)
        .bind(&f.subject)
        .bind(&f.summary)
        .bind(&f.details)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, opened_at)) = opened else {
            return Ok(None);
        };
        let body = payload(id, opened_at);
        queue(&mut tx, id, channel_ids, skip_channel, &body).await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Resolves an open incident; with `notify`, queues one delivery per
    /// channel. `false` when another coordinator resolved it first.
    pub async fn resolve_incident(
        &self,
        id: i64,
        channel_ids: &[i64],
        skip_channel: Option<i64>,
        payload: Option<impl Fn(DateTime<Utc>) -> Value>,
    ) -> ApiResult<bool> {
        let mut tx = self.pool.begin().await?;
        let at: Option<DateTime<Utc>> = sqlx::query_scalar(
            "UPDATE notify_incidents SET resolved_at = now() \
             WHERE id = $1 AND resolved_at IS NULL RETURNING resolved_at",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(at) = at else {
            return Ok(false);
        };
        if let Some(payload) = payload {
            queue(&mut tx, id, channel_ids, skip_channel, &payload(at)).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    // ───────────── deliveries ─────────────

    /// Claims up to `limit` due deliveries: each is reserved for `ttl`
    /// (pushed into the future) and its attempt counted; locked rows are
    /// skipped so several coordinators never wait on, or send, the same one.
    pub async fn claim_deliveries(
        &self,
        limit: i64,
        ttl: Duration,
    ) -> ApiResult<Vec<ClaimedDelivery>> {
        Ok(sqlx::query_as(
            "UPDATE notify_deliveries d SET attempts = d.attempts + 1, \
               next_attempt_at = now() + make_interval(secs => $2) \
             WHERE d.id IN (SELECT id FROM notify_deliveries WHERE status = 'PENDING' \
               AND next_attempt_at <= now() ORDER BY next_attempt_at, id LIMIT $1 \
               FOR UPDATE SKIP LOCKED) \
             RETURNING d.id, d.channel_id, d.payload, d.attempts",
        )
        .bind(limit)
        .bind(secs(ttl))
        .fetch_all(&self.pool)
        .await?)
    }

    /// A delivery was accepted: it is done and its channel works.
    pub async fn delivery_sent(&self, id: i64, channel_id: i64) -> ApiResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE notify_deliveries SET status = 'SENT', sent_at = now(), last_error = '' \
             WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE notify_channels SET failing_since = NULL, last_error = '' \
             WHERE id = $1 AND failing_since IS NOT NULL",
        )
        .bind(channel_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An attempt failed: retried after `retry_in`, or (None) given up,
    /// which marks the channel failing and leaves an ERROR message.
    pub async fn delivery_failed(
        &self,
        id: i64,
        channel: &str,
        channel_id: i64,
        attempts: i32,
        error: &str,
        retry_in: Option<Duration>,
    ) -> ApiResult<()> {
        let error = cut(error, 1000);
        let Some(wait) = retry_in else {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "UPDATE notify_deliveries SET status = 'FAILED', last_error = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(&error)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE notify_channels SET failing_since = COALESCE(failing_since, now()), \
                 last_error = $2 WHERE id = $1",
            )
            .bind(channel_id)
            .bind(&error)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO messages (level, class, text) VALUES (4, 'NOTIFY', $1)")
                .bind(format!(
                    "notification channel {channel} failed: delivery {id} given up after {attempts} attempts: {error}"
                ))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(());
        };
        sqlx::query(
            "UPDATE notify_deliveries SET last_error = $2, \
             next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
        )
        .bind(id)
        .bind(&error)
        .bind(secs(wait))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes incidents resolved longer than `older_than` ago (their
    /// deliveries go with them).
    pub async fn prune_incidents(&self, older_than: Duration) -> ApiResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM notify_incidents WHERE resolved_at < now() - make_interval(secs => $1)",
        )
        .bind(secs(older_than))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

/// One PENDING delivery of `body` per channel of the rule.
async fn queue(
    tx: &mut sqlx::PgConnection,
    incident: i64,
    channel_ids: &[i64],
    skip_channel: Option<i64>,
    body: &Value,
) -> ApiResult<()> {
    let ids: Vec<i64> = channel_ids
        .iter()
        .copied()
        .filter(|c| Some(*c) != skip_channel)
        .collect();
    sqlx::query(
        "INSERT INTO notify_deliveries (incident_id, channel_id, payload) \
         SELECT $1, c, $3 FROM unnest($2::bigint[]) c",
    )
    .bind(incident)
    .bind(&ids)
    .bind(body)
    .execute(tx)
    .await?;
    Ok(())
}

fn unknown_channel(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "notification channel {name:?} not found (pgsnap notify list)"
    ))
}

fn unknown_rule(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "notification rule {name:?} not found (pgsnap notify rule list)"
    ))
}

/// `"db"`, or "all databases" for cluster-wide jobs.
fn display_db(db: &str) -> String {
    if db.is_empty() {
        "all databases".into()
    } else {
        format!("database {db}")
    }
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub fn cut(s: &str, max: usize) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}
