//! Postgres instances, with their auto-discovery settings.
use pgsnapman_proto::model::{
    BackupWindow, default_sslmode, quoted, validate_identifier, validate_sslmode,
};
use pgsnapman_proto::v1;

use super::Catalog;
use super::jobs::{DEFAULT_RETENTION, retention_cols};
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::rows::{self, InstanceRow};

pub(super) const COLUMNS: &str = "id, name, host, port, username, legacy_password, maintenance_db, \
    status, default_worker_id, server_version, comment, created_at, auto_discover, \
    backup_window_start, backup_window_end, discovered_status, discovered_keep_daily, \
    discovered_keep_weekly, discovered_keep_monthly, discovered_keep_yearly, sslmode, discover_report_only";

/// An instance's auto-discovery settings, checked.
struct Discovery {
    on: bool,
    /// Record the list only; add no job.
    report_only: bool,
    window: BackupWindow,
    status: &'static str,
    /// keep daily, weekly, monthly, yearly
    keep: [i32; 4],
}

impl Discovery {
    fn of_add(req: &v1::AddInstanceRequest, default_worker: Option<i64>) -> ApiResult<Self> {
        let d = BackupWindow::DEFAULT;
        let window = BackupWindow::new(
            req.backup_window_start.unwrap_or(d.start()),
            req.backup_window_end.unwrap_or(d.end()),
        )?;
        let status = match req.discovered_status {
            0 => "ACTIVE",
            s => rows::status_label(s)?,
        };
        let keep = retention_cols(
            req.discovered_retention
                .as_ref()
                .unwrap_or(&DEFAULT_RETENTION),
        )?;
        Self::checked(req.auto_discover, window, status, keep, default_worker).map(|d| Self {
            report_only: req.discover_report_only,
            ..d
        })
    }

    fn of_update(
        req: &v1::UpdateInstanceRequest,
        cur: &InstanceRow,
        default_worker: Option<i64>,
    ) -> ApiResult<Self> {
        let hour = |v: Option<u32>, cur: i32| v.unwrap_or(u32::try_from(cur).unwrap_or(0));
        let window = BackupWindow::new(
            hour(req.backup_window_start, cur.backup_window_start),
            hour(req.backup_window_end, cur.backup_window_end),
        )?;
        let status = match req.discovered_status {
            0 if cur.discovered_status == "HALTED" => "HALTED",
            0 => "ACTIVE",
            s => rows::status_label(s)?,
        };
        let keep = match &req.discovered_retention {
            Some(r) => retention_cols(r)?,
            None => [
                cur.discovered_keep_daily,
                cur.discovered_keep_weekly,
                cur.discovered_keep_monthly,
                cur.discovered_keep_yearly,
            ],
        };
        let on = req.auto_discover.unwrap_or(cur.auto_discover);
        let report_only = req.discover_report_only.unwrap_or(cur.discover_report_only);
        Self::checked(on, window, status, keep, default_worker).map(|d| Self { report_only, ..d })
    }

    fn checked(
        on: bool,
        window: BackupWindow,
        status: &'static str,
        keep: [i32; 4],
        default_worker: Option<i64>,
    ) -> ApiResult<Self> {
        if on && default_worker.is_none() {
            return Err(ApiError::Invalid(
                "auto-discovery needs a default worker (it lists the databases): name one".into(),
            ));
        }
        Ok(Self {
            on,
            report_only: false,
            window,
            status,
            keep,
        })
    }
}

