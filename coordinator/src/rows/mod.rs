//! Catalog rows and their conversion to the wire types. Enumerations are
//! stored as proto labels without their prefix ('ACTIVE', 'FULL', …).
use chrono::{DateTime, Utc};
use pgsnapman_proto::timestamp;
use pgsnapman_proto::v1;

use crate::error::{ApiError, ApiResult};

mod auth;
mod restore;
pub use auth::{AUDIT_COLUMNS, AuditRow, TOKEN_COLUMNS, TokenRow};
pub use restore::{
    RESTORE_JOB_COLUMNS, RESTORE_RUN_COLUMNS, RestoreJobRow, RestoreLogRow, RestoreRunRow,
    target_from_json, target_json,
};

/// `STATUS_ACTIVE` → `ACTIVE`.
fn strip(name: &'static str) -> &'static str {
    const PREFIXES: &[&str] = &[
        "STATUS_",
        "DUMP_TYPE_",
        "DUMP_FORMAT_",
        "JOB_KIND_",
        "DUMP_STATUS_",
        "TASK_STATE_",
        "TASK_KIND_",
        "MESSAGE_LEVEL_",
        "RESTORE_TYPE_",
        "EXISTING_DATABASE_",
        "RESTORE_JOB_KIND_",
        "RESTORE_STATUS_",
    ];
    PREFIXES
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name)
}

macro_rules! labels {
    ($ty:ident, $prefix:literal, $to:ident, $from:ident, $what:literal) => {
        /// Catalog label of a wire value; UNSPECIFIED and unknown numbers are invalid input.
        pub fn $to(v: i32) -> ApiResult<&'static str> {
            match v1::$ty::try_from(v) {
                Ok(v1::$ty::Unspecified) | Err(_) => {
                    Err(ApiError::Invalid(format!("{} {v} is not valid", $what)))
                }
                Ok(e) => Ok(strip(e.as_str_name())),
            }
        }
        /// Wire value of a catalog label (0 for an unknown label).
        pub fn $from(label: &str) -> i32 {
            v1::$ty::from_str_name(&format!("{}{}", $prefix, label)).map_or(0, |e| e as i32)
        }
    };
}

labels!(Status, "STATUS_", status_label, status_value, "status");
labels!(
    DumpType,
    "DUMP_TYPE_",
    dump_type_label,
    dump_type_value,
    "dump type"
);
labels!(
    DumpFormat,
    "DUMP_FORMAT_",
    format_label,
    format_value,
    "dump format"
);
labels!(
    JobKind,
    "JOB_KIND_",
    job_kind_label,
    job_kind_value,
    "job kind"
);
labels!(
    DumpStatus,
    "DUMP_STATUS_",
    dump_status_label,
    dump_status_value,
    "dump status"
);
labels!(
    TaskState,
    "TASK_STATE_",
    task_state_label,
    task_state_value,
    "task state"
);
labels!(
    TaskKind,
    "TASK_KIND_",
    task_kind_label,
    task_kind_value,
    "task kind"
);

labels!(
    RestoreType,
    "RESTORE_TYPE_",
    restore_type_label,
    restore_type_value,
    "restore type"
);
labels!(
    ExistingDatabase,
    "EXISTING_DATABASE_",
    existing_database_label,
    existing_database_value,
    "existing-database policy"
);
labels!(
    RestoreJobKind,
    "RESTORE_JOB_KIND_",
    restore_job_kind_label,
    restore_job_kind_value,
    "restore job kind"
);
labels!(
    RestoreStatus,
    "RESTORE_STATUS_",
    restore_status_label,
    restore_status_value,
    "restore status"
);

