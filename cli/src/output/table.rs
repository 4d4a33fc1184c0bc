//! Tables for people: one list table and one key/value row set per message
//! type, with sizes in binary units and times in the local zone to the second.
use chrono::{Local, SecondsFormat};
use comfy_table::{ContentArrangement, Table, presets};
use pgsnapman_proto::v1;
use serde_json::Value;

use super::json;

/// A borderless table with a header row, wrapped to the terminal if any.
pub fn with_header(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    t
}

/// A two-column table: one field per row.
pub fn key_value(rows: Vec<(&'static str, String)>) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic);
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v]);
    }
    t
}

// ───────────────────────────── cell formats ─────────────────────────────

/// A JSON label as a cell: the text, or `-` for null.
pub(super) fn cell(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// A string cell; `-` when empty.
pub(crate) fn text(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// An id cell; `-` for 0 (no such object).
pub(super) fn id(n: i64) -> String {
    if n == 0 {
        "-".to_string()
    } else {
        n.to_string()
    }
}

pub(super) fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// Local time to the second (RFC 3339); `-` when unset.
pub fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(pgsnapman_proto::from_timestamp)
        .map(|t| {
            t.with_timezone(&Local)
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        })
        .unwrap_or_else(|| "-".to_string())
}

/// `1.5 GiB`-style size.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    // Precision loss above 2^53 bytes does not matter for one decimal.
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Time between two timestamps (`850ms`, `42s`, `3m05s`, `2h07m`); `-` if
/// either is unset.
pub fn duration(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
) -> String {
    let (Some(s), Some(e)) = (
        start.and_then(pgsnapman_proto::from_timestamp),
        end.and_then(pgsnapman_proto::from_timestamp),
    ) else {
        return "-".to_string();
    };
    let ms = (e - s).num_milliseconds().max(0);
    short_duration(ms)
}

fn short_duration(ms: i64) -> String {
    let secs = ms / 1000;
    match secs {
        0 => format!("{ms}ms"),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// The first line of a long text, cut to `max` characters, for list cells.
pub(super) fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        text(line)
    }
}

fn retention(r: Option<&v1::Retention>) -> String {
    match r {
        Some(r) => format!(
            "{}d/{}w/{}m/{}y",
            r.keep_daily, r.keep_weekly, r.keep_monthly, r.keep_yearly
        ),
        None => "-".to_string(),
    }
}

fn progress(p: Option<&v1::Progress>) -> String {
    match p {
        Some(p) if p.bytes_total > 0 => format!(
            "{} {} of {}",
            p.phase,
            bytes(p.bytes_done),
            bytes(p.bytes_total)
        ),
        Some(p) => format!("{} {}", p.phase, bytes(p.bytes_done)),
        None => "-".to_string(),
    }
}

// ───────────────────────────── workers ─────────────────────────────

fn schedule(w: &v1::Worker) -> String {
    if w.confirmed_schedule_version == w.schedule_version {
        format!("v{} in sync", w.schedule_version)
    } else {
        format!(
            "v{} behind v{}",
            w.confirmed_schedule_version, w.schedule_version
        )
    }
}

pub fn workers(ws: &[v1::Worker]) -> Table {
    let mut t = with_header(&[
        "ID",
        "NAME",
        "STATUS",
        "LINK",
        "LAST SEEN",
        "SCHEDULE",
        "OUTBOX",
    ]);
    for w in ws {
        t.add_row(vec![
            w.id.to_string(),
            w.name.clone(),
            cell(json::status(w.status())),
            link(w, chrono::Utc::now()),
            time(w.last_seen_at.as_ref()),
            schedule(w),
            w.outbox_backlog.to_string(),
        ]);
    }
    t
}

/// `online`, `offline 5m 3s` (since last seen) or `never seen`.
fn link(w: &v1::Worker, now: chrono::DateTime<chrono::Utc>) -> String {
    if w.connected {
        return "online".to_string();
    }
    match w
        .last_seen_at
        .as_ref()
        .and_then(pgsnapman_proto::from_timestamp)
    {
        Some(seen) => {
            let secs = u64::try_from((now - seen).num_seconds()).unwrap_or(0);
            format!(
                "offline {}",
                humantime::format_duration(std::time::Duration::from_secs(secs))
            )
        }
        None => "never seen".to_string(),
    }
}

pub fn worker_rows(w: &v1::Worker) -> Vec<(&'static str, String)> {
    let majors: Vec<String> = w.client_majors.iter().map(u32::to_string).collect();
    vec![
        ("id", w.id.to_string()),
        ("name", w.name.clone()),
        ("status", cell(json::status(w.status()))),
        ("connected", yes_no(w.connected)),
        ("registered at", time(w.registered_at.as_ref())),
        ("last seen at", time(w.last_seen_at.as_ref())),
        ("schedule version", w.schedule_version.to_string()),
        (
            "confirmed schedule version",
            w.confirmed_schedule_version.to_string(),
        ),
        ("outbox backlog", w.outbox_backlog.to_string()),
        ("agent version", text(&w.agent_version)),
        ("client majors", text(&majors.join(", "))),
        (
            "restores run on",
            if w.restore_worker_name.is_empty() {
                "this worker".to_string()
            } else {
                w.restore_worker_name.clone()
            },
        ),
        (
            "seal key",
            w.seal_key.as_ref().map_or_else(
                || "none yet (the worker has not connected)".to_string(),
                |k| pgsnapman_proto::seal::fingerprint(&k.public_key),
            ),
        ),
        ("certificate", text(&w.certificate_serial)),
        (
            "certificate valid until",
            time(w.certificate_not_after.as_ref()),
        ),
        ("revoked at", time(w.revoked_at.as_ref())),
    ]
}

// ───────────────────────────── instances ─────────────────────────────

pub fn instances(is: &[v1::Instance]) -> Table {
    let mut t = with_header(&[
        "ID", "NAME", "HOST", "PORT", "USER", "PASSWORD", "SSLMODE", "WORKER", "STATUS", "VERSION",
        "DISCOVER", "COMMENT",
    ]);
    for i in is {
        t.add_row(vec![
            i.id.to_string(),
            i.name.clone(),
            i.host.clone(),
            i.port.to_string(),
            i.user.clone(),
            yes_no(i.has_password),
            text(&i.sslmode),
            id(i.default_worker_id),
            cell(json::status(i.status())),
            text(&i.server_version),
            if i.auto_discover {
                window(i)
            } else {
                "off".to_string()
            },
            first_line(&i.comment, 40),
        ]);
    }
    t
}

/// `sealed for w1 (key …); missing for w2`, or that there is none.
fn passwords(i: &v1::Instance) -> String {
    if !i.has_password {
        return "none (worker's password file)".to_string();
    }
    let list: Vec<String> = i
        .passwords
        .iter()
        .map(|p| match p.key_fingerprint.as_str() {
            "" => format!("{} for {}", json::password_state(p.state()), p.worker_name),
            fp => format!(
                "{} for {} (key {fp})",
                json::password_state(p.state()),
                p.worker_name
            ),
        })
        .collect();
    if list.is_empty() {
        "stored".to_string()
    } else {
        list.join("; ")
    }
}

pub fn instance_rows(i: &v1::Instance) -> Vec<(&'static str, String)> {
    vec![
        ("id", i.id.to_string()),
        ("name", i.name.clone()),
        ("host", i.host.clone()),
        ("port", i.port.to_string()),
        ("user", i.user.clone()),
        ("password", passwords(i)),
        ("sslmode", text(&i.sslmode)),
        ("maintenance db", i.maintenance_db.clone()),
        ("status", cell(json::status(i.status()))),
        ("default worker", id(i.default_worker_id)),
        ("server version", text(&i.server_version)),
        ("comment", text(&i.comment)),
        ("created at", time(i.created_at.as_ref())),
        ("auto-discover", yes_no(i.auto_discover)),
        (
            "discover",
            if i.discover_report_only {
                "report (no job added)".to_string()
            } else {
                "create jobs".to_string()
            },
        ),
        ("backup window", window(i)),
        (
            "discovered jobs",
            format!(
                "{}, keep {}",
                cell(json::status(i.discovered_status())),
                retention(i.discovered_retention.as_ref())
            ),
        ),
    ]
}

/// `02:00-06:00`; `whole day` when start and end are equal.
fn window(i: &v1::Instance) -> String {
    if i.backup_window_start == i.backup_window_end {
        "whole day".to_string()
    } else {
        format!(
            "{:02}:00-{:02}:00",
            i.backup_window_start, i.backup_window_end
        )
    }
}

// ───────────────────────────── dump jobs ─────────────────────────────

pub fn dump_jobs(js: &[v1::DumpJob]) -> Table {
    let mut t = with_header(&[
        "ID", "INSTANCE", "WORKER", "DATABASE", "SCHEMA", "TYPE", "FORMAT", "CRON", "KIND",
        "STATUS", "KEEP",
    ]);
    for j in js {
        t.add_row(vec![
            j.id.to_string(),
            j.instance_id.to_string(),
            id(j.worker_id),
            text(&j.database),
            text(&j.schema),
            cell(json::dump_type(j.dump_type())),
            cell(json::dump_format(j.format())),
            j.cron.clone(),
            cell(json::job_kind(j.kind())),
            cell(json::status(j.status())),
            retention(j.retention.as_ref()),
        ]);
    }
    t
}

pub fn dump_job_rows(j: &v1::DumpJob) -> Vec<(&'static str, String)> {
    vec![
        ("id", j.id.to_string()),
        ("instance", j.instance_id.to_string()),
        ("worker", id(j.worker_id)),
        ("database", text(&j.database)),
        ("schema", text(&j.schema)),
        ("type", cell(json::dump_type(j.dump_type()))),
        ("format", cell(json::dump_format(j.format()))),
        ("extra options", text(&j.extra_options.join(" "))),
        ("script", text(&j.script_name)),
        ("parallel jobs", j.parallel_jobs.to_string()),
        ("cron", j.cron.clone()),
        ("kind", cell(json::job_kind(j.kind()))),
        ("status", cell(json::status(j.status()))),
        ("retention", retention(j.retention.as_ref())),
        ("verification", verification(j)),
        ("comment", text(&j.comment)),
        ("created at", time(j.created_at.as_ref())),
        ("updated at", time(j.updated_at.as_ref())),
    ]
}

/// A job's scheduled verification: `off`, or the cron, the method, where
/// it restores and how many checks it runs.
fn verification(j: &v1::DumpJob) -> String {
    if j.verify_cron.is_empty() {
        return "off".to_string();
    }
    let mut s = format!("{} ({})", j.verify_method, j.verify_cron);
    if j.verify_method == "restore" {
        if j.verify_instance_id == 0 {
            s.push_str(", into the job's instance");
        } else {
            s.push_str(&format!(", into instance {}", j.verify_instance_id));
        }
        if !j.verify_checks.is_empty() {
            s.push_str(&format!(", {} check(s)", j.verify_checks.len()));
        }
    }
    s
}

// ───────────────────────────── dumps ─────────────────────────────

pub fn dumps(ds: &[v1::Dump]) -> Table {
    let mut t = with_header(&[
        "ID", "JOB", "WORKER", "DATABASE", "TYPE", "STATUS", "STARTED", "DURATION", "SIZE",
        "STORED", "DEDUP", "VERIFIED",
    ]);
    for d in ds {
        t.add_row(vec![
            d.id.to_string(),
            d.job_id.to_string(),
            text(&d.worker_name),
            text(&d.database),
            cell(json::dump_type(d.dump_type())),
            cell(json::dump_status(d.status())),
            time(d.started_at.as_ref()),
            duration(d.started_at.as_ref(), d.finished_at.as_ref()),
            bytes(d.dump_bytes),
            bytes(d.stored_bytes),
            ratio(d.dump_bytes, d.stored_bytes),
            restore_verified_cell(d),
        ]);
    }
    t
}

/// `catalog list`'s VERIFIED: `never`, `ok DATE` or `FAILED DATE` (the last
/// `pgsnap verify now`; not the store's chunk check).
fn restore_verified_cell(d: &v1::Dump) -> String {
    if d.restore_verified_method.is_empty() {
        return "never".to_string();
    }
    let date = d
        .restore_verified_at
        .as_ref()
        .and_then(pgsnapman_proto::from_timestamp)
        .map_or_else(
            || "?".to_string(),
            |t| t.with_timezone(&Local).format("%Y-%m-%d").to_string(),
        );
    if d.restore_verified_ok {
        format!("ok {date}")
    } else {
        format!("FAILED {date}")
    }
}

/// `catalog show`'s last verification: method, time, outcome and what
/// failed.
fn restore_verified_line(d: &v1::Dump) -> String {
    if d.restore_verified_method.is_empty() {
        return "never".to_string();
    }
    let v: serde_json::Value =
        serde_json::from_str(&d.restore_verified_detail_json).unwrap_or_default();
    let head = format!(
        "{} by {} at {}",
        if d.restore_verified_ok {
            "ok"
        } else {
            "FAILED"
        },
        d.restore_verified_method,
        time(d.restore_verified_at.as_ref())
    );
    let mut parts = Vec::new();
    if let Some(n) = v["tables_checked"].as_u64().filter(|n| *n > 0) {
        parts.push(format!("{n} table(s) compared"));
    }
    if let Some(e) = v["error"].as_str().filter(|e| !e.is_empty()) {
        parts.push(e.to_string());
    }
    for m in v["mismatches"].as_array().into_iter().flatten() {
        parts.push(format!(
            "table {}.{}: expected {}, found {}",
            m["schema"].as_str().unwrap_or("?"),
            m["table"].as_str().unwrap_or("?"),
            m["expected"],
            if m["found"].as_i64() == Some(-1) {
                "missing".to_string()
            } else {
                m["found"].to_string()
            }
        ));
    }
    for c in v["failed_checks"].as_array().into_iter().flatten() {
        parts.push(format!("check failed: {}", c.as_str().unwrap_or("?")));
    }
    if parts.is_empty() {
        head
    } else {
        format!("{head}: {}", parts.join("; "))
    }
}

/// `12.3x`, `-` for nothing written, `all dedup` when nothing new was stored.
fn ratio(logical: u64, stored: u64) -> String {
    match json::dedup_ratio(logical, stored).as_f64() {
        Some(r) => format!("{r:.1}x"),
        None if logical > 0 => "all dedup".to_string(),
        None => "-".to_string(),
    }
}

pub fn store_stats(ss: &[v1::StoreStats]) -> Table {
    let mut t = with_header(&[
        "WORKER", "REPORTED", "DUMPS", "LOGICAL", "STORED", "DEDUP", "PACKS", "CHUNKS", "FREE",
        "BACKEND",
    ]);
    for s in ss {
        t.add_row(vec![
            text(&s.worker_name),
            time(s.reported_at.as_ref()),
            s.dumps.to_string(),
            bytes(s.logical_bytes),
            bytes(s.pack_bytes),
            ratio(s.logical_bytes, s.pack_bytes),
            s.packs.to_string(),
            s.chunks.to_string(),
            bytes(s.free_bytes),
            backend(s),
        ]);
    }
    t
}

/// `local`, or `s3 <endpoint> bucket/prefix (cache used/bound)`; then
/// `, encrypted (key <id>)` for an encrypted store.
fn backend(s: &v1::StoreStats) -> String {
    let kind = backend_kind(s);
    if s.encrypted {
        format!("{kind}, encrypted (key {})", text(&s.key_id))
    } else {
        kind
    }
}

fn backend_kind(s: &v1::StoreStats) -> String {
    match s.backend.as_str() {
        "" | "local" => "local".into(),
        kind => format!(
            "{kind} {} (cache {}/{})",
            text(&s.backend_location),
            bytes(s.cache_bytes),
            bytes(s.cache_limit)
        ),
    }
}

/// One line: owner, encoding/locale, tablespace and the roles captured.
fn restore_metadata(doc: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(doc) else {
        return "-".to_string();
    };
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
    let roles: Vec<&str> = v["roles"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    format!(
        "owner {}, {} {}/{}, tablespace {}, roles: {}",
        s("owner"),
        s("encoding"),
        s("collate"),
        s("ctype"),
        s("tablespace"),
        roles.join(", ")
    )
}

pub fn dump_rows(d: &v1::Dump) -> Vec<(&'static str, String)> {
    let database_bytes =
        u64::try_from(d.database_bytes).map_or_else(|_| "unknown".to_string(), bytes);
    vec![
        ("id", d.id.to_string()),
        ("uuid", d.dump_uuid.clone()),
        ("job", d.job_id.to_string()),
        ("task", id(d.task_id)),
        (
            "worker",
            format!("{} ({})", text(&d.worker_name), d.worker_id),
        ),
        ("instance", d.instance_id.to_string()),
        ("server", format!("{}:{}", d.host, d.port)),
        ("database", text(&d.database)),
        ("schema", text(&d.schema)),
        ("type", cell(json::dump_type(d.dump_type()))),
        ("format", cell(json::dump_format(d.format()))),
        ("status", cell(json::dump_status(d.status()))),
        ("started at", time(d.started_at.as_ref())),
        ("finished at", time(d.finished_at.as_ref())),
        (
            "duration",
            duration(d.started_at.as_ref(), d.finished_at.as_ref()),
        ),
        ("dump size", bytes(d.dump_bytes)),
        ("stored", bytes(d.stored_bytes)),
        ("dedup", ratio(d.dump_bytes, d.stored_bytes)),
        (
            "verified",
            if d.verified_at.is_some() {
                format!("{} at {}", text(&d.verified), time(d.verified_at.as_ref()))
            } else {
                text(&d.verified)
            },
        ),
        ("restore verified", restore_verified_line(d)),
        ("row counts", row_counts(d)),
        ("database size", database_bytes),
        ("pinned", yes_no(d.pinned)),
        ("server version", text(&d.server_version)),
        ("client version", text(&d.client_version)),
        ("location", text(&d.location)),
        ("message", text(&d.message)),
        ("script", text(&d.script_hash)),
        (
            "restore metadata",
            restore_metadata(&d.restore_metadata_json),
        ),
    ]
}

/// What the rows counted at dump time amount to.
fn row_counts(d: &v1::Dump) -> String {
    if !d.table_rows_error.is_empty() {
        return format!("unavailable: {}", d.table_rows_error);
    }
    if !d.table_rows_counted {
        return "not counted".to_string();
    }
    let rows: u64 = d.table_rows.iter().map(|t| t.rows).sum();
    format!("{} table(s), {rows} row(s)", d.table_rows.len())
}

/// The rows of each table of a dump, counted when it was taken.
pub fn table_rows(d: &v1::Dump) -> Table {
    let cluster = d.table_rows.iter().any(|t| !t.database.is_empty());
    let mut header = vec!["SCHEMA", "TABLE", "ROWS"];
    if cluster {
        header.insert(0, "DATABASE");
    }
    let mut t = with_header(&header);
    for r in &d.table_rows {
        let mut row = vec![r.schema.clone(), r.table.clone(), r.rows.to_string()];
        if cluster {
            row.insert(0, r.database.clone());
        }
        t.add_row(row);
    }
    t
}

// ───────────────────────────── tasks ─────────────────────────────

pub fn tasks(ts: &[v1::Task]) -> Table {
    let mut t = with_header(&[
        "ID", "KIND", "JOB", "WORKER", "STATE", "ATTEMPTS", "CREATED", "DURATION", "DUMP", "ERROR",
    ]);
    for task in ts {
        t.add_row(vec![
            task.id.to_string(),
            cell(json::task_kind(task.kind())),
            id(task.job_id),
            id(task.worker_id),
            cell(json::task_state(task.state())),
            format!("{}/{}", task.attempts, task.max_attempts),
            time(task.created_at.as_ref()),
            duration(task.started_at.as_ref(), task.finished_at.as_ref()),
            id(task.dump_id),
            first_line(&task.error, 60),
        ]);
    }
    t
}

pub fn task_rows(t: &v1::Task) -> Vec<(&'static str, String)> {
    vec![
        ("id", t.id.to_string()),
        ("kind", cell(json::task_kind(t.kind()))),
        ("state", cell(json::task_state(t.state()))),
        ("job", id(t.job_id)),
        ("worker", id(t.worker_id)),
        ("attempts", format!("{} of {}", t.attempts, t.max_attempts)),
        ("created at", time(t.created_at.as_ref())),
        ("started at", time(t.started_at.as_ref())),
        ("finished at", time(t.finished_at.as_ref())),
        ("leased until", time(t.leased_until.as_ref())),
        ("progress", progress(t.progress.as_ref())),
        ("dump", id(t.dump_id)),
        ("error", text(&t.error)),
        ("result", text(&t.result_json)),
    ]
}

/// One line of progress for a terminal: `task 5 LEASED dumping 1.2 MiB`.
pub fn task_progress_line(t: &v1::Task) -> String {
    let state = cell(json::task_state(t.state()));
    match t.progress.as_ref() {
        Some(_) => format!("task {} {state} {}", t.id, progress(t.progress.as_ref())),
        None => format!("task {} {state}", t.id),
    }
}

// ───────────────────────────── messages ─────────────────────────────

pub fn messages(ms: &[v1::Message]) -> Table {
    let mut t = with_header(&["TIME", "LEVEL", "CLASS", "WORKER", "JOB", "TEXT"]);
    for m in ms {
        let worker = if m.worker_name.is_empty() {
            id(m.worker_id)
        } else {
            m.worker_name.clone()
        };
        t.add_row(vec![
            time(m.logged_at.as_ref()),
            cell(json::message_level(m.level())),
            text(&m.class),
            worker,
            id(m.job_id),
            m.text.clone(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_column_tells_offline_time() {
        let now = chrono::Utc::now();
        let mut w = v1::Worker {
            connected: true,
            ..Default::default()
        };
        assert_eq!(link(&w, now), "online");
        w.connected = false;
        assert_eq!(link(&w, now), "never seen");
        w.last_seen_at = Some(pgsnapman_proto::timestamp(
            now - chrono::Duration::seconds(125),
        ));
        assert_eq!(link(&w, now), "offline 2m 5s");
    }

    #[test]
    fn sizes_are_human_readable() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(850), "850ms");
        assert_eq!(short_duration(42_000), "42s");
        assert_eq!(short_duration(185_000), "3m05s");
        assert_eq!(short_duration(7_620_000), "2h07m");
        let a = prost_types::Timestamp {
            seconds: 100,
            nanos: 0,
        };
        assert_eq!(duration(Some(&a), None), "-");
    }

    #[test]
    fn long_texts_are_cut_to_their_first_line() {
        assert_eq!(first_line("short", 10), "short");
        assert_eq!(first_line("line one\nline two", 60), "line one");
        assert_eq!(first_line("abcdefghijk", 5), "abcd…");
        assert_eq!(first_line("", 5), "-");
    }
}
