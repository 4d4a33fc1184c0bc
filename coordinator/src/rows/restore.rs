//! Rows of restore jobs, restore runs and the restore log, and the JSON form
//! of a `RestoreTarget` kept with every run (documented in docs/protocol.md).
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use pgsnapman_proto::timestamp;
use pgsnapman_proto::v1;
use serde_json::{Value, json};

use super::{
    existing_database_label, existing_database_value, restore_job_kind_value, restore_status_value,
    restore_type_label, restore_type_value, status_value, ts, u32_of,
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RestoreJobRow {
    pub id: i64,
    pub kind: String,
    pub status: String,
    pub source_job_id: Option<i64>,
    pub source_dump_id: Option<i64>,
    pub target_instance_id: i64,
    pub target_instance_name: String,
    pub target_database: String,
    pub schema_name: String,
    pub restore_type: String,
    pub existing_database: String,
    pub roles: bool,
    pub target_owner: String,
    pub keep_tablespaces: bool,
    pub tablespace_map: Option<String>,
    pub parallel_jobs: i32,
    pub extra_options: Vec<String>,
    pub script_name: Option<String>,
    pub cron: String,
    pub run_at: Option<DateTime<Utc>>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub comment: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Columns of `RestoreJobRow` (`r` is `restore_jobs`, `i` the target instance).
pub const RESTORE_JOB_COLUMNS: &str = "r.id, r.kind, r.status, r.source_job_id, \
    r.source_dump_id, r.target_instance_id, i.name AS target_instance_name, r.target_database, \
    r.schema_name, r.restore_type, r.existing_database, r.roles, r.target_owner, \
    r.keep_tablespaces, r.tablespace_map::text AS tablespace_map, r.parallel_jobs, \
    r.extra_options, r.script_name, r.cron, r.run_at, r.last_fired_at, r.comment, r.created_at, r.updated_at";

fn map_of(text: Option<&str>) -> HashMap<String, String> {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

impl RestoreJobRow {
    pub fn target(&self) -> v1::RestoreTarget {
        v1::RestoreTarget {
            instance_id: self.target_instance_id,
            database: self.target_database.clone(),
            schema: self.schema_name.clone(),
            restore_type: restore_type_value(&self.restore_type),
            existing_database: existing_database_value(&self.existing_database),
            roles: self.roles,
            owner: self.target_owner.clone(),
            keep_tablespaces: self.keep_tablespaces,
            tablespace_map: map_of(self.tablespace_map.as_deref()),
            parallel_jobs: u32_of(self.parallel_jobs),
            extra_options: self.extra_options.clone(),
            script_name: self.script_name.clone().unwrap_or_default(),
        }
    }

    pub fn to_proto(&self, last_run: Option<&RestoreRunRow>) -> v1::RestoreJob {
        v1::RestoreJob {
            id: self.id,
            kind: restore_job_kind_value(&self.kind),
            status: status_value(&self.status),
            source_job_id: self.source_job_id.unwrap_or(0),
            source_dump_id: self.source_dump_id.unwrap_or(0),
            target: Some(self.target()),
            cron: self.cron.clone(),
            run_at: ts(self.run_at),
            comment: self.comment.clone(),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
            last_run: last_run.map(RestoreRunRow::to_proto),
            target_instance_name: self.target_instance_name.clone(),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RestoreRunRow {
    pub id: i64,
    pub restore_job_id: Option<i64>,
    pub task_id: Option<i64>,
    pub dump_id: i64,
    pub dump_uuid: uuid::Uuid,
    pub worker_id: Option<i64>,
    pub worker_name: Option<String>,
    pub source_database: String,
    pub target_instance_id: i64,
    pub target_instance_name: Option<String>,
    pub target: String,
    pub status: String,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub bytes_total: i64,
    pub bytes_done: i64,
    pub warnings: i32,
    pub error: String,
    pub script_hash: String,
}

/// Columns of `RestoreRunRow` (`u` is `restore_runs`).
pub const RESTORE_RUN_COLUMNS: &str = "u.id, u.restore_job_id, u.task_id, u.dump_id, \
    u.dump_uuid, u.worker_id, (SELECT w.name FROM workers w WHERE w.id = u.worker_id) AS worker_name, \
    u.source_database, u.target_instance_id, \
    (SELECT i.name FROM instances i WHERE i.id = u.target_instance_id) AS target_instance_name, \
    u.target::text AS target, u.status, u.queued_at, u.started_at, u.finished_at, \
    u.bytes_total, u.bytes_done, u.warnings, u.error, u.script_hash";

impl RestoreRunRow {
    pub fn to_proto(&self) -> v1::RestoreRun {
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        v1::RestoreRun {
            id: self.id,
            restore_job_id: self.restore_job_id.unwrap_or(0),
            task_id: self.task_id.unwrap_or(0),
            dump_id: self.dump_id,
            dump_uuid: self.dump_uuid.to_string(),
            worker_id: self.worker_id.unwrap_or(0),
            worker_name: self.worker_name.clone().unwrap_or_default(),
            source_database: self.source_database.clone(),
            target: serde_json::from_str(&self.target)
                .ok()
                .map(|v: Value| target_from_json(&v)),
            target_instance_name: self.target_instance_name.clone().unwrap_or_default(),
            status: restore_status_value(&self.status),
            queued_at: Some(timestamp(self.queued_at)),
            started_at: ts(self.started_at),
            finished_at: ts(self.finished_at),
            bytes_total: n(self.bytes_total),
            bytes_done: n(self.bytes_done),
            warnings: u32_of(self.warnings),
            error: self.error.clone(),
            script_hash: self.script_hash.clone(),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RestoreLogRow {
    pub id: i64,
    pub run_id: i64,
    pub logged_at: DateTime<Utc>,
    pub level: i16,
    pub text: String,
}

impl RestoreLogRow {
    pub fn to_proto(&self) -> v1::RestoreLogLine {
        v1::RestoreLogLine {
            id: self.id,
            run_id: self.run_id,
            logged_at: Some(timestamp(self.logged_at)),
            level: i32::from(self.level),
            text: self.text.clone(),
        }
    }
}

/// The JSON form of a resolved restore target (restore_runs.target).
pub fn target_json(t: &v1::RestoreTarget) -> Value {
    json!({
        "instance_id": t.instance_id,
        "database": t.database,
        "schema": t.schema,
        "restore_type": restore_type_label(t.restore_type).unwrap_or("FULL"),
        "existing_database": existing_database_label(t.existing_database).unwrap_or("RENAME"),
        "roles": t.roles,
        "owner": t.owner,
        "keep_tablespaces": t.keep_tablespaces,
        "tablespace_map": t.tablespace_map,
        "parallel_jobs": t.parallel_jobs,
        "extra_options": t.extra_options,
        "script_name": t.script_name,
    })
}

/// Reads `target_json`'s form back; missing keys take their defaults.
pub fn target_from_json(v: &Value) -> v1::RestoreTarget {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    v1::RestoreTarget {
        instance_id: v["instance_id"].as_i64().unwrap_or(0),
        database: s("database"),
        schema: s("schema"),
        restore_type: restore_type_value(&s("restore_type")),
        existing_database: existing_database_value(&s("existing_database")),
        roles: v["roles"].as_bool().unwrap_or(false),
        owner: s("owner"),
        keep_tablespaces: v["keep_tablespaces"].as_bool().unwrap_or(false),
        tablespace_map: v["tablespace_map"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        parallel_jobs: v["parallel_jobs"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        extra_options: v["extra_options"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        script_name: s("script_name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_json_round_trips() {
        let t = v1::RestoreTarget {
            instance_id: 4,
            database: "Odd \"db\" ü".into(),
            schema: "s".into(),
            restore_type: v1::RestoreType::Data as i32,
            existing_database: v1::ExistingDatabase::Truncate as i32,
            roles: true,
            owner: "o".into(),
            keep_tablespaces: false,
            tablespace_map: [("fast".to_string(), String::new())].into_iter().collect(),
            parallel_jobs: 3,
            extra_options: vec!["--disable-triggers".into()],
            script_name: "restore.sh".into(),
        };
        assert_eq!(target_from_json(&target_json(&t)), t);
    }
}