pub(crate) fn ts(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(timestamp)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkerRow {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub registered_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub schedule_version: i64,
    pub confirmed_schedule_version: i64,
    pub outbox_backlog: i64,
    pub agent_version: String,
    pub client_majors: Vec<i32>,
    pub connected: bool,
    pub restore_worker_id: Option<i64>,
    pub restore_worker_name: Option<String>,
    /// seal: the key the worker presented in Hello.
    pub seal_public_key: Option<Vec<u8>>,
    pub seal_key_fingerprint: Option<String>,
    pub seal_key_presented_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub certificate_serial: Option<String>,
    pub certificate_not_after: Option<DateTime<Utc>>,
}

/// Columns of `WorkerRow` (`w` is `workers`).
pub const WORKER_COLUMNS: &str = "w.id, w.name, w.status, w.registered_at, w.last_seen_at, \
    w.schedule_version, w.confirmed_schedule_version, w.outbox_backlog, w.agent_version, \
    w.client_majors, EXISTS (SELECT 1 FROM worker_sessions s WHERE s.worker_id = w.id \
    AND s.stale_after > now()) AS connected, w.restore_worker_id, \
    (SELECT r.name FROM workers r WHERE r.id = w.restore_worker_id) AS restore_worker_name, \
    w.seal_public_key, w.seal_key_fingerprint, w.seal_key_presented_at, \
    w.revoked_at, c.serial AS certificate_serial, c.not_after AS certificate_not_after";

/// Joined after `workers w` wherever `WORKER_COLUMNS` is selected: the
/// worker's newest unrevoked certificate.
pub const WORKER_JOIN: &str = "LEFT JOIN LATERAL (SELECT serial, not_after FROM worker_certificates \
    WHERE worker_id = w.id AND revoked_at IS NULL ORDER BY not_after DESC LIMIT 1) c ON true";

impl WorkerRow {
    pub fn to_proto(&self) -> v1::Worker {
        v1::Worker {
            id: self.id,
            name: self.name.clone(),
            status: status_value(&self.status),
            registered_at: Some(timestamp(self.registered_at)),
            last_seen_at: ts(self.last_seen_at),
            connected: self.connected,
            schedule_version: u64::try_from(self.schedule_version).unwrap_or(0),
            confirmed_schedule_version: u64::try_from(self.confirmed_schedule_version).unwrap_or(0),
            outbox_backlog: u64::try_from(self.outbox_backlog).unwrap_or(0),
            agent_version: self.agent_version.clone(),
            client_majors: self
                .client_majors
                .iter()
                .filter_map(|m| u32::try_from(*m).ok())
                .collect(),
            restore_worker_id: self.restore_worker_id.unwrap_or(0),
            restore_worker_name: self.restore_worker_name.clone().unwrap_or_default(),
            seal_key: self.seal_public_key.as_ref().map(|k| v1::SealKey {
                public_key: k.clone(),
                fingerprint: self.seal_key_fingerprint.clone().unwrap_or_default(),
                presented_at: ts(self.seal_key_presented_at),
            }),
            revoked_at: ts(self.revoked_at),
            certificate_serial: self.certificate_serial.clone().unwrap_or_default(),
            certificate_not_after: ts(self.certificate_not_after),
        }
    }
}

#[derive(Clone, sqlx::FromRow)]
pub struct InstanceRow {
    pub id: i64,
    pub name: String,
    pub host: String,
    pub port: i32,
    pub username: String,
    /// A password stored in clear before catalog migration 0014, until it
    /// is sealed to every worker that uses it (catalog/passwords.rs).
    pub legacy_password: Option<String>,
    pub maintenance_db: String,
    pub status: String,
    pub default_worker_id: Option<i64>,
    pub server_version: String,
    pub comment: String,
    pub created_at: DateTime<Utc>,
    pub auto_discover: bool,
    pub backup_window_start: i32,
    pub backup_window_end: i32,
    pub discovered_status: String,
    pub discovered_keep_daily: i32,
    pub discovered_keep_weekly: i32,
    pub discovered_keep_monthly: i32,
    pub discovered_keep_yearly: i32,
    pub sslmode: String,
    pub discover_report_only: bool,
}

impl InstanceRow {
    /// The Admin view without its passwords (`Catalog::instance_view`
    /// adds them): never a password.
    pub fn to_proto(&self) -> v1::Instance {
        v1::Instance {
            id: self.id,
            name: self.name.clone(),
            host: self.host.clone(),
            port: u32::try_from(self.port).unwrap_or(0),
            user: self.username.clone(),
            has_password: self.legacy_password.is_some(),
            maintenance_db: self.maintenance_db.clone(),
            status: status_value(&self.status),
            default_worker_id: self.default_worker_id.unwrap_or(0),
            server_version: self.server_version.clone(),
            comment: self.comment.clone(),
            created_at: Some(timestamp(self.created_at)),
            auto_discover: self.auto_discover,
            backup_window_start: u32_of(self.backup_window_start),
            backup_window_end: u32_of(self.backup_window_end),
            discovered_status: status_value(&self.discovered_status),
            discovered_retention: Some(self.discovered_retention()),
            sslmode: self.sslmode.clone(),
            passwords: Vec::new(),
            discover_report_only: self.discover_report_only,
        }
    }

    /// Retention of the jobs discovery adds.
    pub fn discovered_retention(&self) -> v1::Retention {
        v1::Retention {
            keep_daily: u32_of(self.discovered_keep_daily),
            keep_weekly: u32_of(self.discovered_keep_weekly),
            keep_monthly: u32_of(self.discovered_keep_monthly),
            keep_yearly: u32_of(self.discovered_keep_yearly),
        }
    }

    /// True if `worker_id` lists this instance's databases: discovery is on
    /// and it is the default worker.
    pub fn discovered_by(&self, worker_id: i64) -> bool {
        self.auto_discover && self.default_worker_id == Some(worker_id)
    }

    /// What a worker needs to connect, without the password
    /// (`Catalog::connection_for` adds the copy sealed to that worker).
    pub fn connection(&self) -> v1::InstanceConnection {
        v1::InstanceConnection {
            instance_id: self.id,
            name: self.name.clone(),
            host: self.host.clone(),
            port: u32::try_from(self.port).unwrap_or(0),
            user: self.username.clone(),
            password: String::new(),
            maintenance_db: self.maintenance_db.clone(),
            status: status_value(&self.status),
            discover: false,
            sslmode: self.sslmode.clone(),
            sealed_password: None,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub worker_id: i64,
    pub instance_id: i64,
    pub database: String,
    pub schema_name: String,
    pub dump_type: String,
    pub format: String,
    pub extra_options: Vec<String>,
    pub cron: String,
    pub kind: String,
    pub status: String,
    pub keep_daily: i32,
    pub keep_weekly: i32,
    pub keep_monthly: i32,
    pub keep_yearly: i32,
    pub parallel_jobs: i32,
    pub comment: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub pause_replay: bool,
    pub on_demand: bool,
    pub script_name: Option<String>,
    pub verify_cron: String,
    pub verify_method: String,
    pub verify_instance_id: Option<i64>,
    pub verify_checks: Vec<String>,
}

pub(crate) fn u32_of(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

impl JobRow {
    pub fn to_proto(&self) -> v1::DumpJob {
        v1::DumpJob {
            id: self.id,
            worker_id: self.worker_id,
            instance_id: self.instance_id,
            database: self.database.clone(),
            schema: self.schema_name.clone(),
            dump_type: dump_type_value(&self.dump_type),
            format: format_value(&self.format),
            extra_options: self.extra_options.clone(),
            cron: self.cron.clone(),
            kind: job_kind_value(&self.kind),
            status: status_value(&self.status),
            retention: Some(v1::Retention {
                keep_daily: u32_of(self.keep_daily),
                keep_weekly: u32_of(self.keep_weekly),
                keep_monthly: u32_of(self.keep_monthly),
                keep_yearly: u32_of(self.keep_yearly),
            }),
            comment: self.comment.clone(),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
            parallel_jobs: u32_of(self.parallel_jobs),
            pause_replay: self.pause_replay,
            on_demand: self.on_demand,
            script_name: self.script_name.clone().unwrap_or_default(),
            verify_cron: self.verify_cron.clone(),
            verify_method: self.verify_method.clone(),
            verify_instance_id: self.verify_instance_id.unwrap_or(0),
            verify_checks: self.verify_checks.clone(),
        }
    }

    /// The dump spec, with `instance` as its worker receives it.
    pub fn spec(&self, instance: v1::InstanceConnection) -> v1::DumpSpec {
        v1::DumpSpec {
            job_id: self.id,
            instance: Some(instance),
            database: self.database.clone(),
            schema: self.schema_name.clone(),
            dump_type: dump_type_value(&self.dump_type),
            format: format_value(&self.format),
            extra_options: self.extra_options.clone(),
            parallel_jobs: u32_of(self.parallel_jobs),
            pause_replay: self.pause_replay,
            on_demand: self.on_demand,
            script: None,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DumpRow {
    pub id: i64,
    pub dump_uuid: uuid::Uuid,
    pub job_id: i64,
    pub worker_id: i64,
    pub instance_id: i64,
    pub host: String,
    pub port: i32,
    pub database: String,
    pub schema_name: String,
    pub dump_type: String,
    pub format: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub dump_bytes: i64,
    pub stored_bytes: i64,
    pub database_bytes: i64,
    pub server_version: String,
    pub client_version: String,
    pub location: String,
    pub message: String,
    pub task_id: Option<i64>,
    pub worker_name: String,
    pub restore_metadata: Option<String>,
    pub verified: String,
    pub verified_at: Option<DateTime<Utc>>,
    pub table_rows_counted: bool,
    pub table_rows_error: String,
    pub pinned: bool,
    pub restore_verified_method: Option<String>,
    pub restore_verified_at: Option<DateTime<Utc>>,
    pub restore_verified_ok: Option<bool>,
    pub restore_verified_detail: Option<String>,
    pub script_hash: String,
}

pub const DUMP_COLUMNS: &str = "d.id, d.dump_uuid, d.job_id, d.worker_id, d.instance_id, d.host, \
    d.port, d.database, d.schema_name, d.dump_type, d.format, d.status, d.started_at, \
    d.finished_at, d.dump_bytes, d.stored_bytes, d.database_bytes, d.server_version, \
    d.client_version, d.location, d.message, d.task_id, w.name AS worker_name, \
    d.restore_metadata::text AS restore_metadata, d.verified, d.verified_at, \
    d.table_rows IS NOT NULL AS table_rows_counted, d.table_rows_error, d.pinned, \
    d.restore_verified_method, d.restore_verified_at, d.restore_verified_ok, \
    d.restore_verified_detail::text AS restore_verified_detail, d.script_hash";

impl DumpRow {
    pub fn to_proto(&self) -> v1::Dump {
        v1::Dump {
            id: self.id,
            dump_uuid: self.dump_uuid.to_string(),
            job_id: self.job_id,
            worker_id: self.worker_id,
            instance_id: self.instance_id,
            host: self.host.clone(),
            port: u32_of(self.port),
            database: self.database.clone(),
            schema: self.schema_name.clone(),
            dump_type: dump_type_value(&self.dump_type),
            format: format_value(&self.format),
            status: dump_status_value(&self.status),
            started_at: Some(timestamp(self.started_at)),
            finished_at: Some(timestamp(self.finished_at)),
            dump_bytes: u64::try_from(self.dump_bytes).unwrap_or(0),
            stored_bytes: u64::try_from(self.stored_bytes).unwrap_or(0),
            database_bytes: self.database_bytes,
            server_version: self.server_version.clone(),
            client_version: self.client_version.clone(),
            location: self.location.clone(),
            message: self.message.clone(),
            task_id: self.task_id.unwrap_or(0),
            worker_name: self.worker_name.clone(),
            restore_metadata_json: self.restore_metadata.clone().unwrap_or_default(),
            verified: self.verified.clone(),
            verified_at: ts(self.verified_at),
            table_rows: Vec::new(),
            table_rows_counted: self.table_rows_counted,
            table_rows_error: self.table_rows_error.clone(),
            pinned: self.pinned,
            restore_verified_method: self.restore_verified_method.clone().unwrap_or_default(),
            restore_verified_at: ts(self.restore_verified_at),
            restore_verified_ok: self.restore_verified_ok.unwrap_or(false),
            restore_verified_detail_json: self.restore_verified_detail.clone().unwrap_or_default(),
            script_hash: self.script_hash.clone(),
        }
    }
}

/// One table of `dumps.table_rows` (migration 0017).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TableRowsJson {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub database: String,
    pub schema: String,
    pub table: String,
    pub rows: u64,
}

impl TableRowsJson {
    pub fn of(t: &v1::TableRowCount) -> Self {
        TableRowsJson {
            database: t.database.clone(),
            schema: t.schema.clone(),
            table: t.table.clone(),
            rows: t.rows,
        }
    }

    pub fn to_proto(&self) -> v1::TableRowCount {
        v1::TableRowCount {
            schema: self.schema.clone(),
            table: self.table.clone(),
            rows: self.rows,
            database: self.database.clone(),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRow {
    pub id: i64,
    pub kind: String,
    pub state: String,
    pub worker_id: i64,
    pub job_id: Option<i64>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub leased_until: Option<DateTime<Utc>>,
    pub lease_id: Option<uuid::Uuid>,
    pub error: String,
    pub dump_id: Option<i64>,
    pub progress_phase: String,
    pub progress_done: i64,
    pub progress_total: i64,
    pub result: Option<String>,
    pub restore_job_id: Option<i64>,
    pub restore_run_id: Option<i64>,
}

pub const TASK_COLUMNS: &str = "t.id, t.kind, t.state, t.worker_id, t.job_id, t.attempts, \
    t.max_attempts, t.created_at, t.started_at, t.finished_at, t.leased_until, t.lease_id, \
    t.error, t.dump_id, t.progress_phase, t.progress_done, t.progress_total, \
    t.result::text AS result, t.restore_job_id, t.restore_run_id";

impl TaskRow {
    pub fn to_proto(&self) -> v1::Task {
        let progress = (!self.progress_phase.is_empty()).then(|| v1::Progress {
            phase: self.progress_phase.clone(),
            bytes_done: u64::try_from(self.progress_done).unwrap_or(0),
            bytes_total: u64::try_from(self.progress_total).unwrap_or(0),
        });
        v1::Task {
            id: self.id,
            kind: task_kind_value(&self.kind),
            state: task_state_value(&self.state),
            worker_id: self.worker_id,
            job_id: self.job_id.unwrap_or(0),
            attempts: u32_of(self.attempts),
            max_attempts: u32_of(self.max_attempts),
            created_at: Some(timestamp(self.created_at)),
            started_at: ts(self.started_at),
            finished_at: ts(self.finished_at),
            leased_until: ts(self.leased_until),
            error: self.error.clone(),
            dump_id: self.dump_id.unwrap_or(0),
            progress,
            result_json: self.result.clone().unwrap_or_default(),
            restore_job_id: self.restore_job_id.unwrap_or(0),
            restore_run_id: self.restore_run_id.unwrap_or(0),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoreStatsRow {
    pub worker_id: i64,
    pub worker_name: String,
    pub reported_at: DateTime<Utc>,
    pub packs: i64,
    pub pack_bytes: i64,
    pub chunks: i64,
    pub unique_raw_bytes: i64,
    pub stored_bytes: i64,
    pub dumps: i64,
    pub logical_bytes: i64,
    pub free_bytes: i64,
    pub backend: String,
    pub backend_location: String,
    pub cache_bytes: i64,
    pub cache_limit: i64,
    pub encrypted: bool,
    pub key_id: String,
}

impl StoreStatsRow {
    pub fn to_proto(&self) -> v1::StoreStats {
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        v1::StoreStats {
            worker_id: self.worker_id,
            worker_name: self.worker_name.clone(),
            reported_at: Some(timestamp(self.reported_at)),
            packs: n(self.packs),
            pack_bytes: n(self.pack_bytes),
            chunks: n(self.chunks),
            unique_raw_bytes: n(self.unique_raw_bytes),
            stored_bytes: n(self.stored_bytes),
            dumps: n(self.dumps),
            logical_bytes: n(self.logical_bytes),
            free_bytes: n(self.free_bytes),
            backend: self.backend.clone(),
            backend_location: self.backend_location.clone(),
            cache_bytes: n(self.cache_bytes),
            cache_limit: n(self.cache_limit),
            encrypted: self.encrypted,
            key_id: self.key_id.clone(),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub id: i64,
    pub logged_at: DateTime<Utc>,
    pub level: i16,
    pub class: String,
    pub worker_id: Option<i64>,
    pub job_id: Option<i64>,
    pub text: String,
    pub worker_name: Option<String>,
}

impl MessageRow {
    pub fn to_proto(&self) -> v1::Message {
        v1::Message {
            id: self.id,
            logged_at: Some(timestamp(self.logged_at)),
            level: i32::from(self.level),
            class: self.class.clone(),
            worker_id: self.worker_id.unwrap_or(0),
            job_id: self.job_id.unwrap_or(0),
            text: self.text.clone(),
            worker_name: self.worker_name.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_reject_unspecified() {
        assert_eq!(status_label(v1::Status::Halted as i32).unwrap(), "HALTED");
        assert_eq!(status_value("HALTED"), v1::Status::Halted as i32);
        assert_eq!(
            dump_type_label(v1::DumpType::ClusterSchema as i32).unwrap(),
            "CLUSTER_SCHEMA"
        );
        assert_eq!(
            task_state_value("SUCCEEDED"),
            v1::TaskState::Succeeded as i32
        );
        assert!(status_label(0).is_err());
        assert!(format_label(99).is_err());
        assert_eq!(status_value("nonsense"), 0);
    }
}
