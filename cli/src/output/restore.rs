//! Restore jobs, restore runs with their log, and copy jobs: as JSON (proto
//! field names, labels without prefixes) and as tables.
use comfy_table::Table;
use pgsnapman_proto::v1;
use serde_json::{Value, json};

use super::json::{label, timestamp};
use super::table::{bytes, cell, duration, first_line, id, text, time, with_header, yes_no};

pub fn restore_type(t: i32) -> Value {
    label(
        v1::RestoreType::try_from(t).map_or("RESTORE_TYPE_UNSPECIFIED", |t| t.as_str_name()),
        "RESTORE_TYPE_",
    )
}

pub fn existing_database(e: i32) -> Value {
    label(
        v1::ExistingDatabase::try_from(e)
            .map_or("EXISTING_DATABASE_UNSPECIFIED", |e| e.as_str_name()),
        "EXISTING_DATABASE_",
    )
}

pub fn restore_status(s: i32) -> Value {
    label(
        v1::RestoreStatus::try_from(s).map_or("RESTORE_STATUS_UNSPECIFIED", |s| s.as_str_name()),
        "RESTORE_STATUS_",
    )
}

pub fn restore_job_kind(k: i32) -> Value {
    label(
        v1::RestoreJobKind::try_from(k).map_or("RESTORE_JOB_KIND_UNSPECIFIED", |k| k.as_str_name()),
        "RESTORE_JOB_KIND_",
    )
}

pub fn target(t: Option<&v1::RestoreTarget>) -> Value {
    let Some(t) = t else { return Value::Null };
    let map: serde_json::Map<String, Value> = t
        .tablespace_map
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "instance_id": t.instance_id,
        "database": t.database,
        "schema": t.schema,
        "restore_type": restore_type(t.restore_type),
        "existing_database": existing_database(t.existing_database),
        "roles": t.roles,
        "owner": t.owner,
        "keep_tablespaces": t.keep_tablespaces,
        "tablespace_map": map,
        "parallel_jobs": t.parallel_jobs,
        "extra_options": t.extra_options,
        "script_name": t.script_name,
    })
}

pub fn run(r: &v1::RestoreRun) -> Value {
    json!({
        "id": r.id,
        "restore_job_id": r.restore_job_id,
        "task_id": r.task_id,
        "dump_id": r.dump_id,
        "dump_uuid": r.dump_uuid,
        "worker_id": r.worker_id,
        "worker_name": r.worker_name,
        "source_database": r.source_database,
        "target": target(r.target.as_ref()),
        "target_instance_name": r.target_instance_name,
        "status": restore_status(r.status),
        "queued_at": timestamp(r.queued_at.as_ref()),
        "started_at": timestamp(r.started_at.as_ref()),
        "finished_at": timestamp(r.finished_at.as_ref()),
        "bytes_total": r.bytes_total,
        "bytes_done": r.bytes_done,
        "warnings": r.warnings,
        "error": r.error,
        "script_hash": r.script_hash,
    })
}

pub fn job(j: &v1::RestoreJob) -> Value {
    json!({
        "id": j.id,
        "kind": restore_job_kind(j.kind),
        "status": super::json::status(j.status()),
        "source_job_id": j.source_job_id,
        "source_dump_id": j.source_dump_id,
        "target": target(j.target.as_ref()),
        "target_instance_name": j.target_instance_name,
        "cron": j.cron,
        "run_at": timestamp(j.run_at.as_ref()),
        "comment": j.comment,
        "created_at": timestamp(j.created_at.as_ref()),
        "updated_at": timestamp(j.updated_at.as_ref()),
        "last_run": j.last_run.as_ref().map_or(Value::Null, run),
    })
}

pub fn log(l: &v1::RestoreLog) -> Value {
    json!({
        "run": l.run.as_ref().map_or(Value::Null, run),
        "lines": l.lines.iter().map(|x| json!({
            "id": x.id,
            "logged_at": timestamp(x.logged_at.as_ref()),
            "level": super::json::message_level(x.level()),
            "text": x.text,
        })).collect::<Vec<_>>(),
    })
}

