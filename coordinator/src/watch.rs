//! `WatchTask`: the task now, then each change of its row, until it has
//! finished — driven by catalog notifications (`wake.rs`) with a re-read
//! every `FALLBACK` as the safety net. Bounded by `admin.max_watch_streams`;
//! ends with UNAVAILABLE when the coordinator stops (the client resumes on
//! another one or after the restart).
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use pgsnapman_proto::v1;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::catalog::Catalog;
use crate::wake::Wakeups;

/// Re-read the task this often even without a notification (LISTEN lost,
/// or a catalog behind a pooler that drops notifications).
const FALLBACK: Duration = Duration::from_secs(2);

pub type TaskStream = Pin<Box<dyn Stream<Item = Result<v1::Task, Status>> + Send + 'static>>;

/// The open `WatchTask` streams of this coordinator.
#[derive(Clone)]
pub struct Watches {
    wakeups: Arc<Wakeups>,
    slots: Arc<Semaphore>,
    max: usize,
    shutdown: CancellationToken,
}

impl Watches {
    pub fn new(wakeups: Arc<Wakeups>, max: usize, shutdown: CancellationToken) -> Self {
        Self {
            wakeups,
            slots: Arc::new(Semaphore::new(max)),
            max,
            shutdown,
        }
    }

    /// Opens a watch of task `id`: NOT_FOUND for an unknown task,
    /// RESOURCE_EXHAUSTED when `admin.max_watch_streams` are open.
    pub async fn open(&self, catalog: Catalog, id: i64) -> Result<TaskStream, Status> {
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} WatchTask streams are open on this coordinator (admin.max_watch_streams); poll with GetTask or retry later",
                self.max
            ))
        })?;
        // Subscribed before the first read: no change can fall in between.
        let mut changes = self.wakeups.task_changes();
        let mut last = catalog.task(id).await?.to_proto();
        let (tx, rx) = mpsc::channel(16);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if tx.send(Ok(last.clone())).await.is_err() {
                return;
            }
            let mut fallback = tokio::time::interval(FALLBACK);
            fallback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            fallback.tick().await;
            while !last.state().is_finished() {
                tokio::select! {
                    () = tx.closed() => return,
                    () = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("the coordinator is shutting down; watch again"))).await;
                        return;
                    }
                    r = changes.recv() => match r {
                        // -1: notifications may have been lost; re-read.
                        Ok(t) if t == id || t == -1 => {}
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = fallback.tick() => {}
                }
                match catalog.task(id).await {
                    Ok(t) => {
                        let now = t.to_proto();
                        if now != last {
                            last = now;
                            if tx.send(Ok(last.clone())).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}
