//! The Worker service: every call is opened by a worker and answered about
//! the worker its client certificate names (`caller.rs`), never about a name
//! it presents. Hello, schedule sync, the lease stream (`session.rs`), the
//! upload stream, enrollment and renewal (`enroll.rs`). See docs/protocol.md.
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use pgsnapman_proto::v1;
use pgsnapman_proto::v1::lease_request::Msg as In;
use pgsnapman_proto::v1::worker_service_server::WorkerService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use crate::catalog::Catalog;
use crate::config::{EnrollmentConfig, LeaseConfig};
use crate::pki::Pki;
use crate::rows;
use crate::streams::{StreamKind, StreamRegistry};

pub mod caller;
mod enroll;
mod session;

pub use caller::{Caller, IdentityMode};
use session::Session;

pub struct Link {
    pub catalog: Catalog,
    pub lease: LeaseConfig,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// Open streams per worker: bounded, and cut on revocation.
    pub streams: Arc<StreamRegistry>,
    pub identity: IdentityMode,
    /// Signs worker CSRs (Enroll, RenewCertificate).
    pub pki: Arc<Pki>,
    pub enrollment: EnrollmentConfig,
    /// Catalog notifications: wake a worker's lease streams at once.
    pub wakeups: Arc<crate::wake::Wakeups>,
    /// Schedule builds running at once (`SYNC_SHARE` of the catalog pool):
    /// a fleet syncing together queues here, in memory, instead of holding
    /// every catalog connection until the pool times out, and leases,
    /// renewals and uploads keep connections of their own.
    pub syncs: Arc<tokio::sync::Semaphore>,
}

/// The share of `catalog.max_connections` schedule builds may hold.
pub const SYNC_SHARE: u32 = 2;

impl Link {
    async fn caller<T>(&self, req: &Request<T>, claimed: &str) -> Result<Caller, Status> {
        Caller::of(&self.catalog, self.identity, req, claimed).await
    }

    /// Runs a unary call under `lease.call_timeout`.
    async fn bounded<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        tokio::time::timeout(self.lease.call_timeout, f)
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "{what} took longer than {:?} (lease.call_timeout)",
                    self.lease.call_timeout
                ))
            })?
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

#[tonic::async_trait]
impl WorkerService for Link {
    async fn hello(
        &self,
        req: Request<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloResponse>, Status> {
        self.bounded("Hello", self.hello_inner(req)).await
    }

    async fn sync_schedule(
        &self,
        req: Request<v1::SyncScheduleRequest>,
    ) -> Result<Response<v1::SyncScheduleResponse>, Status> {
        self.bounded("SyncSchedule", async {
            let _permit = self
                .syncs
                .acquire()
                .await
                .map_err(|_| Status::unavailable("the coordinator is stopping"))?;
            self.sync_schedule_inner(req).await
        })
        .await
    }

    type LeaseStream = BoxStream<v1::LeaseResponse>;

    async fn lease(
        &self,
        req: Request<Streaming<v1::LeaseRequest>>,
    ) -> Result<Response<Self::LeaseStream>, Status> {
        // Authenticated before anything is read: a stranger costs no more
        // than a handshake.
        let caller = match self.identity {
            IdentityMode::Certificate => Some(self.caller(&req, "").await?),
            IdentityMode::PresentedName => None,
        };
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(OPEN_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!("no Open message within {OPEN_TIMEOUT:?}"))
            })??;
        let Some(v1::LeaseRequest {
            msg: Some(In::Open(open)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message on a lease stream must be Open",
            ));
        };
        let caller = match caller {
            Some(c) => {
                c.check_name(&open.worker_name)?;
                c
            }
            None => {
                Caller::of(
                    &self.catalog,
                    self.identity,
                    &Request::new(()),
                    &open.worker_name,
                )
                .await?
            }
        };
        let slot = self
            .streams
            .open(caller.worker.id, &caller.worker.name, StreamKind::Lease)
            .map_err(Status::resource_exhausted)?;
        let (tx, rx) = mpsc::channel(64);
        let wake = self.wakeups.worker(caller.worker.id);
        let session = Session {
            id: uuid::Uuid::new_v4(),
            worker: caller.worker.clone(),
            caller,
            catalog: self.catalog.clone(),
            lease: self.lease.clone(),
            tx,
            credits: 0,
            wake,
            slot,
            leases: std::collections::HashMap::new(),
        };
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(session.run(inbound, shutdown));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type UploadEventsStream = BoxStream<v1::EventAck>;

