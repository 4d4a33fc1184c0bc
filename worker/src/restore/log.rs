//! The restore log of one run: every line is queued in the outbox as a
//! `RestoreLogEntry` (synced, so it reaches the catalog even after a crash)
//! and traced. Bounded: at most `MAX_LINES` lines of at most `MAX_TEXT`
//! bytes per run; what is left out is counted in one last line.
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use pgsnapman_proto::v1::{MessageLevel, RestoreLogEntry, event};

use crate::outbox::Outbox;

/// Most log lines of one run.
const MAX_LINES: u32 = 500;
/// Longest text of one line.
const MAX_TEXT: usize = 8 * 1024;

pub struct RunLog {
    outbox: Arc<Outbox>,
    run_id: i64,
    written: AtomicU32,
    dropped: AtomicU32,
}

impl RunLog {
    pub fn new(outbox: Arc<Outbox>, run_id: i64) -> Self {
        Self {
            outbox,
            run_id,
            written: AtomicU32::new(0),
            dropped: AtomicU32::new(0),
        }
    }

    pub async fn info(&self, text: impl Into<String>) {
        self.write(MessageLevel::Info, text.into()).await;
    }

    pub async fn warn(&self, text: impl Into<String>) {
        self.write(MessageLevel::Warning, text.into()).await;
    }

    pub async fn error(&self, text: impl Into<String>) {
        self.write(MessageLevel::Error, text.into()).await;
    }

    async fn write(&self, level: MessageLevel, mut text: String) {
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
        self.append(level, text).await;
    }

    async fn append(&self, level: MessageLevel, text: String) {
        let body = event::Body::RestoreLog(RestoreLogEntry {
            run_id: self.run_id,
            level: level as i32,
            text,
        });
        let outbox = Arc::clone(&self.outbox);
        match tokio::task::spawn_blocking(move || outbox.append(body)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::error!("cannot queue a restore log line: {err:#}"),
            Err(err) => tracing::error!("cannot queue a restore log line: {err}"),
        }
    }

    /// Writes the count of lines left out, if any (always written).
    pub async fn close(&self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            self.append(
                MessageLevel::Warning,
                format!(
                    "{dropped} more log lines of this restore were left out (limit {MAX_LINES})"
                ),
            )
            .await;
        }
    }
}
