//! Applying a batch of worker events: one transaction per batch, idempotent
//! by event id (`applied_events`), strictly in event id order (consecutive
//! DumpFinished events are inserted in one statement). A task's result
//! counts only under the task's current lease.
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

/// Messages a batch writes, as columns of one bulk insert.
pub(super) struct Messages {
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
        // The acknowledgement lets the worker delete these events: the commit
        // must be durable when it returns, even on a catalog tuned with
        // synchronous_commit = off (a crash would otherwise lose events that
        // exist nowhere else).
        sqlx::query("SET LOCAL synchronous_commit = on")
            .execute(&mut *tx)
            .await?;
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
        self.check_ownership(&mut tx, worker_id, events, &ids, &fresh)
            .await?;
        let mut msgs = Messages {
            levels: Vec::new(),
            classes: Vec::new(),
            jobs: Vec::new(),
            texts: Vec::new(),
            times: Vec::new(),
        };
        let mut applied = 0u32;
        // A run of consecutive DumpFinished events, inserted at once before
        // the next event of another kind.
        let mut dumps = Vec::new();
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
            if let Some(Body::DumpFinished(d)) = &event.body {
                dumps.push((*id, d, at));
                continue;
            }
            // Messages and store statistics never refer to a dump, so they
            // do not end the run: dumps interleaved with messages (the usual
            // backlog) are still inserted in one statement. Every other
            // event may refer to a dump of the run and is applied after it.
            if !matches!(&event.body, Some(Body::Message(_) | Body::StoreStats(_))) {
                self.apply_dumps_finished(&mut tx, worker_id, &dumps, &mut msgs)
                    .await?;
                dumps.clear();
            }
            match &event.body {
                Some(Body::DumpFinished(_)) => {}
                Some(Body::TaskFailed(f)) => {
                    let task_id = f.task.as_ref().map_or(0, |t| t.task_id);
                    let ok = self
                        .finish_task(&mut tx, f.task.as_ref(), false, None, &f.error, None)
                        .await?
                        .applied();
                    if ok {
                        self.fail_runs_of_tasks(&mut *tx, &[task_id], &f.error)
                            .await?;
                    }
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
                Some(Body::TaskFinished(f)) => {
                    let result = (!f.result_json.is_empty()).then_some(f.result_json.as_str());
                    let ok = self
                        .finish_task(
                            &mut tx,
                            f.task.as_ref(),
                            f.succeeded,
                            None,
                            &f.error,
                            result,
                        )
                        .await?
                        .applied();
                    let task_id = f.task.as_ref().map_or(0, |t| t.task_id);
                    if !f.succeeded {
                        msgs.push(
                            v1::MessageLevel::Error,
                            "TASK",
                            None,
                            format!("task {task_id} failed: {}", f.error),
                            at,
                        );
                    } else if !ok {
                        msgs.push(
                            v1::MessageLevel::Warning,
                            "TASK",
                            None,
                            format!("task {task_id} finished under a lease that is no longer current; left as it is"),
                            at,
                        );
                    }
                }
                Some(Body::DumpsDeleted(d)) => {
                    let n = self.apply_dumps_deleted(&mut tx, worker_id, d).await?;
                    msgs.push(
                        v1::MessageLevel::Info,
                        "STORE",
                        None,
                        format!(
                            "{} dump(s) deleted from the store ({}); {n} catalog row(s) removed: {}",
                            d.dump_uuids.len(),
                            d.reason,
                            d.dump_uuids.join(", ")
                        ),
                        at,
                    );
                }
                Some(Body::StoreStats(st)) => {
                    self.apply_store_stats(&mut tx, worker_id, st, at).await?;
                }
                Some(Body::DumpsCompressed(c)) => {
                    self.apply_dumps_compressed(&mut tx, worker_id, c).await?;
                }
                Some(Body::StoreVerified(v)) => {
                    let failed = self.apply_store_verified(&mut tx, worker_id, v, at).await?;
                    let (level, text) = if v.problems.is_empty() {
                        (
                            v1::MessageLevel::Info,
                            format!(
                                "store verified: {} dump(s), {} chunk(s) in {} pack(s), no problems",
                                v.good_dump_uuids.len(),
                                v.chunks_checked,
                                v.packs
                            ),
                        )
                    } else {
                        (
                            v1::MessageLevel::Critical,
                            format!(
                                "store verification found {} problem(s); damaged dumps (catalog ids {:?}): {}; {}",
                                v.problems.len(),
                                failed,
                                v.bad_dump_uuids.join(", "),
                                v.problems.join("; ")
                            ),
                        )
                    };
                    msgs.push(level, "VERIFY", None, text, at);
                }
                Some(Body::DumpVerified(v)) => {
                    self.apply_dump_verified(&mut tx, worker_id, v, at, &mut msgs)
                        .await?;
                }
                Some(Body::DatabasesDiscovered(d)) => {
                    self.apply_databases_discovered(&mut tx, worker_id, d, at, &mut msgs)
                        .await?;
                }
                Some(Body::RestoreLog(e)) => {
                    if !self.apply_restore_log(&mut tx, worker_id, e, at).await? {
                        msgs.push(
                            v1::MessageLevel::Warning,
                            "RESTORE",
                            None,
                            format!(
                                "log line for restore run {} ignored: not a run of this worker",
                                e.run_id
                            ),
                            at,
                        );
                    }
                }
                Some(Body::RestoreFinished(f)) => {
                    let lease = self
                        .finish_task(
                            &mut tx,
                            f.task.as_ref(),
                            f.status == v1::RestoreStatus::Succeeded as i32,
                            None,
                            &f.error,
                            None,
                        )
                        .await?;
                    if lease == Lease::Superseded {
                        // The task was leased again: this attempt's end must
                        // not overwrite the run that the new lease owns.
                        msgs.push(
                            v1::MessageLevel::Warning,
                            "TASK",
                            None,
                            format!(
                                "end of restore run {} under a lease that is no longer current ignored ({}: {})",
                                f.run_id,
                                rows::restore_status_label(f.status).unwrap_or("?"),
                                f.error
                            ),
                            at,
                        );
                        continue;
                    }
                    match self
                        .apply_restore_finished(&mut tx, worker_id, f, at)
                        .await?
                    {
                        Some(run) => {
                            let (level, text) = restore_message(&run);
                            msgs.push(level, "RESTORE", None, text, at);
                        }
                        None => msgs.push(
                            v1::MessageLevel::Warning,
                            "RESTORE",
                            None,
                            format!(
                                "end of restore run {} ignored: not a run of this worker",
                                f.run_id
                            ),
                            at,
                        ),
                    }
                    if lease == Lease::Ended {
                        msgs.push(
                            v1::MessageLevel::Warning,
                            "TASK",
                            None,
                            format!(
                                "restore run {} finished after its task had ended; the task is left as it is",
                                f.run_id
                            ),
                            at,
                        );
                    }
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
        self.apply_dumps_finished(&mut tx, worker_id, &dumps, &mut msgs)
            .await?;
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

    /// Inserts the catalog rows of a batch's DumpFinished events at once, then
    /// completes their tasks.
    async fn apply_dumps_finished(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        worker_id: i64,
        dumps: &[(uuid::Uuid, &v1::DumpFinished, chrono::DateTime<Utc>)],
        msgs: &mut Messages,
    ) -> ApiResult<()> {
        if dumps.is_empty() {
            return Ok(());
        }
        let mut c = DumpColumns::default();
        for (event_id, d, at) in dumps {
            c.push(*event_id, d, *at);
        }
        let ids: Vec<(i64, uuid::Uuid)> = sqlx::query_as(
            "INSERT INTO dumps (dump_uuid, job_id, worker_id, instance_id, host, port, database, \
             schema_name, dump_type, format, status, started_at, finished_at, dump_bytes, \
             stored_bytes, database_bytes, server_version, client_version, location, message, task_id, restore_metadata, \
             table_rows, table_rows_error, script_hash) \
             SELECT u.uuid, u.job, $1, u.inst, u.host, u.port, u.db, u.schema, u.dtype, u.fmt, \
                    u.status, u.started, u.finished, u.dbytes, u.sbytes, u.dbsize, u.sver, u.cver, \
                    u.loc, u.msg, u.task, NULLIF(u.meta, '')::jsonb, NULLIF(u.trows, '')::jsonb, u.terr, u.shash \
             FROM unnest($2::uuid[], $3::bigint[], $4::bigint[], $5::text[], $6::int[], $7::text[], \
                         $8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[], \
                         $13::timestamptz[], $14::bigint[], $15::bigint[], $16::bigint[], $17::text[], \
                         $18::text[], $19::text[], $20::text[], $21::bigint[], $22::text[], $23::text[], \
                         $24::text[], $25::text[]) WITH ORDINALITY \
                  AS u(uuid, job, inst, host, port, db, schema, dtype, fmt, status, started, finished, \
                       dbytes, sbytes, dbsize, sver, cver, loc, msg, task, meta, trows, terr, shash, ord) \
             ORDER BY u.ord \
             ON CONFLICT (dump_uuid) DO NOTHING RETURNING id, dump_uuid",
        )
        .bind(worker_id)
        .bind(&c.uuid)
        .bind(&c.job)
        .bind(&c.instance)
        .bind(&c.host)
        .bind(&c.port)
        .bind(&c.database)
        .bind(&c.schema)
        .bind(&c.dump_type)
        .bind(&c.format)
        .bind(&c.status)
        .bind(&c.started)
        .bind(&c.finished)
        .bind(&c.dump_bytes)
        .bind(&c.stored_bytes)
        .bind(&c.database_bytes)
        .bind(&c.server_version)
        .bind(&c.client_version)
        .bind(&c.location)
        .bind(&c.message)
        .bind(&c.task)
        .bind(&c.restore_metadata)
        .bind(&c.table_rows)
        .bind(&c.table_rows_error)
        .bind(&c.script_hash)
        .fetch_all(&mut **tx)
        .await?;
        let by_uuid: std::collections::HashMap<uuid::Uuid, i64> =
            ids.into_iter().map(|(id, u)| (u, id)).collect();
        // Rows that existed already (a result reported again under a new
        // lease): their tasks complete with the existing row.
        let known: Vec<uuid::Uuid> = c
            .uuid
            .iter()
            .filter(|u| !by_uuid.contains_key(u))
            .copied()
            .collect();
        let existing: std::collections::HashMap<uuid::Uuid, i64> = if known.is_empty() {
            Default::default()
        } else {
            sqlx::query_as::<_, (i64, uuid::Uuid)>(
                "SELECT id, dump_uuid FROM dumps WHERE worker_id = $1 AND dump_uuid = ANY($2)",
            )
            .bind(worker_id)
            .bind(&known)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|(id, u)| (u, id))
            .collect()
        };
        let mut versions: std::collections::BTreeMap<i64, &str> = Default::default();
        for (i, (_, d, at)) in dumps.iter().enumerate() {
            if !d.server_version.is_empty() {
                versions.insert(d.instance_id, &d.server_version);
            }
            let job = (d.job_id != 0).then_some(d.job_id);
            let what = describe(d, c.dump_type[i]);
            // A script's stderr (bounded by the worker), before the verdict.
            let level = if d.succeeded {
                v1::MessageLevel::Info
            } else {
                v1::MessageLevel::Warning
            };
            for line in &d.script_stderr {
                msgs.push(
                    level,
                    "SCRIPT",
                    job,
                    format!("job {}: {line}", d.job_id),
                    *at,
                );
            }
            if !d.succeeded {
                msgs.push(
                    v1::MessageLevel::Error,
                    "DUMP",
                    job,
                    format!("{what} (job {}) failed: {}", d.job_id, d.error),
                    *at,
                );
            } else if !d.table_rows_error.is_empty() {
                msgs.push(
                    v1::MessageLevel::Warning,
                    "DUMP",
                    job,
                    format!(
                        "{what} (job {}): row counts unavailable: {}",
                        d.job_id, d.table_rows_error
                    ),
                    *at,
                );
            }
            if d.task.is_some() {
                let dump_id = by_uuid
                    .get(&c.uuid[i])
                    .or_else(|| existing.get(&c.uuid[i]))
                    .copied();
                let ok = self
                    .finish_task(tx, d.task.as_ref(), d.succeeded, dump_id, &d.error, None)
                    .await?
                    .applied();
                if !ok {
                    msgs.push(
                        v1::MessageLevel::Warning,
                        "TASK",
                        job,
                        format!(
                            "{what} finished under a lease that is no longer current (task {}); recorded, task left as it is",
                            c.task[i].unwrap_or(0)
                        ),
                        *at,
                    );
                }
            }
        }
        // Copies that these dumps trigger, in the same transaction: a
        // replayed event inserts no row and so triggers nothing again.
        let fresh: Vec<i64> = by_uuid.values().copied().collect();
        let triggered = self.trigger_restores(tx, &fresh).await?;
        if !triggered.is_empty() {
            tracing::info!(tasks = ?triggered, "copies triggered by dumps");
        }
        for (instance, version) in versions {
            self.note_server_version(&mut **tx, instance, version)
                .await?;
        }
        Ok(())
    }

    /// Completes a task if `task` names its current lease and the task has
    /// not ended. A task queued again after its lease expired keeps that
    /// lease until it is leased again, so a late result completes it
    /// instead of a second run; once leased again, the old lease's result
    /// is stale (`Superseded`) and changes nothing.
    pub(super) async fn finish_task(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        task: Option<&v1::TaskRef>,
        succeeded: bool,
        dump_id: Option<i64>,
        error: &str,
        result: Option<&str>,
    ) -> ApiResult<Lease> {
        let Some(task) = task else {
            return Ok(Lease::NoTask);
        };
        let Ok(lease) = uuid::Uuid::parse_str(&task.lease_id) else {
            return Ok(Lease::Superseded);
        };
        let current: Option<(Option<uuid::Uuid>, String)> =
            sqlx::query_as("SELECT lease_id, state FROM tasks WHERE id = $1 FOR UPDATE")
                .bind(task.task_id)
                .fetch_optional(&mut **tx)
                .await?;
        let Some((current, state)) = current else {
            return Ok(Lease::NoTask);
        };
        if current != Some(lease) {
            return Ok(Lease::Superseded);
        }
        if !matches!(state.as_str(), "LEASED" | "QUEUED") {
            return Ok(Lease::Ended);
        }
        sqlx::query(
            "UPDATE tasks SET state = $2, finished_at = now(), leased_until = NULL, \
             dump_id = COALESCE($3, dump_id), error = $4, result = $5::jsonb WHERE id = $1",
        )
        .bind(task.task_id)
        .bind(if succeeded { "SUCCEEDED" } else { "FAILED" })
        .bind(dump_id)
        .bind(error)
        .bind(result)
        .execute(&mut **tx)
        .await?;
        Ok(Lease::Current)
    }
}

/// What a task result's lease is, as `finish_task` found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lease {
    /// The task's current lease: the task is now complete.
    Current,
    /// The current lease, but the task had ended (cancelled): unchanged.
    Ended,
    /// The task was leased again since: the result is stale.
    Superseded,
    /// The event names no task (or an unknown one).
    NoTask,
}

impl Lease {
    pub(super) fn applied(self) -> bool {
        self == Lease::Current
    }
}

/// Rows deleted per statement when pruning, so that no statement holds its
/// locks for long.
const PRUNE_CHUNK: i64 = 10_000;
/// Statements per table and pruning round (at most 10 million rows each;
/// the rest waits for the next round).
const PRUNE_ROUNDS: usize = 1_000;

/// Rows removed by one pruning round.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub applied_events: u64,
    pub messages: u64,
    pub restore_log: u64,
}