pub fn copy_job(c: &v1::CopyJob) -> Value {
    json!({
        "dump_job": c.dump_job.as_ref().map_or(Value::Null, super::json::dump_job),
        "restore_jobs": c.restore_jobs.iter().map(job).collect::<Vec<_>>(),
        "last_dump": c.last_dump.as_ref().map_or(Value::Null, super::json::dump),
    })
}

// ───────────────────────────── tables ─────────────────────────────

/// `instance-name/db [schema s]` of a target.
fn where_to(instance: &str, t: Option<&v1::RestoreTarget>) -> String {
    let Some(t) = t else { return "-".into() };
    let mut s = format!("{}/{}", text(instance), text(&t.database));
    if !t.schema.is_empty() {
        s.push_str(&format!(" (schema {})", t.schema));
    }
    s
}

fn run_summary(r: Option<&v1::RestoreRun>) -> String {
    match r {
        Some(r) => format!(
            "{} {} (run {})",
            cell(restore_status(r.status)),
            time(
                r.finished_at
                    .as_ref()
                    .or(r.started_at.as_ref())
                    .or(r.queued_at.as_ref())
            ),
            r.id
        ),
        None => "never".into(),
    }
}

fn source(j: &v1::RestoreJob) -> String {
    if j.source_dump_id != 0 {
        format!("dump {}", j.source_dump_id)
    } else {
        format!("job {}", j.source_job_id)
    }
}

pub fn jobs(js: &[v1::RestoreJob]) -> Table {
    let mut t = with_header(&[
        "ID", "KIND", "STATUS", "SOURCE", "TARGET", "TYPE", "EXISTING", "WHEN", "LAST RUN",
    ]);
    for j in js {
        let tg = j.target.as_ref();
        t.add_row(vec![
            j.id.to_string(),
            cell(restore_job_kind(j.kind)),
            cell(super::json::status(j.status())),
            source(j),
            where_to(&j.target_instance_name, tg),
            match tg.filter(|t| !t.script_name.is_empty()) {
                Some(t) => format!("script {}", t.script_name),
                None => cell(restore_type(tg.map_or(0, |t| t.restore_type))),
            },
            cell(existing_database(tg.map_or(0, |t| t.existing_database))),
            if j.cron.is_empty() {
                time(j.run_at.as_ref()).replace('-', "asap")
            } else {
                j.cron.clone()
            },
            run_summary(j.last_run.as_ref()),
        ]);
    }
    t
}

pub fn job_rows(j: &v1::RestoreJob) -> Vec<(&'static str, String)> {
    let tg = j.target.as_ref();
    let mut map: Vec<String> = tg
        .map(|t| {
            t.tablespace_map
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        })
        .unwrap_or_default();
    map.sort();
    vec![
        ("id", j.id.to_string()),
        ("kind", cell(restore_job_kind(j.kind))),
        ("status", cell(super::json::status(j.status()))),
        ("source", source(j)),
        ("target", where_to(&j.target_instance_name, tg)),
        (
            "restore type",
            cell(restore_type(tg.map_or(0, |t| t.restore_type))),
        ),
        (
            "existing database",
            cell(existing_database(tg.map_or(0, |t| t.existing_database))),
        ),
        ("roles", yes_no(tg.is_some_and(|t| t.roles))),
        ("owner", text(tg.map_or("", |t| t.owner.as_str()))),
        (
            "keep tablespaces",
            yes_no(tg.is_some_and(|t| t.keep_tablespaces)),
        ),
        (
            "tablespace map",
            if map.is_empty() {
                "-".into()
            } else {
                map.join(", ")
            },
        ),
        (
            "parallel jobs",
            tg.map_or(0, |t| t.parallel_jobs).to_string(),
        ),
        (
            "options",
            tg.map_or("-".into(), |t| text(&t.extra_options.join(" "))),
        ),
        ("script", text(tg.map_or("", |t| t.script_name.as_str()))),
        ("cron", text(&j.cron)),
        ("run at", time(j.run_at.as_ref())),
        ("comment", text(&j.comment)),
        ("last run", run_summary(j.last_run.as_ref())),
    ]
}

