//! The dashboard's pages (GET): fleet, jobs, catalog, one dump, one task,
//! restores and their logs, messages, and what is not backed up. Every
//! list is bounded: a page of `dashboard.page_size` rows by keyset, or a
//! fixed cap named here.
use chrono::{DateTime, Utc};
use hyper::StatusCode;
use minijinja::context;
use pgsnapman_proto::model::{CronExpr, quoted};
use pgsnapman_proto::v1;
use serde_json::{Value, json};

use super::view::{age, bytes, cut, ratio, time};
use super::{Dashboard, Req, Resp, Session};
use crate::auth::Role;
use crate::catalog::dashboard::MessageFilter;

/// Restore runs listed on the restores page (newest first).
const MAX_RESTORE_RUNS: u32 = 200;
/// Lines of one restore log shown (the last ones).
const MAX_LOG_LINES: usize = 2000;
/// Rows of the "not backed up" page.
const MAX_UNPROTECTED: i64 = 1000;
/// Slack after a job's period before it is marked as having no good dump.
const STALE_SLACK: chrono::Duration = chrono::Duration::hours(1);

const LEVELS: [&str; 5] = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];

fn level_name(level: i16) -> &'static str {
    usize::try_from(level - 1)
        .ok()
        .and_then(|i| LEVELS.get(i))
        .copied()
        .unwrap_or("?")
}

/// A numeric id from the path or the query; the error names it.
pub(super) fn id(what: &str, s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{what} {} is not a positive number", quoted(&cut(s))))
}

/// The `after` query of a paged list: the last id of the previous page,
/// 0 for the first.
fn after(r: &Req) -> Result<i64, (StatusCode, String)> {
    r.query("after")
        .map_or(Ok(0), |a| id("after", a).map_err(bad))
}

impl Dashboard {
    pub(super) async fn page(&self, r: &Req, s: &Session, seg: &[&str]) -> Resp {
        let result = match seg {
            [""] => self.fleet().await,
            ["jobs"] => self.jobs(r).await,
            ["catalog"] => self.dumps(r).await,
            ["dumps", d] => match id("dump id", d) {
                Ok(d) => self.dump(d).await,
                Err(m) => Err((StatusCode::BAD_REQUEST, m)),
            },
            ["tasks", t] => match id("task id", t) {
                Ok(t) => self.task(t).await,
                Err(m) => Err((StatusCode::BAD_REQUEST, m)),
            },
            ["restores"] => self.restores().await,
            ["restore-jobs"] => self.restore_jobs(r).await,
            ["restores", run] => match id("restore run id", run) {
                Ok(run) => self.restore_log(run).await,
                Err(m) => Err((StatusCode::BAD_REQUEST, m)),
            },
            ["messages"] => self.messages(r).await,
            ["unprotected"] => self.unprotected().await,
            _ => Err((
                StatusCode::NOT_FOUND,
                format!("no dashboard page {}", quoted(&cut(&r.path))),
            )),
        };
        match result {
            Ok((name, ctx)) => {
                let me = context! {
                    name => s.caller.name.clone(),
                    role => s.caller.role.label(),
                    can_act => s.caller.role >= Role::Operator,
                };
                self.render(name, context! { me, csrf => s.csrf.clone(), ..ctx })
            }
            Err((status, m)) => self.error(status, &m),
        }
    }

    /// Cuts a page fetched with one row extra to the page size; true when
    /// there was more (a next page).
    fn keep_page<T>(&self, rows: &mut Vec<T>) -> bool {
        let size = usize::try_from(self.page_size).unwrap_or(0);
        let more = rows.len() > size;
        rows.truncate(size);
        more
    }

