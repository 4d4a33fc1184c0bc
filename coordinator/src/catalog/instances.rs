//! Postgres instances.
use pgsnapman_proto::model::validate_identifier;
use pgsnapman_proto::v1;

use super::Catalog;
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::rows::InstanceRow;

const COLUMNS: &str = "id, name, host, port, username, password, maintenance_db, status, \
    default_worker_id, server_version, comment, created_at";

fn check_host(host: &str) -> ApiResult<()> {
    if host.trim().is_empty() {
        return Err(ApiError::Invalid("host must not be empty".into()));
    }
    if host.contains(['\0', '\n', ' ']) && !host.starts_with('/') {
        return Err(ApiError::Invalid(format!(
            "host {host:?} is not a host name, address or socket directory"
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
            "instance name {name:?} must be 1–200 characters without newlines"
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
        let worker = self.worker_ref(req.default_worker.as_ref()).await?;
        let res = sqlx::query_scalar::<_, i64>(
            "INSERT INTO instances (name, host, port, username, password, maintenance_db, \
             default_worker_id, comment) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(&req.name)
        .bind(&req.host)
        .bind(port)
        .bind(&user)
        .bind(req.password.as_deref())
        .bind(&maintenance_db)
        .bind(worker.map(|w| w.id))
        .bind(&req.comment)
        .fetch_one(&self.pool)
        .await;
        match res {
            Ok(id) => self.instance(id).await,
            Err(e) if is_unique_violation(&e) => Err(ApiError::Exists(format!(
                "an instance named {:?} already exists",
                req.name
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

    /// Workers whose schedule mentions the instance.
    async fn workers_of_instance<'e, E: sqlx::PgExecutor<'e>>(
        &self,
        exec: E,
        id: i64,
    ) -> ApiResult<Vec<i64>> {
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT DISTINCT worker_id FROM dump_jobs WHERE instance_id = $1",
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
        let worker = self.worker_ref(req.default_worker.as_ref()).await?;
        let password = if req.clear_password {
            None
        } else {
            req.password.clone().or(cur.password.clone())
        };
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "UPDATE instances SET name = $2, host = $3, port = $4, username = $5, password = $6, \
             maintenance_db = $7, default_worker_id = $8, comment = $9 WHERE id = $1",
        )
        .bind(req.id)
        .bind(req.name.as_ref().unwrap_or(&cur.name))
        .bind(req.host.as_ref().unwrap_or(&cur.host))
        .bind(port.unwrap_or(cur.port))
        .bind(req.user.as_ref().unwrap_or(&cur.username))
        .bind(password)
        .bind(req.maintenance_db.as_ref().unwrap_or(&cur.maintenance_db))
        .bind(worker.map(|w| w.id).or(cur.default_worker_id))
        .bind(req.comment.as_ref().unwrap_or(&cur.comment))
        .execute(&mut *tx)
        .await;
        if let Err(e) = res {
            if is_unique_violation(&e) {
                return Err(ApiError::Exists(format!(
                    "an instance named {:?} already exists",
                    req.name.as_deref().unwrap_or_default()
                )));
            }
            return Err(e.into());
        }
        let workers = self.workers_of_instance(&mut *tx, req.id).await?;
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
            "SELECT id FROM dump_jobs WHERE instance_id = $1 UNION SELECT id FROM restore_jobs \
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
        sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
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