pub fn runs(rs: &[v1::RestoreRun]) -> Table {
    let mut t = with_header(&[
        "RUN",
        "JOB",
        "DUMP",
        "SOURCE DB",
        "TARGET",
        "STATUS",
        "STARTED",
        "DURATION",
        "SIZE",
        "ERROR",
    ]);
    for r in rs {
        t.add_row(vec![
            r.id.to_string(),
            id(r.restore_job_id),
            r.dump_id.to_string(),
            text(&r.source_database),
            match r.target.as_ref().filter(|t| !t.script_name.is_empty()) {
                Some(t) => format!(
                    "{} by script {}",
                    where_to(&r.target_instance_name, r.target.as_ref()),
                    t.script_name
                ),
                None => where_to(&r.target_instance_name, r.target.as_ref()),
            },
            cell(restore_status(r.status)),
            time(r.started_at.as_ref()),
            duration(r.started_at.as_ref(), r.finished_at.as_ref()),
            bytes(r.bytes_total),
            first_line(&r.error, 60),
        ]);
    }
    t
}

pub fn run_rows(r: &v1::RestoreRun) -> Vec<(&'static str, String)> {
    vec![
        ("run", r.id.to_string()),
        ("restore job", id(r.restore_job_id)),
        ("task", id(r.task_id)),
        ("dump", format!("{} ({})", r.dump_id, r.dump_uuid)),
        ("source database", text(&r.source_database)),
        (
            "target",
            where_to(&r.target_instance_name, r.target.as_ref()),
        ),
        ("worker", text(&r.worker_name)),
        ("status", cell(restore_status(r.status))),
        ("queued at", time(r.queued_at.as_ref())),
        ("started at", time(r.started_at.as_ref())),
        ("finished at", time(r.finished_at.as_ref())),
        (
            "duration",
            duration(r.started_at.as_ref(), r.finished_at.as_ref()),
        ),
        (
            "restored",
            format!("{} of {}", bytes(r.bytes_done), bytes(r.bytes_total)),
        ),
        ("harmless errors", r.warnings.to_string()),
        ("error", text(&r.error)),
        (
            "script",
            match r.target.as_ref().filter(|t| !t.script_name.is_empty()) {
                Some(t) => format!("{} ({})", t.script_name, text(&r.script_hash)),
                None => "-".into(),
            },
        ),
    ]
}

pub fn log_lines(l: &v1::RestoreLog) -> Table {
    let mut t = with_header(&["TIME", "LEVEL", "TEXT"]);
    for x in &l.lines {
        t.add_row(vec![
            time(x.logged_at.as_ref()),
            cell(super::json::message_level(x.level())),
            x.text.clone(),
        ]);
    }
    t
}

pub fn copy_jobs(cs: &[v1::CopyJob]) -> Table {
    let mut t = with_header(&[
        "JOB",
        "SOURCE",
        "CRON",
        "STATUS",
        "LAST DUMP",
        "TARGET",
        "LAST RESTORE",
    ]);
    for c in cs {
        let Some(d) = c.dump_job.as_ref() else {
            continue;
        };
        let last_dump = c.last_dump.as_ref().map_or("never".to_string(), |x| {
            format!(
                "{} {} (dump {})",
                cell(super::json::dump_status(x.status())),
                time(x.finished_at.as_ref()),
                x.id
            )
        });
        for (i, r) in c.restore_jobs.iter().enumerate() {
            let first = i == 0;
            t.add_row(vec![
                if first {
                    d.id.to_string()
                } else {
                    String::new()
                },
                if first {
                    format!("instance {}/{}", d.instance_id, d.database)
                } else {
                    String::new()
                },
                if first { d.cron.clone() } else { String::new() },
                if first {
                    cell(super::json::status(d.status()))
                } else {
                    String::new()
                },
                if first {
                    last_dump.clone()
                } else {
                    String::new()
                },
                where_to(&r.target_instance_name, r.target.as_ref()),
                run_summary(r.last_run.as_ref()),
            ]);
        }
    }
    t
}
