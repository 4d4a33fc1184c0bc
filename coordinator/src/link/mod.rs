//! The Worker service: every call is opened by a worker. Hello identifies
//! it; the lease stream hands it tasks under renewable leases; the upload
//! stream applies its outbox events. See docs/protocol.md.
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::Stream;
use pgsnapman_proto::v1;
use pgsnapman_proto::v1::lease_request::Msg as In;
use pgsnapman_proto::v1::lease_response::Msg as Out;
use pgsnapman_proto::v1::worker_service_server::WorkerService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use crate::catalog::Catalog;
use crate::config::LeaseConfig;
use crate::rows::{self, WorkerRow};

pub struct Link {
    pub catalog: Catalog,
    pub lease: LeaseConfig,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
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
        let req = req.into_inner();
        let w = self.catalog.worker_by_name(&req.worker_name).await?;
        self.catalog
            .hello(
                w.id,
                &req.agent_version,
                &req.client_majors,
                req.outbox_backlog,
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

    async fn sync_schedule(
        &self,
        req: Request<v1::SyncScheduleRequest>,
    ) -> Result<Response<v1::SyncScheduleResponse>, Status> {
        let req = req.into_inner();
        let w = self.catalog.worker_by_name(&req.worker_name).await?;
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
            let mut instance_ids: Vec<i64> = jobs.iter().map(|j| j.instance_id).collect();
            instance_ids.extend(self.catalog.discovery_instances(w.id).await?);
            instance_ids.sort_unstable();
            instance_ids.dedup();
            let mut instances = Vec::with_capacity(instance_ids.len());
            for id in instance_ids {
                let row = self.catalog.instance(id).await?;
                instances.push(v1::InstanceConnection {
                    discover: row.discovered_by(w.id),
                    ..row.connection()
                });
            }
            let (after, _) = self.catalog.schedule_version(w.id).await?;
            if after == before {
                return Ok(Response::new(v1::SyncScheduleResponse {
                    version: u64::try_from(after).unwrap_or(0),
                    unchanged: false,
                    schedule: Some(v1::Schedule {
                        dump_jobs: jobs.iter().map(rows::JobRow::to_proto).collect(),
                        instances,
                    }),
                }));
            }
            before = after;
        }
        Err(Status::unavailable("the schedule is changing; pull again"))
    }

    type LeaseStream = BoxStream<v1::LeaseResponse>;

