//! The restore log of one run: every line is queued in the outbox as a
//! `RestoreLogEntry` (synced, so it reaches the catalog even after a crash)
//! and traced. A writer task of the run appends the lines in order, those
//! that wait together in one synced batch, so that the restore never waits
//! for a sync; `close` waits until every line is written (before the run's
//! result is). Bounded: at most `MAX_LINES` lines of at most `MAX_TEXT`
//! bytes per run; what is left out is counted in one last line.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use pgsnapman_proto::v1::{MessageLevel, RestoreLogEntry, event};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::outbox::Outbox;

/// Most log lines of one run.
const MAX_LINES: u32 = 500;
/// Longest text of one line.
const MAX_TEXT: usize = 8 * 1024;
/// Most lines the writer appends in one synced batch.
const WRITE_BATCH: usize = 64;

pub struct RunLog {
    run_id: i64,
    written: AtomicU32,
    dropped: AtomicU32,
    /// To the writer; `None` once closed. Room for every line a run may
    /// write (`MAX_LINES` and the count of those left out).
    lines: Mutex<Option<mpsc::Sender<event::Body>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl RunLog {
    /// Starts the run's writer task (needs a Tokio runtime).
    pub fn new(outbox: Arc<Outbox>, run_id: i64) -> Self {
        let (tx, rx) = mpsc::channel(MAX_LINES as usize + 1);
        Self {
            run_id,
            written: AtomicU32::new(0),
            dropped: AtomicU32::new(0),
            lines: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(tokio::spawn(write_lines(outbox, rx)))),
        }
    }

    // Async so that a line could wait for room one day; today none waits.
    pub async fn info(&self, text: impl Into<String>) {
        self.write(MessageLevel::Info, text.into());
    }

    pub async fn warn(&self, text: impl Into<String>) {
        self.write(MessageLevel::Warning, text.into());
    }

    pub async fn error(&self, text: impl Into<String>) {
        self.write(MessageLevel::Error, text.into());
    }

    fn write(&self, level: MessageLevel, mut text: String) {
        match level {
            MessageLevel::Error => tracing::warn!(run_id = self.run_id, "{text}"),
            MessageLevel::Warning => tracing::warn!(run_id = self.run_id, "{text}"),
            _ => tracing::info!(run_id = self.run_id, "{text}"),
        }
        if self.written.fetch_add(1, Ordering::Relaxed) >= MAX_LINES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if text.len() > MAX_TEXT {
            let mut n = MAX_TEXT;
            while !text.is_char_boundary(n) {
                n -= 1;
            }
            text.truncate(n);
            text.push('…');
        }
        self.append(level, text);
    }

    fn append(&self, level: MessageLevel, text: String) {
        let body = event::Body::RestoreLog(RestoreLogEntry {
            run_id: self.run_id,
            level: level as i32,
            text,
        });
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let sent = lines.as_ref().is_some_and(|tx| tx.try_send(body).is_ok());
        if !sent {
            // Closed (a line after `close`) or full (more than the bound).
            tracing::error!(run_id = self.run_id, "cannot queue a restore log line");
        }
    }

    /// Writes the count of lines left out, if any, and waits until every
    /// line is in the outbox.
    pub async fn close(&self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            self.append(
                MessageLevel::Warning,
                format!(
                    "{dropped} more log lines of this restore were left out (limit {MAX_LINES})"
                ),
            );
        }
        // The writer ends once the sender is gone and the queue is empty.
        drop(self.lines.lock().unwrap_or_else(|e| e.into_inner()).take());
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer
            && let Err(err) = writer.await
        {
            tracing::error!(
                run_id = self.run_id,
                "the restore log's writer failed: {err}"
            );
        }
    }
}

/// Appends the lines of one run in order: those waiting together in one
/// synced batch.
async fn write_lines(outbox: Arc<Outbox>, mut rx: mpsc::Receiver<event::Body>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let bodies = std::mem::take(&mut batch);
        let outbox = Arc::clone(&outbox);
        match tokio::task::spawn_blocking(move || outbox.append_all(bodies)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::error!("cannot queue restore log lines: {err:#}"),
            Err(err) => tracing::error!("cannot queue restore log lines: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    fn open(data_dir: &std::path::Path) -> Arc<Outbox> {
        let state = State::open(&crate::state::dir(data_dir)).unwrap();
        Arc::new(Outbox::open(&state).unwrap())
    }

    fn texts(outbox: &Outbox) -> Vec<String> {
        outbox
            .oldest(10_000)
            .unwrap()
            .into_iter()
            .map(|e| match e.body {
                Some(event::Body::RestoreLog(l)) => l.text,
                other => panic!("not a restore log line: {other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn lines_are_in_the_outbox_in_order_once_closed() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path());
        let log = RunLog::new(Arc::clone(&outbox), 7);
        for i in 0..100 {
            log.info(format!("line {i}")).await;
        }
        log.warn("x".repeat(MAX_TEXT + 10)).await;
        log.close().await;
        let got = texts(&outbox);
        assert_eq!(got.len(), 101);
        assert!(
            got[..100]
                .iter()
                .enumerate()
                .all(|(i, t)| *t == format!("line {i}"))
        );
        assert_eq!(got[100].len(), MAX_TEXT + '…'.len_utf8());
    }

    #[tokio::test]
    async fn lines_beyond_the_limit_are_counted_in_one_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path());
        let log = RunLog::new(Arc::clone(&outbox), 7);
        for i in 0..MAX_LINES + 3 {
            log.error(format!("line {i}")).await;
        }
        log.close().await;
        // A line after close is not written (and does not block).
        log.info("late").await;
        let got = texts(&outbox);
        assert_eq!(got.len(), MAX_LINES as usize + 1);
        assert_eq!(
            got.last().map(String::as_str),
            Some("3 more log lines of this restore were left out (limit 500)")
        );
    }
}