impl Catalog {
    /// Deletes history older than its retention: applied event ids (by the
    /// time they were applied), messages and restore log lines (by the time
    /// they were logged). Restore runs themselves stay.
    pub async fn prune_history(
        &self,
        applied_events: std::time::Duration,
        messages: std::time::Duration,
        restore_log: std::time::Duration,
    ) -> ApiResult<Pruned> {
        Ok(Pruned {
            applied_events: self
                .prune_table("applied_events", "applied_at", applied_events)
                .await?,
            messages: self.prune_table("messages", "logged_at", messages).await?,
            restore_log: self
                .prune_table("restore_log", "logged_at", restore_log)
                .await?,
        })
    }

    /// `table` and `column` are fixed names from `prune_history` (and
    /// `prune_audit`).
    pub(super) async fn prune_table(
        &self,
        table: &str,
        column: &str,
        keep: std::time::Duration,
    ) -> ApiResult<u64> {
        let sql = format!(
            "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} \
             WHERE {column} < now() - $1::interval LIMIT $2))"
        );
        let mut total = 0;
        for _ in 0..PRUNE_ROUNDS {
            let n = sqlx::query(&sql)
                .bind(keep)
                .bind(PRUNE_CHUNK)
                .execute(&self.pool)
                .await?
                .rows_affected();
            total += n;
            if n < u64::try_from(PRUNE_CHUNK).unwrap_or(0) {
                break;
            }
        }
        Ok(total)
    }
}

