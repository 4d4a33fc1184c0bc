//! Uploads the outbox on one session's `UploadEvents` stream: oldest events
//! first, in batches; events are deleted only after the coordinator's
//! acknowledgement. Never drops an event: one the coordinator refuses is set
//! aside (`outbox/refused.rs`); any other error ends the session.
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use pgsnapman_proto::v1::{EventAck, EventBatch, MessageLevel, WorkerMessage, event};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use uuid::Uuid;

use super::Client;
use crate::Shared;

/// Batches in flight on the upload stream: one at a time, each waits for its
/// acknowledgement.
const UPLOAD_QUEUE: usize = 1;
/// Longest wait for an EventAck (a batch is applied in one transaction).
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the upload stream to open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval when the outbox is empty (an append also wakes us).
const IDLE_POLL: Duration = Duration::from_secs(1);

type Stream = (mpsc::Sender<EventBatch>, Streaming<EventAck>);

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("outbox task failed: {e}"))?
}

/// Warns once when the backlog crosses `outbox.warn_events`.
async fn check_backlog(shared: &Shared, len: u64) {
    let limit = shared.config.outbox.warn_events;
    if len <= limit {
        shared.backlog_warned.store(false, Ordering::Relaxed);
        return;
    }
    if shared.backlog_warned.swap(true, Ordering::Relaxed) {
        return;
    }
    let text = format!(
        "outbox backlog of {len} events exceeds outbox.warn_events = {limit}; the coordinator is not keeping up"
    );
    tracing::warn!(backlog = len, "{text}");
    if let Err(err) = queue_message(shared, MessageLevel::Warning, "LINK", text).await {
        tracing::warn!("cannot queue the backlog warning: {err:#}");
    }
}

/// The event the coordinator refused the batch for, when it names one
/// (a foreign or invalid event; docs/protocol.md, "Refused events"). A
/// revocation or any other error names none and ends the session.
fn refused_event(s: &tonic::Status) -> Option<Uuid> {
    if !matches!(
        s.code(),
        tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
    ) {
        return None;
    }
    s.metadata()
        .get(pgsnapman_proto::REFUSED_EVENT_KEY)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Moves the refused event out of the outbox (kept in `refused_events`, not
/// lost) so that the events after it go on, and says so in the log and in
/// an ERROR message to the catalog.
async fn set_aside(shared: &Shared, id: Uuid, s: &tonic::Status) -> Result<()> {
    let reason = s.message().to_string();
    let outbox = shared.outbox.clone();
    let kept = reason.clone();
    if !blocking(move || outbox.set_aside(id, &kept)).await? {
        return Err(anyhow!(
            "the coordinator refused event {id}, which the outbox no longer holds: {reason}"
        ));
    }
    let text = format!(
        "the coordinator refused an event of worker {}; it is set aside on the worker \
         (`pgsnapman-worker outbox refused` lists it, `outbox requeue` sends it again): {reason}",
        shared.config.worker.name
    );
    tracing::error!(event = %id, "{text}");
    queue_message(shared, MessageLevel::Error, "OUTBOX", text).await
}

/// Queues a message of this worker (no job) for the catalog.
async fn queue_message(
    shared: &Shared,
    level: MessageLevel,
    class: &str,
    text: String,
) -> Result<()> {
    let body = event::Body::Message(WorkerMessage {
        level: level as i32,
        class: class.to_string(),
        job_id: 0,
        text,
    });
    let outbox = shared.outbox.clone();
    blocking(move || outbox.append(body)).await.map(|_| ())
}

/// How often finished tasks whose results were acknowledged long ago are
/// forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Runs until an error; the session then reconnects.
pub async fn run(shared: Arc<Shared>, mut client: Client) -> Result<()> {
    let mut stream: Option<Stream> = None;
    let max_batch = shared.config.outbox.max_batch;
    let max_bytes = shared.config.outbox.max_batch_bytes;
    let mut pruned = tokio::time::Instant::now();
    loop {
        if pruned.elapsed() >= PRUNE_INTERVAL {
            pruned = tokio::time::Instant::now();
            let outbox = shared.outbox.clone();
            match blocking(move || outbox.prune_finished(crate::outbox::DONE_KEEP)).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(forgotten = n, "finished tasks forgotten"),
                Err(err) => tracing::warn!("cannot prune finished tasks: {err:#}"),
            }
        }
        let outbox = shared.outbox.clone();
        let events = blocking(move || outbox.oldest_bounded(max_batch, max_bytes)).await?;
        let Some(last) = events.last() else {
            tokio::select! {
                () = shared.outbox.appended() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        };
        let last_id = last.event_id.clone();
        let count = events.len();
        let backlog = shared.outbox.len();
        check_backlog(&shared, backlog).await;
        let batch = EventBatch {
            worker_name: shared.config.worker.name.clone(),
            events,
            outbox_backlog: backlog.saturating_sub(count as u64),
        };
        match stream.as_ref() {
            Some((tx, _)) => tx
                .send(batch)
                .await
                .map_err(|_| anyhow!("upload stream closed"))?,
            None => {
                // The first batch goes in before the call so that a
                // coordinator answering only after a first message works too.
                let (tx, rx) = mpsc::channel(UPLOAD_QUEUE);
                tx.send(batch)
                    .await
                    .map_err(|_| anyhow!("upload stream closed"))?;
                let opened = tokio::time::timeout(
                    OPEN_TIMEOUT,
                    client.upload_events(ReceiverStream::new(rx)),
                )
                .await
                .map_err(|_| anyhow!("upload stream did not open within {OPEN_TIMEOUT:?}"))?;
                let acks = match opened {
                    Ok(r) => r.into_inner(),
                    Err(s) => {
                        if let Some(id) = refused_event(&s) {
                            set_aside(&shared, id, &s).await?;
                            continue;
                        }
                        return Err(anyhow!(
                            "cannot open the upload stream: {:?}: {}",
                            s.code(),
                            s.message()
                        ));
                    }
                };
                stream = Some((tx, acks));
            }
        }
        let Some((_, acks)) = stream.as_mut() else {
            return Err(anyhow!("upload stream missing"));
        };
        let ack = match tokio::time::timeout(ACK_TIMEOUT, acks.message()).await {
            Err(_) => return Err(anyhow!("no EventAck within {ACK_TIMEOUT:?}")),
            Ok(Err(s)) => {
                if let Some(id) = refused_event(&s) {
                    // The coordinator ended the stream; open a new one.
                    stream = None;
                    set_aside(&shared, id, &s).await?;
                    continue;
                }
                return Err(anyhow!(
                    "event upload failed: {:?}: {}",
                    s.code(),
                    s.message()
                ));
            }
            Ok(Ok(None)) => return Err(anyhow!("the coordinator closed the upload stream")),
            Ok(Ok(Some(ack))) => ack,
        };
        let up_to = Uuid::parse_str(&ack.up_to_event_id)
            .with_context(|| format!("EventAck names event {:?}", ack.up_to_event_id))?;
        let outbox = shared.outbox.clone();
        let deleted = blocking(move || outbox.delete_up_to(up_to)).await?;
        shared.acked.send_modify(|v| *v = (*v).max(up_to.as_u128()));
        tracing::debug!(
            sent = count,
            last = %last_id,
            applied = ack.applied,
            duplicates = ack.duplicates,
            deleted,
            "events acknowledged"
        );
    }
}