/// Stores an instance's discovery settings.
async fn set_discovery(tx: &mut sqlx::PgTransaction<'_>, id: i64, d: &Discovery) -> ApiResult<()> {
    let hour = |v: u32| i32::try_from(v).unwrap_or(0);
    let [kd, kw, km, ky] = d.keep;
    sqlx::query(
        "UPDATE instances SET auto_discover = $2, backup_window_start = $3, \
         backup_window_end = $4, discovered_status = $5, discovered_keep_daily = $6, \
         discovered_keep_weekly = $7, discovered_keep_monthly = $8, discovered_keep_yearly = $9, \
         discover_report_only = $10 WHERE id = $1",
    )
    .bind(id)
    .bind(d.on)
    .bind(hour(d.window.start()))
    .bind(hour(d.window.end()))
    .bind(d.status)
    .bind(kd)
    .bind(kw)
    .bind(km)
    .bind(ky)
    .bind(d.report_only)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn check_host(host: &str) -> ApiResult<()> {
    if host.trim().is_empty() {
        return Err(ApiError::Invalid("host must not be empty".into()));
    }
    if host.len() > 255 || (host.contains(['\0', '\n', ' ']) && !host.starts_with('/')) {
        return Err(ApiError::Invalid(format!(
            "host {} is not a host name, address or socket directory (at most 255 bytes)",
            quoted(host)
        )));
    }
    Ok(())
}

fn check_port(port: u32) -> ApiResult<i32> {
    match port {
        0 => Ok(5432),
        1..=65535 => Ok(i32::try_from(port).unwrap_or(5432)),
        _ => Err(ApiError::Invalid(format!("port {port} is out of range"))),
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 200 || name.contains(['\0', '\n']) {
        return Err(ApiError::Invalid(format!(
            "instance name {} must be 1–200 characters without newlines",
            quoted(name)
        )));
    }
    Ok(())
}

fn or_default(s: &str, default: &str) -> String {
    if s.is_empty() {
        default.to_string()
    } else {
        s.to_string()
    }
}

impl Catalog {
    pub async fn add_instance(&self, req: &v1::AddInstanceRequest) -> ApiResult<InstanceRow> {
        check_name(&req.name)?;
        check_host(&req.host)?;
        let port = check_port(req.port)?;
        let user = or_default(&req.user, "postgres");
        validate_identifier("user", &user)?;
        let maintenance_db = or_default(&req.maintenance_db, "postgres");
        validate_identifier("maintenance database", &maintenance_db)?;
        super::passwords::refuse_plaintext(req.password.as_ref())?;
        let copies = self.checked_copies(&req.sealed_passwords).await?;
        let sslmode = or_default(&req.sslmode, default_sslmode(&req.host));
        validate_sslmode(&sslmode)?;
        let worker = self.worker_ref(req.default_worker.as_ref()).await?;
        let discovery = Discovery::of_add(req, worker.as_ref().map(|w| w.id))?;
        let mut tx = self.pool.begin().await?;
        let id = super::import_id(&mut tx, super::ImportTable::Instances, req.id).await?;
        let res = sqlx::query_scalar::<_, i64>(
            "INSERT INTO instances (id, name, host, port, username, maintenance_db, \
             default_worker_id, comment, sslmode) \
             VALUES (COALESCE($9, nextval(pg_get_serial_sequence('instances', 'id'))), \
             $1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(&req.name)
        .bind(&req.host)
        .bind(port)
        .bind(&user)
        .bind(&maintenance_db)
        .bind(worker.as_ref().map(|w| w.id))
        .bind(&req.comment)
        .bind(&sslmode)
        .bind(id)
        .fetch_one(&mut *tx)
        .await;
        match res {
            Ok(id) => {
                set_discovery(&mut tx, id, &discovery).await?;
                self.replace_passwords(&mut tx, id, &copies).await?;
                if discovery.on {
                    // The default worker must mirror the instance to list it.
                    let workers: Vec<i64> = worker.iter().map(|w| w.id).collect();
                    self.bump_schedule(&mut *tx, &workers).await?;
                }
                tx.commit().await?;
                self.instance(id).await
            }
            Err(e) if is_unique_violation(&e) => Err(ApiError::Exists(format!(
                "an instance named {} already exists",
                quoted(&req.name)
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_instances(&self) -> ApiResult<Vec<InstanceRow>> {
        Ok(sqlx::query_as::<_, InstanceRow>(&format!(
            "SELECT {COLUMNS} FROM instances ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn instance(&self, id: i64) -> ApiResult<InstanceRow> {
        sqlx::query_as::<_, InstanceRow>(&format!("SELECT {COLUMNS} FROM instances WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("instance {id} not found")))
    }

    /// Workers whose schedule mentions the instance: those with jobs on it,
    /// and its default worker (which lists its databases when discovery is on).
    async fn workers_of_instance<'e, E: sqlx::PgExecutor<'e>>(
        &self,
        exec: E,
        id: i64,
    ) -> ApiResult<Vec<i64>> {
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT worker_id FROM dump_jobs WHERE instance_id = $1 OR verify_instance_id = $1 \
             UNION SELECT default_worker_id FROM instances \
             WHERE id = $1 AND default_worker_id IS NOT NULL",
        )
        .bind(id)
        .fetch_all(exec)
        .await?)
    }

    pub async fn update_instance(&self, req: &v1::UpdateInstanceRequest) -> ApiResult<InstanceRow> {
        let cur = self.instance(req.id).await?;
        if let Some(n) = &req.name {
            check_name(n)?;
        }
        if let Some(h) = &req.host {
            check_host(h)?;
        }
        let port = req.port.map(check_port).transpose()?;
        if let Some(u) = &req.user {
            validate_identifier("user", u)?;
        }
        if let Some(m) = &req.maintenance_db {
            validate_identifier("maintenance database", m)?;
        }
        super::passwords::refuse_plaintext(req.password.as_ref())?;
        if req.clear_password && !req.sealed_passwords.is_empty() {
            return Err(ApiError::Invalid(
                "clear_password and a new sealed password exclude each other".into(),
            ));
        }
        let copies = self.checked_copies(&req.sealed_passwords).await?;
        if let Some(m) = &req.sslmode {
            validate_sslmode(m)?;
        }
        let worker = self.worker_ref(req.default_worker.as_ref()).await?;
        let default_worker = worker.map(|w| w.id).or(cur.default_worker_id);
        let discovery = Discovery::of_update(req, &cur, default_worker)?;
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "UPDATE instances SET name = $2, host = $3, port = $4, username = $5, \
             maintenance_db = $6, default_worker_id = $7, comment = $8, sslmode = $9 \
             WHERE id = $1",
        )
        .bind(req.id)
        .bind(req.name.as_ref().unwrap_or(&cur.name))
        .bind(req.host.as_ref().unwrap_or(&cur.host))
        .bind(port.unwrap_or(cur.port))
        .bind(req.user.as_ref().unwrap_or(&cur.username))
        .bind(req.maintenance_db.as_ref().unwrap_or(&cur.maintenance_db))
        .bind(default_worker)
        .bind(req.comment.as_ref().unwrap_or(&cur.comment))
        .bind(req.sslmode.as_ref().unwrap_or(&cur.sslmode))
        .execute(&mut *tx)
        .await;
        if let Err(e) = res {
            if is_unique_violation(&e) {
                return Err(ApiError::Exists(format!(
                    "an instance named {} already exists",
                    quoted(req.name.as_deref().unwrap_or_default())
                )));
            }
            return Err(e.into());
        }
        set_discovery(&mut tx, req.id, &discovery).await?;
        if req.clear_password || !copies.is_empty() {
            self.replace_passwords(&mut tx, req.id, &copies).await?;
        }
        if default_worker != cur.default_worker_id {
            // Lists are ordered by the time the worker took them, by its
            // clock: the former default worker's must not hold back the new
            // one's.
            sqlx::query("DELETE FROM instance_discovery WHERE instance_id = $1")
                .bind(req.id)
                .execute(&mut *tx)
                .await?;
        }
        let mut workers = self.workers_of_instance(&mut *tx, req.id).await?;
        // A former default worker stops listing the instance.
        workers.extend(cur.default_worker_id);
        self.bump_schedule(&mut *tx, &workers).await?;
        tx.commit().await?;
        self.instance(req.id).await
    }

    pub async fn set_instance_status(&self, id: i64, status: &str) -> ApiResult<InstanceRow> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("UPDATE instances SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(status)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(ApiError::NotFound(format!("instance {id} not found")));
        }
        let workers = self.workers_of_instance(&mut *tx, id).await?;
        self.bump_schedule(&mut *tx, &workers).await?;
        tx.commit().await?;
        self.instance(id).await
    }

    /// Refused while dump jobs use the instance.
    pub async fn remove_instance(&self, id: i64) -> ApiResult<()> {
        let cur = self.instance(id).await?;
        let jobs: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM dump_jobs WHERE instance_id = $1 OR verify_instance_id = $1 \
             UNION SELECT id FROM restore_jobs \
             WHERE target_instance_id = $1 ORDER BY 1",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        if !jobs.is_empty() {
            let list: Vec<String> = jobs.iter().map(i64::to_string).collect();
            return Err(ApiError::Precondition(format!(
                "instance {id} ({}) is used by jobs {}; remove them first",
                cur.name,
                list.join(", ")
            )));
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Its default worker stops listing it.
        let workers: Vec<i64> = cur.default_worker_id.into_iter().collect();
        self.bump_schedule(&mut *tx, &workers).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the server version a worker saw.
    pub async fn note_server_version<'e, E: sqlx::PgExecutor<'e>>(
        &self,
        exec: E,
        instance_id: i64,
        version: &str,
    ) -> ApiResult<()> {
        if version.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE instances SET server_version = $2 WHERE id = $1")
            .bind(instance_id)
            .bind(version)
            .execute(exec)
            .await?;
        Ok(())
    }
}
