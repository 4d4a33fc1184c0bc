//! Wake-ups from the catalog: one LISTEN connection per coordinator turns
//! `pgsnapman_wake` / `pgsnapman_task` notifications (migration 0020) into
//! wake-ups of the lease streams it holds and of `WatchTask` streams, so
//! that queued work and task changes are acted on at once. Polls stay as
//! the fallback: a lost notification costs one poll interval, not a task.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

/// Channel: a worker's task was queued (`t<id>`), its schedule changed
/// (`s<id>`), or one of its leased tasks was cancelled (`c<id>`).
pub const WAKE_CHANNEL: &str = "pgsnapman_wake";
/// Channel: a task row changed (`<id>`).
pub const TASK_CHANNEL: &str = "pgsnapman_task";
/// Task changes buffered per `WatchTask` stream; one that falls behind
/// re-reads its task (nothing is missed, only coalesced).
const TASK_BUFFER: usize = 1024;

/// Who to wake when the catalog says something changed.
pub struct Wakeups {
    workers: Mutex<HashMap<i64, Arc<Notify>>>,
    tasks: broadcast::Sender<i64>,
}

impl Default for Wakeups {
    fn default() -> Self {
        Self {
            workers: Mutex::new(HashMap::new()),
            tasks: broadcast::channel(TASK_BUFFER).0,
        }
    }
}

impl Wakeups {
    /// The wake-up of worker `id`'s lease streams (one per worker, shared).
    pub fn worker(&self, id: i64) -> Arc<Notify> {
        let mut map = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id).or_default().clone()
    }

    /// Task ids as their rows change (a lagging receiver should re-read).
    pub fn task_changes(&self) -> broadcast::Receiver<i64> {
        self.tasks.subscribe()
    }

    fn wake_worker(&self, id: i64) {
        let map = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get(&id) {
            nudge(n);
        }
    }

    /// After notifications may have been lost (the LISTEN connection
    /// dropped): everyone looks again.
    fn wake_all(&self) {
        let map = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        for n in map.values() {
            nudge(n);
        }
        // -1: no task has this id; watchers re-read on any value they lag on.
        let _ = self.tasks.send(-1);
    }

    /// Applies one notification; unknown payloads are ignored.
    fn apply(&self, channel: &str, payload: &str) {
        match channel {
            WAKE_CHANNEL => {
                let id = payload
                    .strip_prefix('t')
                    .or_else(|| payload.strip_prefix('s'))
                    .or_else(|| payload.strip_prefix('c'))
                    .and_then(|id| id.parse().ok());
                if let Some(id) = id {
                    self.wake_worker(id);
                }
            }
            TASK_CHANNEL => {
                if let Ok(id) = payload.parse() {
                    let _ = self.tasks.send(id);
                }
            }
            _ => {}
        }
    }
}

/// Wakes every stream waiting now (a worker may hold several), and the next
/// one to wait if none is.
fn nudge(n: &Notify) {
    n.notify_waiters();
    n.notify_one();
}

/// Listens until `shutdown`; reconnects after a lost connection (waking
/// everyone, since notifications sent meanwhile are gone). Holds one
/// connection of the catalog pool while it runs.
pub async fn listen(pool: PgPool, wakeups: Arc<Wakeups>, shutdown: CancellationToken) {
    let mut pause = Duration::from_millis(500);
    loop {
        let mut listener = tokio::select! {
            () = shutdown.cancelled() => return,
            l = connect(&pool) => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("catalog notifications unavailable, polling only: {e}");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(30));
                    continue;
                }
            },
        };
        pause = Duration::from_millis(500);
        tracing::debug!("listening for catalog notifications");
        wakeups.wake_all();
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match next {
                Ok(Some(n)) => wakeups.apply(n.channel(), n.payload()),
                Ok(None) => {
                    tracing::warn!("catalog notification connection lost; reconnecting");
                    wakeups.wake_all();
                }
                Err(e) => {
                    tracing::warn!("catalog notifications: {e}");
                    wakeups.wake_all();
                    break;
                }
            }
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect_with(pool).await?;
    l.listen_all([WAKE_CHANNEL, TASK_CHANNEL]).await?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notifications_wake_the_right_worker_and_watchers() {
        let w = Wakeups::default();
        let seven = w.worker(7);
        let eight = w.worker(8);
        let mut tasks = w.task_changes();
        w.apply(WAKE_CHANNEL, "t7");
        // A stored permit: the next wait returns at once.
        tokio::time::timeout(Duration::from_secs(1), seven.notified())
            .await
            .expect("worker 7 woken");
        w.apply(WAKE_CHANNEL, "s8");
        tokio::time::timeout(Duration::from_secs(1), eight.notified())
            .await
            .expect("worker 8 woken by a schedule change");
        // Garbage is ignored, not a panic.
        for (c, p) in [
            (WAKE_CHANNEL, "x9"),
            (WAKE_CHANNEL, "t"),
            (TASK_CHANNEL, "abc"),
            ("other", "1"),
        ] {
            w.apply(c, p);
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(50), seven.notified())
                .await
                .is_err(),
            "worker 7 was not woken again"
        );
        w.apply(TASK_CHANNEL, "42");
        assert_eq!(tasks.recv().await.ok(), Some(42));
        w.wake_all();
        assert_eq!(tasks.recv().await.ok(), Some(-1));
    }
}
