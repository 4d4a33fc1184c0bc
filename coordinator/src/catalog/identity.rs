//! Worker identity in the catalog: one-time enrollment tokens (stored as
//! SHA-256), the serials of the certificates the CA issued, and revocation.
//! Signing itself is not here (`pki.rs`); neither is any token in clear.
use chrono::{DateTime, Utc};

use super::Catalog;
use crate::error::{ApiError, ApiResult};
use crate::rows::WorkerRow;

/// Why an enrollment token was refused. Each case is a distinct, audited
/// error; none of them says whether some other token exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefused {
    /// No token has this hash.
    Unknown,
    /// Used once already (by an enrollment at `used_at`).
    Reused {
        worker: String,
        used_at: DateTime<Utc>,
    },
    Expired {
        worker: String,
        expired_at: DateTime<Utc>,
    },
}

impl std::fmt::Display for TokenRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenRefused::Unknown => write!(
                f,
                "the enrollment token is not valid (mistyped, or never issued); issue one with `pgsnap worker enroll-token NAME`"
            ),
            TokenRefused::Reused { worker, used_at } => write!(
                f,
                "the enrollment token of worker {worker} was already used at {}; a token works once: issue a new one with `pgsnap worker enroll-token {worker}`",
                used_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            TokenRefused::Expired { worker, expired_at } => write!(
                f,
                "the enrollment token of worker {worker} expired at {}; issue a new one with `pgsnap worker enroll-token {worker}`",
                expired_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        }
    }
}

/// A token checked and marked used inside an open transaction: the caller
/// signs, records the certificate, and commits (or drops: nothing happened).
pub struct Enrollment<'c> {
    pub tx: sqlx::PgTransaction<'c>,
    pub worker_id: i64,
    pub worker_name: String,
}

/// Who a certificate serial belongs to, as the catalog knows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CertificateOwner {
    pub worker_id: i64,
    pub worker_name: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    token_id: i64,
    worker_id: i64,
    worker_name: String,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    expired: bool,
}

/// Lower-case hex without leading zeros: the one spelling of a serial in the
/// catalog, whatever the encoder padded.
pub fn normalize_serial(hex: &str) -> ApiResult<String> {
    let lower = hex.trim().to_ascii_lowercase();
    if lower.is_empty() || lower.len() > 64 || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::Invalid(format!(
            "certificate serial {} is not 1-64 hex digits",
            pgsnapman_proto::model::quoted(hex)
        )));
    }
    let trimmed = lower.trim_start_matches('0');
    Ok(if trimmed.is_empty() { "0" } else { trimmed }.to_string())
}

impl Catalog {
    /// Stores a new enrollment token's hash for the worker; returns when it
    /// expires.
    pub async fn add_enrollment_token(
        &self,
        worker_id: i64,
        token_sha256: &[u8; 32],
        ttl: std::time::Duration,
        created_by: &str,
    ) -> ApiResult<DateTime<Utc>> {
        Ok(sqlx::query_scalar(
            "INSERT INTO enrollment_tokens (worker_id, token_sha256, expires_at, created_by) \
             VALUES ($1, $2, now() + $3, $4) RETURNING expires_at",
        )
        .bind(worker_id)
        .bind(token_sha256.as_slice())
        .bind(ttl)
        .bind(created_by)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Locks the token with this hash, checks it is unused and unexpired, and
    /// marks it used, all in a transaction the caller commits once the
    /// certificate is recorded. `Ok(Err(_))` is a refused token.
    pub async fn begin_enrollment(
        &self,
        token_sha256: &[u8; 32],
    ) -> ApiResult<Result<Enrollment<'static>, TokenRefused>> {
        let mut tx = self.pool.begin().await?;
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT t.id AS token_id, w.id AS worker_id, w.name AS worker_name, t.expires_at, \
                 t.used_at, t.expires_at <= now() AS expired \
                 FROM enrollment_tokens t JOIN workers w ON w.id = t.worker_id \
                 WHERE t.token_sha256 = $1 FOR UPDATE OF t",
        )
        .bind(token_sha256.as_slice())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(TokenRow {
            token_id,
            worker_id,
            worker_name,
            expires_at,
            used_at,
            expired,
        }) = row
        else {
            return Ok(Err(TokenRefused::Unknown));
        };
        if let Some(used_at) = used_at {
            return Ok(Err(TokenRefused::Reused {
                worker: worker_name,
                used_at,
            }));
        }
        if expired {
            return Ok(Err(TokenRefused::Expired {
                worker: worker_name,
                expired_at: expires_at,
            }));
        }
        sqlx::query("UPDATE enrollment_tokens SET used_at = now() WHERE id = $1")
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
        Ok(Ok(Enrollment {
            tx,
            worker_id,
            worker_name,
        }))
    }

