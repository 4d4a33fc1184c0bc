//! Who is calling the WorkerService: the worker its verified client
//! certificate names, if the catalog issued that certificate and it is not
//! revoked. Names inside requests are only checked against it. Without TLS
//! (plaintext, loopback only) the presented name is all there is.
use tonic::{Request, Status};

use crate::catalog::{Catalog, normalize_serial};
use crate::identity::peer_identity;
use crate::rows::WorkerRow;

/// What a caller without a certificate is told.
pub const ENROLL_FIRST: &str = "no client certificate: enroll this worker first (pgsnap worker register NAME, \
     or pgsnap worker enroll-token NAME, then pgsnapman-worker enroll)";

/// An authenticated worker.
#[derive(Debug, Clone)]
pub struct Caller {
    pub worker: WorkerRow,
    /// The certificate's serial (normalized); `None` on plaintext.
    pub serial: Option<String>,
}

/// How the WorkerService identifies callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityMode {
    /// TLS with client certificates from our CA: the certificate decides.
    Certificate,
    /// Plaintext on loopback (server.plaintext): the presented name decides.
    PresentedName,
}

impl Caller {
    /// Authenticates the caller of `req`. `claimed` is the worker name the
    /// request carries (may be empty); a name other than the certificate's is
    /// PERMISSION_DENIED.
    pub async fn of<T>(
        catalog: &Catalog,
        mode: IdentityMode,
        req: &Request<T>,
        claimed: &str,
    ) -> Result<Caller, Status> {
        if mode == IdentityMode::PresentedName {
            let worker = catalog.worker_by_name(claimed).await?;
            let caller = Caller {
                worker,
                serial: None,
            };
            caller.check_not_revoked(catalog).await?;
            return Ok(caller);
        }
        let id = peer_identity(req.peer_certs())
            .map_err(Status::unauthenticated)?
            .ok_or_else(|| Status::unauthenticated(ENROLL_FIRST))?;
        let serial = normalize_serial(&id.serial)?;
        let owner = catalog.certificate_owner(&serial).await?.ok_or_else(|| {
            Status::unauthenticated(format!(
                "the certificate of worker {} (serial {serial}) was not issued by this coordinator: enroll again with a new token (pgsnap worker enroll-token {})",
                id.worker_name, id.worker_name
            ))
        })?;
        if owner.worker_name != id.worker_name {
            return Err(Status::permission_denied(format!(
                "certificate serial {serial} names worker {} but was issued to worker {}",
                id.worker_name, owner.worker_name
            )));
        }
        if let Some(at) = owner.revoked_at {
            return Err(revoked(&owner.worker_name, &serial, at));
        }
        if !claimed.is_empty() && claimed != owner.worker_name {
            return Err(Status::permission_denied(format!(
                "the request names worker {} but the certificate is worker {}'s",
                pgsnapman_proto::model::quoted(claimed),
                owner.worker_name
            )));
        }
        let worker = catalog.worker_by_id(owner.worker_id).await?;
        Ok(Caller {
            worker,
            serial: Some(serial),
        })
    }

    /// A name a message carries must be empty or the caller's.
    pub fn check_name(&self, claimed: &str) -> Result<(), Status> {
        if claimed.is_empty() || claimed == self.worker.name {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "the message names worker {} but this stream is worker {}'s",
                pgsnapman_proto::model::quoted(claimed),
                self.worker.name
            )))
        }
    }

    /// Re-checks revocation (long-lived streams call this every keepalive).
    pub async fn check_not_revoked(&self, catalog: &Catalog) -> Result<(), Status> {
        match &self.serial {
            Some(serial) => match catalog.certificate_owner(serial).await? {
                Some(o) if o.revoked_at.is_none() => Ok(()),
                Some(o) => Err(revoked(
                    &self.worker.name,
                    serial,
                    o.revoked_at.unwrap_or_default(),
                )),
                None => Err(Status::unauthenticated(format!(
                    "the certificate of worker {} (serial {serial}) is no longer known",
                    self.worker.name
                ))),
            },
            None => {
                let w = catalog.worker_by_id(self.worker.id).await?;
                match w.revoked_at {
                    Some(at) => Err(Status::permission_denied(format!(
                        "worker {} was revoked at {}: re-enroll with a new token (pgsnap worker enroll-token {})",
                        w.name,
                        at.format("%Y-%m-%d %H:%M:%S UTC"),
                        w.name
                    ))),
                    None => Ok(()),
                }
            }
        }
    }
}

fn revoked(name: &str, serial: &str, at: chrono::DateTime<chrono::Utc>) -> Status {
    Status::permission_denied(format!(
        "worker {name} is revoked (certificate {serial} revoked at {}): re-enroll with a new token (pgsnap worker enroll-token {name})",
        at.format("%Y-%m-%d %H:%M:%S UTC")
    ))
}