    async fn fleet(&self) -> Page {
        let now = Utc::now();
        let workers: Vec<Value> = self
            .catalog
            .list_workers()
            .await
            .map_err(internal)?
            .iter()
            .filter(|w| w.revoked_at.is_none())
            .map(|w| {
                json!({
                    "name": w.name, "status": w.status, "online": w.connected,
                    "version": w.agent_version, "backlog": w.outbox_backlog,
                    "last_seen": w.last_seen_at.map(|t| age(t, now)),
                })
            })
            .collect();
        let stores: Vec<Value> = self
            .catalog
            .list_store_stats(None)
            .await
            .map_err(internal)?
            .iter()
            .map(|s| {
                json!({
                    "worker": s.worker_name, "backend": s.backend, "dumps": s.dumps,
                    "logical": bytes(s.logical_bytes), "stored": bytes(s.pack_bytes),
                    "ratio": ratio(s.pack_bytes, s.logical_bytes),
                    "reported": age(s.reported_at, now),
                })
            })
            .collect();
        Ok(("fleet.html", context! { workers, stores }))
    }

    async fn jobs(&self, r: &Req) -> Page {
        let after = after(r)?;
        let mut rows = self
            .catalog
            .dashboard_jobs(after, self.page_size + 1)
            .await
            .map_err(internal)?;
        let more = self.keep_page(&mut rows);
        let now = Utc::now();
        let jobs: Vec<Value> = rows
            .iter()
            .map(|j| {
                let repeat = j.status == "ACTIVE" && j.kind == "REPEAT";
                let zone = j.worker_timezone.as_deref().unwrap_or("");
                let fire = next_fire(&j.cron, zone, now, j.last_good_at);
                json!({
                    "id": j.id, "worker": j.worker_name, "instance": j.instance_name,
                    "database": j.database, "schema": j.schema_name, "type": j.dump_type,
                    "cron": j.cron, "kind": j.kind, "status": j.status,
                    "zone": fire.zone,
                    "retention": format!("{}d {}w {}m {}y", j.keep_daily, j.keep_weekly,
                        j.keep_monthly, j.keep_yearly),
                    "last_status": j.last_status, "last_dump_id": j.last_dump_id,
                    "last_age": j.last_finished_at.map(|t| age(t, now)),
                    "next": if repeat { fire.next } else { None },
                    "stale": repeat && fire.stale,
                })
            })
            .collect();
        let next_after = more.then(|| rows.last().map(|j| j.id)).flatten();
        Ok(("jobs.html", context! { jobs, next_after }))
    }

    async fn dumps(&self, r: &Req) -> Page {
        let before = match r.query("before") {
            Some(b) => id("before", b).map_err(bad)?,
            None => i64::MAX,
        };
        let job = r
            .query("job")
            .map(|j| id("job", j))
            .transpose()
            .map_err(bad)?;
        let mut rows = self
            .catalog
            .dashboard_dumps(before, job, self.page_size + 1)
            .await
            .map_err(internal)?;
        let more = self.keep_page(&mut rows);
        let dumps: Vec<Value> = rows
            .iter()
            .map(|d| {
                json!({
                    "id": d.id, "job_id": d.job_id, "worker": d.worker_name,
                    "database": d.database, "schema": d.schema_name, "type": d.dump_type,
                    "status": d.status, "finished": time(d.finished_at),
                    "seconds": (d.finished_at - d.started_at).num_seconds(),
                    "size": bytes(d.dump_bytes), "stored": bytes(d.stored_bytes),
                    "ratio": ratio(d.stored_bytes, d.dump_bytes),
                    "verified": d.verified, "restore_verified": d.restore_verified_ok,
                    "tables": d.tables, "rows": d.table_rows, "message": cut(&d.message),
                })
            })
            .collect();
        let next_before = more.then(|| rows.last().map(|d| d.id)).flatten();
        Ok(("catalog.html", context! { dumps, next_before, job }))
    }