    /// Records a certificate the CA issued to a worker. An enrollment also
    /// ends the worker's revocation (its old certificates stay revoked).
    pub async fn record_certificate(
        &self,
        conn: &mut sqlx::PgConnection,
        worker_id: i64,
        serial: &str,
        not_after: DateTime<Utc>,
        enrolled: bool,
    ) -> ApiResult<()> {
        let serial = normalize_serial(serial)?;
        sqlx::query(
            "INSERT INTO worker_certificates (serial, worker_id, not_after) VALUES ($1, $2, $3)",
        )
        .bind(&serial)
        .bind(worker_id)
        .bind(not_after)
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            if crate::error::is_unique_violation(&e) {
                ApiError::Exists(format!("certificate serial {serial} was issued before"))
            } else {
                e.into()
            }
        })?;
        if enrolled {
            sqlx::query("UPDATE workers SET revoked_at = NULL WHERE id = $1")
                .bind(worker_id)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// The worker a certificate serial was issued to; `None` if this catalog
    /// never issued it.
    pub async fn certificate_owner(&self, serial: &str) -> ApiResult<Option<CertificateOwner>> {
        let serial = normalize_serial(serial)?;
        Ok(sqlx::query_as::<_, CertificateOwner>(
            "SELECT w.id AS worker_id, w.name AS worker_name, c.revoked_at \
             FROM worker_certificates c JOIN workers w ON w.id = c.worker_id WHERE c.serial = $1",
        )
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Revokes every certificate of the worker and its unused enrollment
    /// tokens, and returns its leased tasks to the queue (their leases end:
    /// a late result from the revoked worker is stale). One transaction.
    pub async fn revoke_worker(&self, worker_id: i64) -> ApiResult<(WorkerRow, u64)> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE workers SET revoked_at = now() WHERE id = $1")
            .bind(worker_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE worker_certificates SET revoked_at = now() WHERE worker_id = $1 AND revoked_at IS NULL",
        )
        .bind(worker_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE enrollment_tokens SET expires_at = LEAST(expires_at, now()) \
             WHERE worker_id = $1 AND used_at IS NULL",
        )
        .bind(worker_id)
        .execute(&mut *tx)
        .await?;
        let requeued: Vec<i64> = sqlx::query_scalar(
            "UPDATE tasks SET state = 'QUEUED', lease_id = NULL, leased_until = NULL, \
             attempts = GREATEST(attempts - 1, 0) \
             WHERE worker_id = $1 AND state = 'LEASED' RETURNING id",
        )
        .bind(worker_id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE restore_runs SET status = 'QUEUED' WHERE task_id = ANY($1) AND status = 'RUNNING'",
        )
        .bind(&requeued)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM worker_sessions WHERE worker_id = $1")
            .bind(worker_id)
            .execute(&mut *tx)
            .await?;
        let text = format!(
            "worker revoked: its certificates are refused from now on; {} leased task(s) queued again",
            requeued.len()
        );
        self.add_message(
            &mut *tx,
            pgsnapman_proto::v1::MessageLevel::Warning,
            "WORKER",
            Some(worker_id),
            None,
            &text,
        )
        .await?;
        tx.commit().await?;
        let n = u64::try_from(requeued.len()).unwrap_or(0);
        Ok((self.worker_by_id(worker_id).await?, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_have_one_spelling() {
        assert_eq!(normalize_serial("00AbC1").unwrap(), "abc1");
        assert_eq!(normalize_serial("0000").unwrap(), "0");
        assert!(normalize_serial("").is_err());
        assert!(normalize_serial("12:34").is_err());
        assert!(normalize_serial(&"1".repeat(65)).is_err());
    }
}
