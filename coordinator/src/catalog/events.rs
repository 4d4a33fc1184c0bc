//! Applying a batch of worker events: one transaction per batch, idempotent
//! by event id (`applied_events`), in event id order.
use std::collections::HashSet;

use chrono::Utc;
use pgsnapman_proto::v1;
use pgsnapman_proto::v1::event::Body;

use super::Catalog;
use crate::error::{ApiError, ApiResult};
use crate::rows;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub up_to: String,
    pub applied: u32,
    pub duplicates: u32,
}

/// Parsed event ids, checked to be UUIDs in strictly ascending order.
fn parse_ids(events: &[v1::Event]) -> ApiResult<Vec<uuid::Uuid>> {
    let mut ids = Vec::with_capacity(events.len());
    for e in events {
        let id = uuid::Uuid::parse_str(&e.event_id)
            .map_err(|_| ApiError::Invalid(format!("event id {:?} is not a UUID", e.event_id)))?;
        if ids.last().is_some_and(|prev| *prev >= id) {
            return Err(ApiError::Invalid(format!(
                "events out of order at {}: a batch must be in ascending event id order",
                e.event_id
            )));
        }
        ids.push(id);
    }
    Ok(ids)
}

struct Messages {
    levels: Vec<i16>,
    classes: Vec<String>,
    jobs: Vec<Option<i64>>,
    texts: Vec<String>,
    times: Vec<chrono::DateTime<Utc>>,
}

impl Catalog {
    pub async fn apply_events(
        &self,
        worker_id: i64,
        events: &[v1::Event],
        outbox_backlog: u64,
    ) -> ApiResult<BatchOutcome> {
        let ids = parse_ids(events)?;
        let Some(last) = events.last() else {
            return Ok(BatchOutcome::default());
        };
        let mut tx = self.pool.begin().await?;
        let fresh: HashSet<uuid::Uuid> = sqlx::query_scalar(
            "INSERT INTO applied_events (worker_id, event_id) SELECT $1, unnest($2::uuid[]) \
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(worker_id)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut msgs = Messages {
            levels: Vec::new(),
            classes: Vec::new(),
            jobs: Vec::new(),
            texts: Vec::new(),
            times: Vec::new(),
        };
        let mut applied = 0u32;
        for (event, id) in events.iter().zip(&ids) {
            if !fresh.contains(id) {
                continue;
            }
            applied += 1;
            let at = event
                .occurred_at
                .as_ref()
                .and_then(pgsnapman_proto::from_timestamp)
                .unwrap_or_else(Utc::now);
            match &event.body {
                Some(Body::DumpFinished(d)) => {
                    self.apply_dump_finished(&mut tx, worker_id, *id, d, &mut msgs, at)
                        .await?;
                }
                Some(Body::TaskFailed(f)) => {
                    let task_id = f.task.as_ref().map_or(0, |t| t.task_id);
                    let ok = self
                        .finish_task(&mut tx, f.task.as_ref(), false, None, &f.error)
                        .await?;
                    let text = if ok {
                        format!("task {task_id} failed: {}", f.error)
                    } else {
                        format!("stale failure of task {task_id} ignored: {}", f.error)
                    };
                    msgs.push(v1::MessageLevel::Error, "TASK", None, text, at);
                }
                Some(Body::Message(m)) => {
                    let level = match v1::MessageLevel::try_from(m.level) {
                        Ok(v1::MessageLevel::Unspecified) | Err(_) => v1::MessageLevel::Info,
                        Ok(l) => l,
                    };
                    let class = if m.class.is_empty() {
                        "WORKER"
                    } else {
                        &m.class
                    };
                    msgs.push(
                        level,
                        class,
                        (m.job_id != 0).then_some(m.job_id),
                        m.text.clone(),
                        at,
                    );
                }
                None => {
                    msgs.push(
                        v1::MessageLevel::Warning,
                        "LINK",
                        None,
                        format!("event {id} had no body (newer worker?); ignored"),
                        at,
                    );
                }
            }
        }
        if !msgs.texts.is_empty() {
            sqlx::query(
                "INSERT INTO messages (worker_id, level, class, job_id, text, logged_at) \
                 SELECT $1, * FROM unnest($2::smallint[], $3::text[], $4::bigint[], $5::text[], $6::timestamptz[])",
            )
            .bind(worker_id)
            .bind(&msgs.levels)
            .bind(&msgs.classes)
            .bind(&msgs.jobs)
            .bind(&msgs.texts)
            .bind(&msgs.times)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE workers SET last_seen_at = now(), outbox_backlog = $2 WHERE id = $1")
            .bind(worker_id)
            .bind(i64::try_from(outbox_backlog).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let total = u32::try_from(events.len()).unwrap_or(u32::MAX);
        Ok(BatchOutcome {
            up_to: last.event_id.clone(),
            applied,
            duplicates: total - applied,
        })
    }

    async fn apply_dump_finished(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        worker_id: i64,
        event_id: uuid::Uuid,
        d: &v1::DumpFinished,
        msgs: &mut Messages,
        at: chrono::DateTime<Utc>,
    ) -> ApiResult<()> {
        let dump_uuid = uuid::Uuid::parse_str(&d.dump_uuid).unwrap_or(event_id);
        let started = d
            .started_at
            .as_ref()
            .and_then(pgsnapman_proto::from_timestamp)
            .unwrap_or(at);
        let finished = d
            .finished_at
            .as_ref()
            .and_then(pgsnapman_proto::from_timestamp)
            .unwrap_or(at);
        let status = if d.succeeded { "SUCCEEDED" } else { "FAILED" };
        let task_id = d.task.as_ref().map(|t| t.task_id).filter(|t| *t != 0);
        let dump_type = rows::dump_type_label(d.dump_type).unwrap_or("FULL");
        let format = rows::format_label(d.format).unwrap_or("CUSTOM");
        let dump_id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO dumps (dump_uuid, job_id, worker_id, instance_id, host, port, database, \
             schema_name, dump_type, format, status, started_at, finished_at, dump_bytes, \
             stored_bytes, database_bytes, server_version, client_version, location, message, task_id) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21) \
             ON CONFLICT (dump_uuid) DO NOTHING RETURNING id",
        )
        .bind(dump_uuid)
        .bind(d.job_id)
        .bind(worker_id)
        .bind(d.instance_id)
        .bind(&d.host)
        .bind(i32::try_from(d.port).unwrap_or(0))
        .bind(&d.database)
        .bind(&d.schema)
        .bind(dump_type)
        .bind(format)
        .bind(status)
        .bind(started)
        .bind(finished)
        .bind(i64::try_from(d.dump_bytes).unwrap_or(i64::MAX))
        .bind(i64::try_from(d.stored_bytes).unwrap_or(i64::MAX))
        .bind(d.database_bytes)
        .bind(&d.server_version)
        .bind(&d.client_version)
        .bind(&d.location)
        .bind(&d.error)
        .bind(task_id)
        .fetch_optional(&mut **tx)
        .await?;
        self.note_server_version(&mut **tx, d.instance_id, &d.server_version)
            .await?;
        let job = (d.job_id != 0).then_some(d.job_id);
        let what = if d.database.is_empty() {
            format!("{} dump of {}:{}", dump_type, d.host, d.port)
        } else {
            format!(
                "{} dump of database {:?} on {}:{}",
                dump_type, d.database, d.host, d.port
            )
        };
        if !d.succeeded {
            msgs.push(
                v1::MessageLevel::Error,
                "DUMP",
                job,
                format!("{what} (job {}) failed: {}", d.job_id, d.error),
                at,
            );
        }
        if d.task.is_some() {
            let ok = self
                .finish_task(tx, d.task.as_ref(), d.succeeded, dump_id, &d.error)
                .await?;
            if !ok {
                msgs.push(
                    v1::MessageLevel::Warning,
                    "TASK",
                    job,
                    format!(
                        "{what} finished under a lease that is no longer current (task {}); recorded, task left as it is",
                        task_id.unwrap_or(0)
                    ),
                    at,
                );
            }
        }
        Ok(())
    }