    async fn lease(
        &self,
        req: Request<Streaming<v1::LeaseRequest>>,
    ) -> Result<Response<Self::LeaseStream>, Status> {
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(30), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Open message within 30s"))??;
        let Some(v1::LeaseRequest {
            msg: Some(In::Open(open)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message on a lease stream must be Open",
            ));
        };
        let worker = self.catalog.worker_by_name(&open.worker_name).await?;
        let (tx, rx) = mpsc::channel(64);
        let session = Session {
            id: uuid::Uuid::new_v4(),
            worker,
            catalog: self.catalog.clone(),
            lease: self.lease.clone(),
            tx,
            credits: 0,
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
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let catalog = self.catalog.clone();
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            let mut worker: Option<WorkerRow> = None;
            loop {
                let batch = tokio::select! {
                    () = shutdown.cancelled() => break,
                    m = inbound.message() => match m {
                        Ok(Some(b)) => b,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!("upload stream ended: {e}");
                            break;
                        }
                    },
                };
                let w = match &worker {
                    Some(w) if w.name == batch.worker_name => w.clone(),
                    Some(w) => {
                        let _ = tx
                            .send(Err(Status::invalid_argument(format!(
                                "batch from {:?} on the upload stream of {:?}",
                                batch.worker_name, w.name
                            ))))
                            .await;
                        break;
                    }
                    None => match catalog.worker_by_name(&batch.worker_name).await {
                        Ok(w) => {
                            worker = Some(w.clone());
                            w
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            break;
                        }
                    },
                };
                let started = Instant::now();
                match catalog
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
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One open lease stream.
struct Session {
    id: uuid::Uuid,
    worker: WorkerRow,
    catalog: Catalog,
    lease: LeaseConfig,
    tx: mpsc::Sender<Result<v1::LeaseResponse, Status>>,
    credits: u32,
}

/// Credit a worker may hold at once; more is a protocol error we clamp.
const MAX_CREDITS: u32 = 256;

impl Session {
    fn stale_after(&self) -> Duration {
        self.lease.keepalive_interval * 3
    }

    async fn send(&self, msg: Out) -> bool {
        self.tx
            .send(Ok(v1::LeaseResponse { msg: Some(msg) }))
            .await
            .is_ok()
    }

    async fn run(mut self, mut inbound: Streaming<v1::LeaseRequest>, shutdown: CancellationToken) {
        let name = self.worker.name.clone();
        if let Err(e) = self
            .catalog
            .open_session(self.id, self.worker.id, self.stale_after())
            .await
        {
            let _ = self.tx.send(Err(e.into())).await;
            return;
        }
        tracing::info!(worker = %name, session = %self.id, "lease stream open");
        let mut poll = tokio::time::interval(self.lease.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut keepalive = tokio::time::interval(self.lease.keepalive_interval);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut known_version = self.worker.schedule_version;
        let reason = loop {
            tokio::select! {
                () = shutdown.cancelled() => break "coordinator shutting down",
                m = inbound.message() => match m {
                    Ok(Some(m)) => {
                        last_heard = Instant::now();
                        if let Err(e) = self.handle(m).await {
                            tracing::warn!(worker = %name, "lease stream: {e:#}");
                        }
                    }
                    Ok(None) => break "closed by the worker",
                    Err(_) => break "broken",
                },
                _ = poll.tick() => {
                    if last_heard.elapsed() > self.stale_after() {
                        break "worker silent for three keepalive intervals";
                    }
                    match self.catalog.schedule_version(self.worker.id).await {
                        Ok((v, _)) if v != known_version => {
                            known_version = v;
                            let version = u64::try_from(v).unwrap_or(0);
                            if !self.send(Out::ScheduleChanged(v1::ScheduleChanged { version })).await {
                                break "closed by the worker";
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(worker = %name, "schedule version: {e}"),
                    }
                    if self.credits > 0 && !self.dispatch().await {
                        break "closed by the worker";
                    }
                }
                _ = keepalive.tick() => {
                    let ka = v1::Keepalive { sent_at: Some(pgsnapman_proto::timestamp(chrono::Utc::now())) };
                    if !self.send(Out::Keepalive(ka)).await {
                        break "closed by the worker";
                    }
                }
            }
        };
        if let Err(e) = self.catalog.close_session(self.id).await {
            tracing::warn!(worker = %name, "could not close session: {e}");
        }
        tracing::info!(worker = %name, session = %self.id, reason, "lease stream ended");
    }

    async fn handle(&mut self, m: v1::LeaseRequest) -> anyhow::Result<()> {
        let Some(m) = m.msg else { return Ok(()) };
        match m {
            In::Open(_) => anyhow::bail!("a second Open on the same stream is ignored"),
            In::Credit(c) => {
                self.credits = self.credits.saturating_add(c.slots).min(MAX_CREDITS);
                // Hand out work at once rather than at the next poll.
                self.dispatch().await;
            }
            In::Renew(r) => {
                let lease = uuid::Uuid::parse_str(&r.lease_id).unwrap_or_default();
                let out = match self.catalog.renew(r.task_id, lease, self.lease.ttl).await? {
                    Some(until) => Out::Renewed(v1::Renewed {
                        task_id: r.task_id,
                        leased_until: Some(pgsnapman_proto::timestamp(until)),
                    }),
                    None => {
                        tracing::info!(worker = %self.worker.name, task = r.task_id, "renewal refused: lease lost");
                        Out::LeaseLost(v1::LeaseLost {
                            task_id: r.task_id,
                            reason: "the lease expired or the task was cancelled".into(),
                        })
                    }
                };
                self.send(out).await;
            }
            In::Progress(p) => {
                if let Some(progress) = &p.progress {
                    let lease = uuid::Uuid::parse_str(&p.lease_id).unwrap_or_default();
                    self.catalog.progress(p.task_id, lease, progress).await?;
                }
            }
            In::Keepalive(_) => {
                self.catalog
                    .touch_session(self.id, self.worker.id, self.stale_after())
                    .await?;
            }
            In::ConfirmSchedule(c) => {
                self.catalog
                    .confirm_schedule(self.worker.id, c.version)
                    .await?;
            }
        }
        Ok(())
    }

    /// Leases queued tasks up to the worker's credit. False if the stream is
    /// gone.
    async fn dispatch(&mut self) -> bool {
        let claimed = match self
            .catalog
            .claim(self.worker.id, self.credits, self.lease.ttl)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(worker = %self.worker.name, "claiming tasks failed: {e}");
                return true;
            }
        };
        for c in claimed {
            let lease_id = c.task.lease_id.unwrap_or_default();
            let assignment = v1::TaskAssignment {
                task_id: c.task.id,
                lease_id: lease_id.to_string(),
                leased_until: c.task.leased_until.map(pgsnapman_proto::timestamp),
                attempt: u32::try_from(c.task.attempts).unwrap_or(0),
                spec: Some(c.spec),
            };
            if self.send(Out::Assignment(assignment)).await {
                self.credits = self.credits.saturating_sub(1);
                tracing::info!(worker = %self.worker.name, task = c.task.id,
                    attempt = c.task.attempts, "task leased");
            } else {
                if let Err(e) = self.catalog.release(c.task.id, lease_id).await {
                    tracing::warn!(
                        task = c.task.id,
                        "could not release an undelivered lease: {e}"
                    );
                }
                return false;
            }
        }
        true
    }
}