    async fn upload_events(
        &self,
        req: Request<Streaming<v1::EventBatch>>,
    ) -> Result<Response<Self::UploadEventsStream>, Status> {
        let caller = match self.identity {
            IdentityMode::Certificate => Some(self.caller(&req, "").await?),
            IdentityMode::PresentedName => None,
        };
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let upload = Upload {
            catalog: self.catalog.clone(),
            identity: self.identity,
            streams: self.streams.clone(),
            recheck_every: self.lease.keepalive_interval,
        };
        let shutdown = self.shutdown.clone();
        self.tracker
            .spawn(upload.run(caller, inbound, tx.clone(), shutdown));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn enroll(
        &self,
        req: Request<v1::EnrollRequest>,
    ) -> Result<Response<v1::EnrollResponse>, Status> {
        self.bounded("Enroll", self.enroll_inner(req))
            .await
            .map(Response::new)
    }

    async fn renew_certificate(
        &self,
        req: Request<v1::RenewCertificateRequest>,
    ) -> Result<Response<v1::EnrollResponse>, Status> {
        self.bounded("RenewCertificate", self.renew_inner(req))
            .await
            .map(Response::new)
    }
}

/// The time zone a Hello names, if it is a known IANA name (`None`: empty,
/// from a worker older than the field, or unknown: the dashboard reads that
/// worker's crons in UTC).
fn reported_timezone<'a>(worker: &str, name: &'a str) -> Option<&'a str> {
    if name.is_empty() {
        return None;
    }
    match pgsnapman_proto::retention::timezone(name) {
        Ok(_) => Some(name),
        Err(e) => {
            tracing::warn!(worker, "hello: {e}; its crons are shown in UTC");
            None
        }
    }
}

/// Longest wait for the Open message of a lease stream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