    /// Completes a task if `task` names its current lease. Returns false for
    /// a stale lease.
    async fn finish_task(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        task: Option<&v1::TaskRef>,
        succeeded: bool,
        dump_id: Option<i64>,
        error: &str,
    ) -> ApiResult<bool> {
        let Some(task) = task else { return Ok(false) };
        let Ok(lease) = uuid::Uuid::parse_str(&task.lease_id) else {
            return Ok(false);
        };
        let n = sqlx::query(
            "UPDATE tasks SET state = $3, finished_at = now(), leased_until = NULL, \
             dump_id = COALESCE($4, dump_id), error = $5 \
             WHERE id = $1 AND lease_id = $2 AND state IN ('LEASED', 'QUEUED')",
        )
        .bind(task.task_id)
        .bind(lease)
        .bind(if succeeded { "SUCCEEDED" } else { "FAILED" })
        .bind(dump_id)
        .bind(error)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}

impl Messages {
    fn push(
        &mut self,
        level: v1::MessageLevel,
        class: &str,
        job: Option<i64>,
        text: String,
        at: chrono::DateTime<Utc>,
    ) {
        self.levels.push(level as i16);
        self.classes.push(class.to_string());
        self.jobs.push(job);
        self.texts.push(text);
        self.times.push(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> v1::Event {
        v1::Event {
            event_id: id.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn ids_must_be_uuids_in_ascending_order() {
        let a = uuid::Uuid::now_v7().to_string();
        let b = uuid::Uuid::now_v7().to_string();
        assert_eq!(parse_ids(&[ev(&a), ev(&b)]).unwrap().len(), 2);
        assert!(parse_ids(&[ev(&b), ev(&a)]).is_err());
        assert!(parse_ids(&[ev(&a), ev(&a)]).is_err());
        assert!(parse_ids(&[ev("nope")]).is_err());
    }
}
