//! Instance passwords sealed to workers (docs/security-seal.md): the seal
//! keys workers present, the sealed copies pgsnap sends, what each worker
//! receives, and passwords stored in clear before migration 0014 (sealed
//! here, then forgotten). No clear password reaches a log or an error.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use pgsnapman_proto::seal::{self, instance_arg};
use pgsnapman_proto::v1;

use super::Catalog;
use crate::error::{ApiError, ApiResult};
use crate::rows::{InstanceRow, WorkerRow, ts};

/// One checked sealed copy: (worker id, ciphertext, key fingerprint).
pub(super) type Copy = (i64, Vec<u8>, String);

/// The answer to a request that still sends a password in clear.
pub(super) fn refuse_plaintext(password: Option<&String>) -> ApiResult<()> {
    if password.is_some() {
        return Err(ApiError::Invalid(
            "a password in clear is refused: pgsnap seals it to the worker that uses it \
             (sealed_passwords); upgrade pgsnap"
                .into(),
        ));
    }
    Ok(())
}

/// A sealed copy as the catalog holds it.
#[derive(sqlx::FromRow)]
struct Held {
    worker_id: i64,
    worker_name: String,
    sealed: Vec<u8>,
    key_fingerprint: String,
    set_at: DateTime<Utc>,
    current_fingerprint: Option<String>,
}

impl Catalog {
    /// Records the seal key a worker presented in Hello (empty: a worker
    /// older than sealing). A new key makes the copies sealed to the old one
    /// unopenable: logged with the instances it hits.
    pub async fn note_seal_key(&self, worker: &WorkerRow, key: &[u8]) -> ApiResult<()> {
        if key.is_empty() || worker.seal_public_key.as_deref() == Some(key) {
            return Ok(());
        }
        seal::public_key(key).map_err(|e| ApiError::Invalid(format!("Hello: {e}")))?;
        let fingerprint = seal::fingerprint(key);
        sqlx::query(
            "UPDATE workers SET seal_public_key = $2, seal_key_fingerprint = $3, \
             seal_key_presented_at = now() WHERE id = $1",
        )
        .bind(worker.id)
        .bind(key)
        .bind(&fingerprint)
        .execute(&self.pool)
        .await?;
        let Some(old) = &worker.seal_key_fingerprint else {
            tracing::info!(worker = %worker.name, %fingerprint, "worker presented its seal key");
            return Ok(());
        };
        let hit: Vec<(i64, String)> = sqlx::query_as(
            "SELECT i.id, i.name FROM instance_passwords p JOIN instances i ON i.id = p.instance_id \
             WHERE p.worker_id = $1 AND p.key_fingerprint <> $2 ORDER BY i.name",
        )
        .bind(worker.id)
        .bind(&fingerprint)
        .fetch_all(&self.pool)
        .await?;
        let commands: Vec<String> = hit
            .iter()
            .map(|(id, name)| {
                format!(
                    "pgsnap instance set-password {} --worker {}",
                    instance_arg(*id, name),
                    worker.name
                )
            })
            .collect();
        tracing::warn!(worker = %worker.name, old_fingerprint = %old, %fingerprint,
            "worker presented a new seal key: passwords sealed to the old one cannot be opened; \
             set them again: {}", if commands.is_empty() { "none".to_string() } else { commands.join("; ") });
        Ok(())
    }