/// Column arrays of a bulk insert into `dumps`.
#[derive(Default)]
struct DumpColumns {
    uuid: Vec<uuid::Uuid>,
    job: Vec<i64>,
    instance: Vec<i64>,
    host: Vec<String>,
    port: Vec<i32>,
    database: Vec<String>,
    schema: Vec<String>,
    dump_type: Vec<&'static str>,
    format: Vec<&'static str>,
    status: Vec<&'static str>,
    started: Vec<chrono::DateTime<Utc>>,
    finished: Vec<chrono::DateTime<Utc>>,
    dump_bytes: Vec<i64>,
    stored_bytes: Vec<i64>,
    database_bytes: Vec<i64>,
    server_version: Vec<String>,
    client_version: Vec<String>,
    location: Vec<String>,
    restore_metadata: Vec<String>,
    message: Vec<String>,
    task: Vec<Option<i64>>,
    /// JSON (migration 0017), empty when not counted.
    table_rows: Vec<String>,
    table_rows_error: Vec<String>,
    /// SCRIPT dumps: the script version's hash (migration 0023), else empty.
    script_hash: Vec<String>,
}

impl DumpColumns {
    fn push(&mut self, event_id: uuid::Uuid, d: &v1::DumpFinished, at: chrono::DateTime<Utc>) {
        let time = |t: &Option<prost_types::Timestamp>| {
            t.as_ref()
                .and_then(pgsnapman_proto::from_timestamp)
                .unwrap_or(at)
        };
        let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.uuid
            .push(uuid::Uuid::parse_str(&d.dump_uuid).unwrap_or(event_id));
        self.job.push(d.job_id);
        self.instance.push(d.instance_id);
        self.host.push(d.host.clone());
        self.port.push(i32::try_from(d.port).unwrap_or(0));
        self.database.push(d.database.clone());
        self.schema.push(d.schema.clone());
        self.dump_type
            .push(rows::dump_type_label(d.dump_type).unwrap_or("FULL"));
        self.format
            .push(rows::format_label(d.format).unwrap_or("CUSTOM"));
        self.status
            .push(if d.succeeded { "SUCCEEDED" } else { "FAILED" });
        self.started.push(time(&d.started_at));
        self.finished.push(time(&d.finished_at));
        self.dump_bytes.push(big(d.dump_bytes));
        self.stored_bytes.push(big(d.stored_bytes));
        self.database_bytes.push(d.database_bytes);
        self.server_version.push(d.server_version.clone());
        self.client_version.push(d.client_version.clone());
        self.location.push(d.location.clone());
        self.restore_metadata.push(d.restore_metadata_json.clone());
        self.message.push(d.error.clone());
        self.task
            .push(d.task.as_ref().map(|t| t.task_id).filter(|t| *t != 0));
        let rows: Vec<rows::TableRowsJson> =
            d.table_rows.iter().map(rows::TableRowsJson::of).collect();
        self.table_rows.push(if d.table_rows_counted {
            serde_json::to_string(&rows).unwrap_or_default()
        } else {
            String::new()
        });
        self.table_rows_error.push(d.table_rows_error.clone());
        // Only a well-formed hash (the column's CHECK): a malformed one from
        // a worker must not refuse the whole batch.
        self.script_hash.push(
            if pgsnapman_proto::script::is_content_hash(&d.script_hash) {
                d.script_hash.clone()
            } else {
                String::new()
            },
        );
    }
}

