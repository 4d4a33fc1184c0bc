//! The JSON shape of every AdminService message, written by hand: proto field
//! names, enum labels without their prefix (UNSPECIFIED is null), RFC 3339 UTC
//! timestamps (unset is null). An instance's JSON never holds a password.
use chrono::SecondsFormat;
use pgsnapman_proto::v1;
use serde_json::{Value, json};

/// An enum value's label without its type prefix (`TASK_STATE_FAILED` with
/// prefix `TASK_STATE_` is `FAILED`); null for the UNSPECIFIED value.
pub fn label(name: &str, prefix: &str) -> Value {
    let short = name.strip_prefix(prefix).unwrap_or(name);
    if short == "UNSPECIFIED" {
        Value::Null
    } else {
        Value::String(short.to_string())
    }
}

pub fn status(s: v1::Status) -> Value {
    label(s.as_str_name(), "STATUS_")
}

pub fn dump_type(t: v1::DumpType) -> Value {
    label(t.as_str_name(), "DUMP_TYPE_")
}

pub fn dump_format(f: v1::DumpFormat) -> Value {
    label(f.as_str_name(), "DUMP_FORMAT_")
}

pub fn job_kind(k: v1::JobKind) -> Value {
    label(k.as_str_name(), "JOB_KIND_")
}

pub fn dump_status(s: v1::DumpStatus) -> Value {
    label(s.as_str_name(), "DUMP_STATUS_")
}

pub fn task_state(s: v1::TaskState) -> Value {
    label(s.as_str_name(), "TASK_STATE_")
}

pub fn task_kind(k: v1::TaskKind) -> Value {
    label(k.as_str_name(), "TASK_KIND_")
}

pub fn message_level(l: v1::MessageLevel) -> Value {
    label(l.as_str_name(), "MESSAGE_LEVEL_")
}