    async fn dump(&self, dump_id: i64) -> Page {
        let d = self.catalog.dump(dump_id).await.map_err(not_found)?;
        let instances: Vec<Value> = self
            .catalog
            .list_instances()
            .await
            .map_err(internal)?
            .iter()
            .map(|i| json!({ "id": i.id, "name": i.name }))
            .collect();
        let policies: Vec<&str> = [
            v1::ExistingDatabase::Rename,
            v1::ExistingDatabase::Leave,
            v1::ExistingDatabase::Drop,
            v1::ExistingDatabase::DropBefore,
            v1::ExistingDatabase::Truncate,
        ]
        .iter()
        .map(|p| p.as_str_name().trim_start_matches("EXISTING_DATABASE_"))
        .collect();
        let dump = json!({
            "id": d.id, "uuid": d.dump_uuid.to_string(), "job_id": d.job_id,
            "worker": d.worker_name, "host": d.host, "port": d.port,
            "database": d.database, "schema": d.schema_name, "type": d.dump_type,
            "format": d.format, "status": d.status, "started": time(d.started_at),
            "finished": time(d.finished_at), "size": bytes(d.dump_bytes),
            "stored": bytes(d.stored_bytes), "database_size": bytes(d.database_bytes),
            "server_version": d.server_version, "verified": d.verified,
            "message": d.message, "pinned": d.pinned,
            "restore_verified": d.restore_verified_method,
        });
        Ok(("dump.html", context! { dump, instances, policies }))
    }

    async fn task(&self, task_id: i64) -> Page {
        let t = self.catalog.task(task_id).await.map_err(not_found)?;
        let done = matches!(t.state.as_str(), "SUCCEEDED" | "FAILED" | "CANCELLED");
        let task = json!({
            "id": t.id, "kind": t.kind, "state": t.state, "job_id": t.job_id,
            "dump_id": t.dump_id, "error": t.error, "attempts": t.attempts,
            "created": time(t.created_at), "finished": t.finished_at.map(time),
            "phase": t.progress_phase, "done": bytes(t.progress_done),
            "restore_run_id": t.restore_run_id,
        });
        Ok(("task.html", context! { task, done }))
    }

    async fn restores(&self) -> Page {
        let req = v1::ListRestoreRunsRequest {
            limit: MAX_RESTORE_RUNS,
            ..Default::default()
        };
        let runs: Vec<Value> = self
            .catalog
            .list_restore_runs(&req)
            .await
            .map_err(internal)?
            .iter()
            .map(run_json)
            .collect();
        Ok(("restores.html", context! { runs, max => MAX_RESTORE_RUNS }))
    }

    /// Restore jobs and copies (TRIGGER restore jobs of a dump job), a page
    /// by id, each with its last run; a copy also with its source job and
    /// that job's newest dump. The same rows as ListRestoreJobs and
    /// ListCopyJobs (a copy with two targets is two rows).
    async fn restore_jobs(&self, r: &Req) -> Page {
        let after = after(r)?;
        let mut rows = self
            .catalog
            .dashboard_restore_jobs(after, self.page_size + 1)
            .await
            .map_err(internal)?;
        let more = self.keep_page(&mut rows);
        let mut jobs = Vec::with_capacity(rows.len());
        for j in &rows {
            let last = self.catalog.last_run(j.id).await.map_err(internal)?;
            let source = match j.source_job_id {
                Some(s) => Some(self.copy_source(s).await?),
                None => None,
            };
            let when = match j.kind.as_str() {
                "TRIGGER" => "after each dump of its source".to_string(),
                "REPEAT" => j.cron.clone(),
                _ => j.run_at.map_or_else(|| "as soon as possible".into(), time),
            };
            jobs.push(json!({
                "id": j.id, "kind": j.kind, "status": j.status, "when": when,
                "copy": j.kind == "TRIGGER", "source": source, "source_dump": j.source_dump_id,
                "target": format!("{}/{}", j.target_instance_name, j.target_database),
                "restore_type": j.restore_type, "existing": j.existing_database,
                "last": last.as_ref().map(run_json),
            }));
        }
        let next_after = more.then(|| rows.last().map(|j| j.id)).flatten();
        Ok(("restore_jobs.html", context! { jobs, next_after }))
    }