impl Link {
    async fn hello_inner(
        &self,
        req: Request<v1::HelloRequest>,
    ) -> Result<Response<v1::HelloResponse>, Status> {
        let caller = self.caller(&req, &req.get_ref().worker_name).await?;
        let req = req.into_inner();
        let w = caller.worker;
        self.catalog.note_seal_key(&w, &req.seal_public_key).await?;
        self.catalog
            .note_store_location(w.id, req.store_location.as_ref())
            .await?;
        self.catalog
            .hello(
                w.id,
                &req.agent_version,
                &req.client_majors,
                req.outbox_backlog,
                reported_timezone(&w.name, &req.timezone),
            )
            .await?;
        tracing::info!(worker = %w.name, agent = %req.agent_version, majors = ?req.client_majors,
            backlog = req.outbox_backlog, "worker said hello");
        Ok(Response::new(v1::HelloResponse {
            worker_id: w.id,
            status: rows::status_value(&w.status),
            schedule_version: u64::try_from(w.schedule_version).unwrap_or(0),
            lease_ttl: Some(proto_duration(self.lease.ttl)),
            keepalive_interval: Some(proto_duration(self.lease.keepalive_interval)),
            coordinator_version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn sync_schedule_inner(
        &self,
        req: Request<v1::SyncScheduleRequest>,
    ) -> Result<Response<v1::SyncScheduleResponse>, Status> {
        let caller = self.caller(&req, &req.get_ref().worker_name).await?;
        let req = req.into_inner();
        let w = caller.worker;
        let version = u64::try_from(w.schedule_version).unwrap_or(0);
        if req.known_version == version {
            return Ok(Response::new(v1::SyncScheduleResponse {
                version,
                unchanged: true,
                schedule: None,
            }));
        }
        // Read the jobs and their instances at one version: read again if an
        // Admin change bumped the version meanwhile.
        let mut before = w.schedule_version;
        for _ in 0..5 {
            let jobs = self.catalog.jobs_of_worker(w.id).await?;
            // The instances its jobs use, and those whose databases it lists.
            // Scheduled verifications restore into `verify_instance_id`.
            let mut instance_ids: Vec<i64> = jobs
                .iter()
                .flat_map(|j| std::iter::once(j.instance_id).chain(j.verify_instance_id))
                .collect();
            instance_ids.extend(self.catalog.discovery_instances(w.id).await?);
            instance_ids.sort_unstable();
            instance_ids.dedup();
            let mut instances = Vec::with_capacity(instance_ids.len());
            for id in instance_ids {
                let row = self.catalog.instance(id).await?;
                instances.push(v1::InstanceConnection {
                    discover: row.discovered_by(w.id),
                    ..self.catalog.connection_for(&row, w.id).await?
                });
            }
            let protected = self.catalog.protected_dumps(w.id).await?;
            let scripts = self.catalog.scripts_of_jobs(&jobs).await?;
            let (after, _) = self.catalog.schedule_version(w.id).await?;
            if after == before {
                return Ok(Response::new(v1::SyncScheduleResponse {
                    version: u64::try_from(after).unwrap_or(0),
                    unchanged: false,
                    schedule: Some(v1::Schedule {
                        dump_jobs: jobs.iter().map(rows::JobRow::to_proto).collect(),
                        instances,
                        protected_dump_uuids: protected.into_iter().map(|(u, _)| u).collect(),
                        scripts,
                    }),
                }));
            }
            before = after;
        }
        Err(Status::unavailable("the schedule is changing; pull again"))
    }
}

/// One open upload stream.
struct Upload {
    catalog: Catalog,
    identity: IdentityMode,
    streams: Arc<StreamRegistry>,
    recheck_every: Duration,
}

impl Upload {
    /// Applies batches until the worker closes the stream, a batch fails,
    /// the coordinator stops or the worker is revoked. `caller` is known up
    /// front with certificates; on plaintext the first batch names it.
    async fn run(
        self,
        mut caller: Option<Caller>,
        mut inbound: Streaming<v1::EventBatch>,
        tx: mpsc::Sender<Result<v1::EventAck, Status>>,
        shutdown: CancellationToken,
    ) {
        let mut slot = None;
        let mut recheck = tokio::time::interval(self.recheck_every);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let never = CancellationToken::new();
        loop {
            let cut = slot
                .as_ref()
                .map_or(never.clone(), |s: &crate::streams::StreamSlot| {
                    s.cut.clone()
                });
            let batch = tokio::select! {
                () = shutdown.cancelled() => break,
                () = cut.cancelled() => {
                    let _ = tx.send(Err(Status::permission_denied(
                        "this worker was revoked: re-enroll with a new token (pgsnap worker enroll-token NAME)",
                    ))).await;
                    break;
                }
                _ = recheck.tick() => {
                    if let Some(c) = &caller
                        && let Err(status) = c.check_not_revoked(&self.catalog).await
                        && matches!(status.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated)
                    {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                    continue;
                }
                m = inbound.message() => match m {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("upload stream ended: {e}");
                        break;
                    }
                },
            };
            let c = match &caller {
                Some(c) => c.clone(),
                None => match Caller::of(
                    &self.catalog,
                    self.identity,
                    &Request::new(()),
                    &batch.worker_name,
                )
                .await
                {
                    Ok(c) => {
                        caller = Some(c.clone());
                        c
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                },
            };
            if let Err(status) = c.check_name(&batch.worker_name) {
                let _ = tx.send(Err(status)).await;
                break;
            }
            if slot.is_none() {
                match self
                    .streams
                    .open(c.worker.id, &c.worker.name, StreamKind::Upload)
                {
                    Ok(s) => slot = Some(s),
                    Err(line) => {
                        let _ = tx.send(Err(Status::resource_exhausted(line))).await;
                        break;
                    }
                }
            }
            let w = &c.worker;
            let started = Instant::now();
            match self
                .catalog
                .apply_events(w.id, &batch.events, batch.outbox_backlog)
                .await
            {
                Ok(out) => {
                    tracing::debug!(worker = %w.name, applied = out.applied,
                        duplicates = out.duplicates, backlog = batch.outbox_backlog,
                        elapsed = ?started.elapsed(), "event batch applied");
                    let ack = v1::EventAck {
                        up_to_event_id: out.up_to,
                        applied: out.applied,
                        duplicates: out.duplicates,
                    };
                    if tx.send(Ok(ack)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    break;
                }
            }
        }
    }
}