fn describe(d: &v1::DumpFinished, dump_type: &str) -> String {
    if d.database.is_empty() {
        format!("{dump_type} dump of {}:{}", d.host, d.port)
    } else {
        format!(
            "{dump_type} dump of database {:?} on {}:{}",
            d.database, d.host, d.port
        )
    }
}

impl Messages {
    pub(super) fn push(
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

/// The catalog message for the end of a restore run.
fn restore_message(run: &crate::rows::RestoreRunRow) -> (v1::MessageLevel, String) {
    let target = run
        .to_proto()
        .target
        .map(|t| t.database)
        .unwrap_or_default();
    let what = format!(
        "restore run {} of dump {} ({}) onto {} database {:?}",
        run.id,
        run.dump_id,
        run.source_database,
        run.target_instance_name.as_deref().unwrap_or("?"),
        target
    );
    match run.status.as_str() {
        "SUCCEEDED" if run.warnings > 0 => (
            v1::MessageLevel::Info,
            format!("{what} succeeded with {} harmless error(s)", run.warnings),
        ),
        "SUCCEEDED" => (v1::MessageLevel::Info, format!("{what} succeeded")),
        "ABORTED" => (
            v1::MessageLevel::Warning,
            format!("{what} aborted: {}", run.error),
        ),
        _ => (
            v1::MessageLevel::Error,
            format!("{what} failed: {}", run.error),
        ),
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