    /// A restore job's source dump job and its newest dump (any status).
    async fn copy_source(&self, job_id: i64) -> Result<Value, (StatusCode, String)> {
        let job = match self.catalog.job(job_id).await {
            Ok(j) => Some(j),
            Err(crate::error::ApiError::NotFound(_)) => None,
            Err(e) => return Err(internal(e)),
        };
        let last = self.catalog.last_dump(job_id).await.map_err(internal)?;
        let now = Utc::now();
        Ok(json!({
            "job_id": job_id,
            "database": job.as_ref().map(|j| j.database.clone()),
            "last_dump": last.map(|d| json!({
                "id": d.id, "status": d.status, "age": age(d.finished_at, now),
            })),
        }))
    }

    async fn restore_log(&self, run_id: i64) -> Page {
        let (run, lines) = self.catalog.restore_log(run_id).await.map_err(not_found)?;
        let skipped = lines.len().saturating_sub(MAX_LOG_LINES);
        let lines: Vec<Value> = lines[skipped..]
            .iter()
            .map(|l| json!({ "at": time(l.logged_at), "level": l.level, "text": l.text }))
            .collect();
        let run = run_json(&run);
        Ok(("restores.html", context! { run, lines, skipped }))
    }

    async fn messages(&self, r: &Req) -> Page {
        let before = match r.query("before") {
            Some(b) => id("before", b).map_err(bad)?,
            None => i64::MAX,
        };
        let min_level = match r.query("level") {
            None => 1,
            Some(l) => LEVELS
                .iter()
                .position(|n| n.eq_ignore_ascii_case(l))
                .and_then(|i| i16::try_from(i + 1).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "level {} is not one of {}",
                        quoted(&cut(l)),
                        LEVELS.join(", ")
                    ))
                })?,
        };
        let filter = MessageFilter {
            min_level,
            worker: r.query("worker").map(cut),
            job_id: r
                .query("job")
                .map(|j| id("job", j))
                .transpose()
                .map_err(bad)?,
        };
        let mut rows = self
            .catalog
            .dashboard_messages(before, &filter, self.page_size + 1)
            .await
            .map_err(internal)?;
        let more = self.keep_page(&mut rows);
        let messages: Vec<Value> = rows
            .iter()
            .map(|m| {
                json!({
                    "id": m.id, "at": time(m.logged_at), "level": level_name(m.level),
                    "class": m.class, "worker": m.worker_name, "job_id": m.job_id,
                    "text": m.text,
                })
            })
            .collect();
        let next_url = more.then(|| rows.last().map(|m| m.id)).flatten().map(|b| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("before", &b.to_string());
            q.append_pair("level", level_name(filter.min_level));
            if let Some(w) = &filter.worker {
                q.append_pair("worker", w);
            }
            if let Some(j) = filter.job_id {
                q.append_pair("job", &j.to_string());
            }
            format!("/messages?{}", q.finish())
        });
        let filter = json!({
            "level": level_name(filter.min_level), "worker": filter.worker,
            "job": filter.job_id,
        });
        Ok((
            "messages.html",
            context! { messages, next_url, filter, levels => LEVELS },
        ))
    }

    async fn unprotected(&self) -> Page {
        let now = Utc::now();
        let rows: Vec<Value> = self
            .catalog
            .dashboard_unprotected(MAX_UNPROTECTED)
            .await
            .map_err(internal)?
            .iter()
            .map(|u| {
                json!({
                    "what": u.what, "instance": u.instance_name, "database": u.database,
                    "job_id": u.job_id, "since": u.since.map(|t| age(t, now)),
                })
            })
            .collect();
        Ok((
            "unprotected.html",
            context! { rows, max => MAX_UNPROTECTED },
        ))
    }
}