/// RFC 3339 UTC with milliseconds; null when unset or out of range.
pub fn timestamp(t: Option<&prost_types::Timestamp>) -> Value {
    t.and_then(pgsnapman_proto::from_timestamp)
        .map(|t| Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

pub fn worker(w: &v1::Worker) -> Value {
    json!({
        "id": w.id,
        "name": w.name,
        "status": status(w.status()),
        "registered_at": timestamp(w.registered_at.as_ref()),
        "last_seen_at": timestamp(w.last_seen_at.as_ref()),
        "connected": w.connected,
        "schedule_version": w.schedule_version,
        "confirmed_schedule_version": w.confirmed_schedule_version,
        "outbox_backlog": w.outbox_backlog,
        "agent_version": w.agent_version,
        "client_majors": w.client_majors,
        "restore_worker_id": w.restore_worker_id,
        "restore_worker_name": w.restore_worker_name,
        // Computed here from the key, not taken from the coordinator.
        "seal_key_fingerprint": w.seal_key.as_ref().map(|k| pgsnapman_proto::seal::fingerprint(&k.public_key)),
        "revoked_at": timestamp(w.revoked_at.as_ref()),
        "certificate_serial": w.certificate_serial,
        "certificate_not_after": timestamp(w.certificate_not_after.as_ref()),
    })
}

/// The state of an instance's password on one worker: `sealed`, `stale`,
/// `missing` or `legacy`.
pub fn password_state(s: v1::PasswordState) -> String {
    s.as_str_name()
        .trim_start_matches("PASSWORD_STATE_")
        .to_lowercase()
}

pub fn instance(i: &v1::Instance) -> Value {
    json!({
        "id": i.id,
        "name": i.name,
        "host": i.host,
        "port": i.port,
        "user": i.user,
        "has_password": i.has_password,
        "sslmode": i.sslmode,
        "maintenance_db": i.maintenance_db,
        "status": status(i.status()),
        "default_worker_id": i.default_worker_id,
        "server_version": i.server_version,
        "comment": i.comment,
        "created_at": timestamp(i.created_at.as_ref()),
        "auto_discover": i.auto_discover,
        "discover": if i.discover_report_only { "report" } else { "create" },
        "backup_window_start": i.backup_window_start,
        "backup_window_end": i.backup_window_end,
        "discovered_status": status(i.discovered_status()),
        "discovered_retention": retention(i.discovered_retention.as_ref()),
        "passwords": i.passwords.iter().map(|p| json!({
            "worker_id": p.worker_id,
            "worker_name": p.worker_name,
            "state": password_state(p.state()),
            "key_fingerprint": p.key_fingerprint,
            "set_at": timestamp(p.set_at.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

pub fn retention(r: Option<&v1::Retention>) -> Value {
    match r {
        Some(r) => json!({
            "keep_daily": r.keep_daily,
            "keep_weekly": r.keep_weekly,
            "keep_monthly": r.keep_monthly,
            "keep_yearly": r.keep_yearly,
        }),
        None => Value::Null,
    }
}

pub fn dump_job(j: &v1::DumpJob) -> Value {
    json!({
        "id": j.id,
        "worker_id": j.worker_id,
        "instance_id": j.instance_id,
        "database": j.database,
        "schema": j.schema,
        "dump_type": dump_type(j.dump_type()),
        "format": dump_format(j.format()),
        "extra_options": j.extra_options,
        "cron": j.cron,
        "kind": job_kind(j.kind()),
        "status": status(j.status()),
        "retention": retention(j.retention.as_ref()),
        "comment": j.comment,
        "created_at": timestamp(j.created_at.as_ref()),
        "updated_at": timestamp(j.updated_at.as_ref()),
        "parallel_jobs": j.parallel_jobs,
        "pause_replay": j.pause_replay,
        "on_demand": j.on_demand,
        "script_name": j.script_name,
        "verify_cron": j.verify_cron,
        "verify_method": j.verify_method,
        "verify_instance_id": j.verify_instance_id,
        "verify_checks": j.verify_checks,
    })
}

pub fn dump(d: &v1::Dump) -> Value {
    json!({
        "id": d.id,
        "dump_uuid": d.dump_uuid,
        "job_id": d.job_id,
        "worker_id": d.worker_id,
        "instance_id": d.instance_id,
        "host": d.host,
        "port": d.port,
        "database": d.database,
        "schema": d.schema,
        "dump_type": dump_type(d.dump_type()),
        "format": dump_format(d.format()),
        "status": dump_status(d.status()),
        "started_at": timestamp(d.started_at.as_ref()),
        "finished_at": timestamp(d.finished_at.as_ref()),
        "dump_bytes": d.dump_bytes,
        "stored_bytes": d.stored_bytes,
        "dedup_ratio": dedup_ratio(d.dump_bytes, d.stored_bytes),
        "database_bytes": d.database_bytes,
        "server_version": d.server_version,
        "client_version": d.client_version,
        "location": d.location,
        "message": d.message,
        "task_id": d.task_id,
        "worker_name": d.worker_name,
        "verified": d.verified,
        "verified_at": timestamp(d.verified_at.as_ref()),
        // Rows per table counted at dump time (catalog show only).
        "table_rows": d.table_rows.iter().map(|t| json!({
            "database": t.database,
            "schema": t.schema,
            "table": t.table,
            "rows": t.rows,
        })).collect::<Vec<_>>(),
        "table_rows_counted": d.table_rows_counted,
        // The last `pgsnap verify now` (null: never); not `verified`.
        "restore_verified": (!d.restore_verified_method.is_empty()).then(|| json!({
            "method": d.restore_verified_method,
            "at": timestamp(d.restore_verified_at.as_ref()),
            "ok": d.restore_verified_ok,
            "detail": serde_json::from_str::<Value>(&d.restore_verified_detail_json).ok(),
        })),
        "table_rows_error": d.table_rows_error,
        "pinned": d.pinned,
        // A JSON document from the worker; null when none was captured.
        "restore_metadata": serde_json::from_str::<Value>(&d.restore_metadata_json).ok(),
        // SCRIPT dumps: the hash of the script version that made it.
        "script_hash": d.script_hash,
    })
}

pub fn message(m: &v1::Message) -> Value {
    json!({
        "id": m.id,
        "logged_at": timestamp(m.logged_at.as_ref()),
        "level": message_level(m.level()),
        "class": m.class,
        "worker_id": m.worker_id,
        "job_id": m.job_id,
        "text": m.text,
        "worker_name": m.worker_name,
    })
}

pub fn progress(p: Option<&v1::Progress>) -> Value {
    match p {
        Some(p) => json!({
            "phase": p.phase,
            "bytes_done": p.bytes_done,
            "bytes_total": p.bytes_total,
        }),
        None => Value::Null,
    }
}

pub fn task(t: &v1::Task) -> Value {
    json!({
        "id": t.id,
        "kind": task_kind(t.kind()),
        "state": task_state(t.state()),
        "worker_id": t.worker_id,
        "job_id": t.job_id,
        "attempts": t.attempts,
        "max_attempts": t.max_attempts,
        "created_at": timestamp(t.created_at.as_ref()),
        "started_at": timestamp(t.started_at.as_ref()),
        "finished_at": timestamp(t.finished_at.as_ref()),
        "leased_until": timestamp(t.leased_until.as_ref()),
        "error": t.error,
        "dump_id": t.dump_id,
        "progress": progress(t.progress.as_ref()),
        // What the task found or did (verify report, gc figures); null until it ends.
        "result": serde_json::from_str::<Value>(&t.result_json).ok(),
    })
}

/// Bytes pg_dump wrote per byte the dump added to the store: what dedup and
/// compression saved together. Null when the dump stored nothing new (a
/// ratio would be infinite) or wrote nothing.
pub fn dedup_ratio(dump_bytes: u64, stored_bytes: u64) -> Value {
    if dump_bytes == 0 || stored_bytes == 0 {
        return Value::Null;
    }
    // Display precision only.
    #[allow(clippy::cast_precision_loss)]
    let r = dump_bytes as f64 / stored_bytes as f64;
    json!((r * 100.0).round() / 100.0)
}

pub fn store_stats(s: &v1::StoreStats) -> Value {
    json!({
        "worker_id": s.worker_id,
        "worker_name": s.worker_name,
        "reported_at": timestamp(s.reported_at.as_ref()),
        "dumps": s.dumps,
        "logical_bytes": s.logical_bytes,
        "pack_bytes": s.pack_bytes,
        "dedup_ratio": dedup_ratio(s.logical_bytes, s.pack_bytes),
        "packs": s.packs,
        "chunks": s.chunks,
        "unique_raw_bytes": s.unique_raw_bytes,
        "stored_bytes": s.stored_bytes,
        "free_bytes": s.free_bytes,
        "backend": s.backend,
        "backend_location": s.backend_location,
        "cache_bytes": s.cache_bytes,
        "cache_limit": s.cache_limit,
        "encrypted": s.encrypted,
        "key_id": s.key_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos })
    }

    #[test]
    fn enum_labels_drop_the_prefix_and_unspecified_is_null() {
        assert_eq!(task_state(v1::TaskState::Succeeded), json!("SUCCEEDED"));
        assert_eq!(task_state(v1::TaskState::Unspecified), Value::Null);
        assert_eq!(
            dump_type(v1::DumpType::ClusterSchema),
            json!("CLUSTER_SCHEMA")
        );
        assert_eq!(dump_format(v1::DumpFormat::Custom), json!("CUSTOM"));
        assert_eq!(status(v1::Status::Halted), json!("HALTED"));
        assert_eq!(job_kind(v1::JobKind::Single), json!("SINGLE"));
        assert_eq!(dump_status(v1::DumpStatus::Removing), json!("REMOVING"));
        assert_eq!(task_kind(v1::TaskKind::Dump), json!("DUMP"));
        assert_eq!(message_level(v1::MessageLevel::Warning), json!("WARNING"));
        // Labels agree with the shared model's.
        for t in [
            v1::DumpType::Full,
            v1::DumpType::Globals,
            v1::DumpType::Script,
        ] {
            assert_eq!(dump_type(t), json!(t.label()));
        }
    }

    #[test]
    fn dump_json_has_proto_field_names_and_plain_values() {
        let d = v1::Dump {
            id: 9,
            dump_uuid: "0190a0b0-0000-7000-8000-000000000000".into(),
            job_id: 3,
            worker_id: 2,
            instance_id: 1,
            host: "127.0.0.1".into(),
            port: 5432,
            database: "My \"odd\" db".into(),
            dump_type: v1::DumpType::Full as i32,
            format: v1::DumpFormat::Custom as i32,
            status: v1::DumpStatus::Succeeded as i32,
            started_at: ts(1_767_225_600, 0),
            finished_at: ts(1_767_225_601, 250_000_000),
            dump_bytes: u64::MAX,
            stored_bytes: 10,
            database_bytes: -1,
            ..Default::default()
        };
        let v = dump(&d);
        assert_eq!(v["id"], 9);
        assert_eq!(v["database"], "My \"odd\" db");
        assert_eq!(v["dump_type"], "FULL");
        assert_eq!(v["format"], "CUSTOM");
        assert_eq!(v["status"], "SUCCEEDED");
        assert_eq!(v["started_at"], "2026-01-01T00:00:00.000Z");
        assert_eq!(v["finished_at"], "2026-01-01T00:00:01.250Z");
        assert_eq!(v["dump_bytes"].as_u64(), Some(u64::MAX));
        assert_eq!(v["database_bytes"].as_i64(), Some(-1));
        assert_eq!(v["schema"], "");
        // Every proto field (the metadata JSON string becomes an object),
        // plus the derived dedup_ratio.
        assert_eq!(v.as_object().map(|o| o.len()), Some(33));
        assert_eq!(v["table_rows"], json!([]));
        assert_eq!(v["table_rows_counted"], false);
        assert_eq!(v["pinned"], false);
        assert!(v["restore_verified"].is_null(), "never verified");
        assert!(v["dedup_ratio"].as_f64().unwrap() > 1e17);
        assert_eq!(v["verified"], "");
        assert!(v["verified_at"].is_null());
        assert!(v["restore_metadata"].is_null(), "no document: null");
        let mut d = d;
        d.restore_metadata_json = r#"{"format_version": 1, "owner": "o"}"#.into();
        assert_eq!(dump(&d)["restore_metadata"]["owner"], "o");
    }

    #[test]
    fn dedup_ratio_is_rounded_and_null_without_stored_bytes() {
        assert_eq!(dedup_ratio(1000, 300), json!(3.33));
        assert_eq!(dedup_ratio(1000, 0), Value::Null);
        assert_eq!(dedup_ratio(0, 0), Value::Null);
    }

    #[test]
    fn task_json_has_null_for_unset_times_and_progress() {
        let mut t = v1::Task {
            id: 5,
            kind: v1::TaskKind::Dump as i32,
            state: v1::TaskState::Queued as i32,
            job_id: 3,
            max_attempts: 3,
            created_at: ts(1_767_225_600, 0),
            ..Default::default()
        };
        let v = task(&t);
        assert_eq!(v["state"], "QUEUED");
        assert_eq!(v["kind"], "DUMP");
        assert_eq!(v["started_at"], Value::Null);
        assert_eq!(v["progress"], Value::Null);
        assert_eq!(v["dump_id"], 0);
        t.progress = Some(v1::Progress {
            phase: "dumping".into(),
            bytes_done: 10,
            bytes_total: 0,
        });
        let v = task(&t);
        assert_eq!(
            v["progress"],
            json!({"phase": "dumping", "bytes_done": 10, "bytes_total": 0})
        );
    }

    #[test]
    fn instance_json_never_has_a_password_field() {
        let i = v1::Instance {
            id: 1,
            name: "src".into(),
            has_password: true,
            ..Default::default()
        };
        let v = instance(&i);
        assert_eq!(v["has_password"], true);
        assert!(v.get("password").is_none());
        assert_eq!(v["status"], Value::Null);
    }
}