    /// Workers that connect to `instance_id`: its default worker, the
    /// workers of its dump jobs (and of jobs verified on it), and those that run restores onto it (the
    /// worker holding the source dumps, or its restore worker).
    pub async fn password_users<'e, E: sqlx::PgExecutor<'e>>(
        &self,
        exec: E,
        instance_id: i64,
    ) -> ApiResult<Vec<i64>> {
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT worker_id FROM dump_jobs WHERE instance_id = $1 OR verify_instance_id = $1 \
             UNION SELECT default_worker_id FROM instances \
             WHERE id = $1 AND default_worker_id IS NOT NULL \
             UNION SELECT COALESCE(w.restore_worker_id, w.id) FROM restore_jobs r \
             LEFT JOIN dump_jobs j ON j.id = r.source_job_id \
             LEFT JOIN dumps d ON d.id = r.source_dump_id \
             JOIN workers w ON w.id = COALESCE(d.worker_id, j.worker_id) \
             WHERE r.target_instance_id = $1 ORDER BY 1",
        )
        .bind(instance_id)
        .fetch_all(exec)
        .await?)
    }

    /// Checks the sealed copies of a request: each names a worker that has
    /// presented a key, once, with a ciphertext of a possible size sealed
    /// to that worker's current key.
    pub(super) async fn checked_copies(&self, list: &[v1::SealedPassword]) -> ApiResult<Vec<Copy>> {
        let mut out: Vec<Copy> = Vec::with_capacity(list.len());
        for s in list {
            let w = self
                .worker_ref(s.worker.as_ref())
                .await?
                .ok_or_else(|| ApiError::Invalid("a sealed password names no worker".into()))?;
            seal::check_sealed(&s.ciphertext).map_err(|e| {
                ApiError::Invalid(format!("the password sealed to worker {}: {e}", w.name))
            })?;
            let Some(current) = &w.seal_key_fingerprint else {
                return Err(ApiError::Precondition(format!(
                    "worker {} has not connected yet, so it has no seal key: start it, then set \
                     the password",
                    w.name
                )));
            };
            if *current != s.key_fingerprint {
                return Err(ApiError::Precondition(format!(
                    "the password is sealed to key {} but worker {}'s key is now {current}: \
                     run the command again",
                    pgsnapman_proto::model::quoted(&s.key_fingerprint),
                    w.name
                )));
            }
            if out.iter().any(|(id, _, _)| *id == w.id) {
                return Err(ApiError::Invalid(format!(
                    "two passwords are sealed to worker {}",
                    w.name
                )));
            }
            out.push((w.id, s.ciphertext.clone(), current.clone()));
        }
        Ok(out)
    }

    /// Replaces every sealed copy of an instance's password, and a clear
    /// one from before sealing, by `copies` (none: the instance has no
    /// password any more).
    pub(super) async fn replace_passwords(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        instance_id: i64,
        copies: &[Copy],
    ) -> ApiResult<()> {
        sqlx::query("DELETE FROM instance_passwords WHERE instance_id = $1")
            .bind(instance_id)
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE instances SET legacy_password = NULL WHERE id = $1")
            .bind(instance_id)
            .execute(&mut **tx)
            .await?;
        for (worker_id, sealed, fingerprint) in copies {
            sqlx::query(
                "INSERT INTO instance_passwords (instance_id, worker_id, sealed, key_fingerprint) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(instance_id)
            .bind(worker_id)
            .bind(sealed)
            .bind(fingerprint)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    async fn held(&self, instance_id: i64) -> ApiResult<Vec<Held>> {
        Ok(sqlx::query_as::<_, Held>(
            "SELECT p.worker_id, w.name AS worker_name, p.sealed, p.key_fingerprint, p.set_at, \
             w.seal_key_fingerprint AS current_fingerprint FROM instance_passwords p \
             JOIN workers w ON w.id = p.worker_id WHERE p.instance_id = $1 ORDER BY w.name",
        )
        .bind(instance_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The Admin view of an instance: which workers hold its password.
    pub async fn instance_view(&self, row: &InstanceRow) -> ApiResult<v1::Instance> {
        let mut view = row.to_proto();
        let held = self.held(row.id).await?;
        if held.is_empty() && row.legacy_password.is_none() {
            return Ok(view);
        }
        view.has_password = true;
        let mut by_worker: BTreeMap<String, v1::InstancePassword> = BTreeMap::new();
        for h in &held {
            let state = if h.current_fingerprint.as_deref() == Some(&h.key_fingerprint) {
                v1::PasswordState::Sealed
            } else {
                v1::PasswordState::Stale
            };
            by_worker.insert(
                h.worker_name.clone(),
                v1::InstancePassword {
                    worker_id: h.worker_id,
                    worker_name: h.worker_name.clone(),
                    state: state as i32,
                    key_fingerprint: h.key_fingerprint.clone(),
                    set_at: ts(Some(h.set_at)),
                },
            );
        }
        let users = self.password_users(&self.pool, row.id).await?;
        for id in users {
            if held.iter().any(|h| h.worker_id == id) {
                continue;
            }
            let w = self.worker_by_id(id).await?;
            let state = if row.legacy_password.is_some() {
                v1::PasswordState::Legacy
            } else {
                v1::PasswordState::Missing
            };
            by_worker.insert(
                w.name.clone(),
                v1::InstancePassword {
                    worker_id: id,
                    worker_name: w.name,
                    state: state as i32,
                    key_fingerprint: String::new(),
                    set_at: None,
                },
            );
        }
        view.passwords = by_worker.into_values().collect();
        Ok(view)
    }

    /// `row` as worker `worker_id` receives it: with the copy of the
    /// password sealed to that worker, or, when there is none, the names of
    /// the workers that hold one (the worker fails with a clear reason). A
    /// clear password from before sealing is sealed to the worker now.
    pub async fn connection_for(
        &self,
        row: &InstanceRow,
        worker_id: i64,
    ) -> ApiResult<v1::InstanceConnection> {
        let mut c = row.connection();
        if row.legacy_password.is_some() {
            self.seal_legacy(row.id, worker_id).await?;
        }
        let held = self.held(row.id).await?;
        c.sealed_password = match held.iter().find(|h| h.worker_id == worker_id) {
            Some(h) => Some(v1::InstanceSecret {
                ciphertext: h.sealed.clone(),
                key_fingerprint: h.key_fingerprint.clone(),
                sealed_for: Vec::new(),
            }),
            None if held.is_empty() => None,
            None => Some(v1::InstanceSecret {
                ciphertext: Vec::new(),
                key_fingerprint: String::new(),
                sealed_for: held.iter().map(|h| h.worker_name.clone()).collect(),
            }),
        };
        Ok(c)
    }

    /// Seals an instance's clear password from before migration 0014 to
    /// `worker_id`'s key (if it has presented one and holds no copy sealed
    /// to it), then forgets the clear password once every worker that
    /// uses the instance has such a copy.
    async fn seal_legacy(&self, instance_id: i64, worker_id: i64) -> ApiResult<()> {
        let mut tx = self.pool.begin().await?;
        // Locked: an operator's new password (which clears this one) is
        // never overwritten by the old one.
        let legacy: Option<String> =
            sqlx::query_scalar("SELECT legacy_password FROM instances WHERE id = $1 FOR UPDATE")
                .bind(instance_id)
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
        let Some(legacy) = legacy.map(zeroize::Zeroizing::new) else {
            return Ok(());
        };
        let key: Option<(Option<Vec<u8>>, Option<String>, String)> = sqlx::query_as(
            "SELECT seal_public_key, seal_key_fingerprint, name FROM workers WHERE id = $1",
        )
        .bind(worker_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((Some(key), Some(fingerprint), name)) = key {
            let sealed = seal::seal(&key, &legacy).map_err(|e| {
                ApiError::Internal(anyhow::anyhow!(
                    "seal the password of instance {instance_id} to worker {name}: {e}"
                ))
            })?;
            let n = sqlx::query(
                "INSERT INTO instance_passwords (instance_id, worker_id, sealed, key_fingerprint) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (instance_id, worker_id) DO UPDATE \
                 SET sealed = EXCLUDED.sealed, key_fingerprint = EXCLUDED.key_fingerprint, \
                 set_at = now() WHERE instance_passwords.key_fingerprint <> EXCLUDED.key_fingerprint",
            )
            .bind(instance_id)
            .bind(worker_id)
            .bind(&sealed)
            .bind(&fingerprint)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                tracing::info!(instance_id, worker = %name,
                    "sealed a password stored in clear before sealing to the worker's key");
            }
        }
        let users = self.password_users(&mut *tx, instance_id).await?;
        let unsealed: Vec<String> = sqlx::query_scalar(
            "SELECT w.name FROM workers w WHERE w.id = ANY($2) AND NOT EXISTS \
             (SELECT 1 FROM instance_passwords p WHERE p.instance_id = $1 AND p.worker_id = w.id \
             AND p.key_fingerprint = w.seal_key_fingerprint) ORDER BY w.name",
        )
        .bind(instance_id)
        .bind(&users)
        .fetch_all(&mut *tx)
        .await?;
        if unsealed.is_empty() && !users.is_empty() {
            sqlx::query("UPDATE instances SET legacy_password = NULL WHERE id = $1")
                .bind(instance_id)
                .execute(&mut *tx)
                .await?;
            tracing::info!(
                instance_id,
                "every worker of the instance holds its password sealed: the clear copy from \
                 before sealing is gone from the catalog"
            );
        }
        tx.commit().await?;
        Ok(())
    }

    /// At start: passwords stored in clear before sealing. Those no worker
    /// uses cannot be sealed to anyone: removed, with a warning naming the
    /// command that sets them again. The others wait for their workers.
    pub async fn review_legacy_passwords(&self) -> ApiResult<()> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, name FROM instances WHERE legacy_password IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        for (id, name) in rows {
            let users = self.password_users(&self.pool, id).await?;
            if users.is_empty() {
                sqlx::query("UPDATE instances SET legacy_password = NULL WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                tracing::warn!(instance = %name, instance_id = id,
                    "the password of this instance was stored in clear (before sealing) and no \
                     worker uses it, so it cannot be sealed to one: removed from the catalog; \
                     set it again with `pgsnap instance set-password {} --worker W`",
                    instance_arg(id, &name));
                continue;
            }
            for w in users {
                self.seal_legacy(id, w).await?;
            }
            let left: bool = sqlx::query_scalar(
                "SELECT legacy_password IS NOT NULL FROM instances WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
            if left {
                tracing::warn!(instance = %name, instance_id = id,
                    "the password of this instance is still stored in clear (from before \
                     sealing) until each worker that uses it has connected once and received it \
                     sealed (or set it with `pgsnap instance set-password {}`)",
                    instance_arg(id, &name));
            }
        }
        Ok(())
    }
}