type Page = Result<(&'static str, minijinja::Value), (StatusCode, String)>;

/// A job's schedule as the jobs page shows it.
#[derive(Debug, PartialEq)]
struct Fire {
    /// The zone the cron is read in (the worker's `scheduler.timezone`;
    /// UTC when it reported none or one this build does not know).
    zone: String,
    /// The next fire after now, in that zone's wall-clock time.
    next: Option<String>,
    /// True when the newest good dump is older than one period of the cron
    /// (the gap between its next two fires) plus [`STALE_SLACK`], or there
    /// is none.
    stale: bool,
}

/// Reads `cron` in the IANA zone `zone` (empty or unknown: UTC) as the
/// worker's scheduler does.
fn next_fire(
    cron: &str,
    zone: &str,
    now: DateTime<Utc>,
    last_good_at: Option<DateTime<Utc>>,
) -> Fire {
    let tz = pgsnapman_proto::retention::timezone(zone).unwrap_or(chrono_tz::Tz::UTC);
    let local = now.with_timezone(&tz);
    let cron = CronExpr::parse(cron).ok();
    let next = cron.as_ref().and_then(|c| c.next_after(&local));
    let period = next
        .as_ref()
        .and_then(|n| Some(cron.as_ref()?.next_after(n)? - *n));
    let stale = period.is_some_and(|p| last_good_at.is_none_or(|t| now - t > p + STALE_SLACK));
    Fire {
        zone: tz.name().to_string(),
        next: next.map(|n| n.format("%Y-%m-%d %H:%M %Z").to_string()),
        stale,
    }
}

fn run_json(u: &crate::rows::RestoreRunRow) -> Value {
    json!({
        "id": u.id, "job_id": u.restore_job_id, "task_id": u.task_id, "dump_id": u.dump_id,
        "worker": u.worker_name, "source": u.source_database,
        "target": format!("{}/{}", u.target_instance_name.as_deref().unwrap_or("?"), u.target),
        "status": u.status, "queued": time(u.queued_at), "finished": u.finished_at.map(time),
        "warnings": u.warnings, "error": cut(&u.error),
    })
}

fn internal(e: crate::error::ApiError) -> (StatusCode, String) {
    tracing::warn!("dashboard: catalog: {e}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "the catalog did not answer (see the coordinator's log)".into(),
    )
}

fn not_found(e: crate::error::ApiError) -> (StatusCode, String) {
    match e {
        crate::error::ApiError::NotFound(m) => (StatusCode::NOT_FOUND, cut(&m)),
        e => internal(e),
    }
}

fn bad(m: String) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("an RFC 3339 test time")
    }

    #[test]
    fn next_fire_is_read_in_the_workers_zone() {
        let now = at("2026-07-01T12:00:00Z");
        let utc = next_fire("30 2 * * *", "", now, None);
        assert_eq!(utc.zone, "UTC");
        assert_eq!(utc.next.as_deref(), Some("2026-07-02 02:30 UTC"));
        assert!(utc.stale, "no good dump at all");
        // 02:30 in Amsterdam (summer time, UTC+2) is 00:30 UTC.
        let ams = next_fire("30 2 * * *", "Europe/Amsterdam", now, None);
        assert_eq!(ams.zone, "Europe/Amsterdam");
        assert_eq!(ams.next.as_deref(), Some("2026-07-02 02:30 CEST"));
        let tokyo = next_fire("0 9 * * *", "Asia/Tokyo", now, None);
        assert_eq!(tokyo.next.as_deref(), Some("2026-07-02 09:00 JST"));
        // An unknown zone (a newer tz database on the worker) reads as UTC.
        let unknown = next_fire("30 2 * * *", "Mars/Olympus", now, None);
        assert_eq!(unknown, utc);
    }

    #[test]
    fn stale_means_no_good_dump_in_one_period_plus_slack() {
        let now = at("2026-07-01T12:00:00Z");
        let daily = |good: &str| next_fire("0 3 * * *", "Europe/Amsterdam", now, Some(at(good)));
        assert!(!daily("2026-07-01T01:00:00Z").stale, "today's dump");
        assert!(!daily("2026-06-30T11:30:00Z").stale, "within 24 h + 1 h");
        assert!(daily("2026-06-30T10:00:00Z").stale, "older than 25 h");
        let bad = next_fire("not a cron", "UTC", now, None);
        assert_eq!(bad.next, None);
        assert!(!bad.stale, "no period to judge by");
    }
}
