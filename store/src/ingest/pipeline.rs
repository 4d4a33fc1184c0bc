//! The threads of one `Ingest::add_file`: the caller's reads the source into
//! the read-ahead queue (`feed.rs`); a chunker cuts, hashes and chooses bases;
//! `ENCODERS` encoders compress, taking new chunks in turn; a writer appends
//! their records in chunk order. Every queue is bounded; all but the caller's
//! thread run at lower CPU priority; all end before `store_file` returns.

use std::io::Read;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};

use uuid::Uuid;

use super::Cutter;
use super::feed;
use super::sink::{Encoder, Job, PackSink, Record};
use crate::error::StoreError;
use crate::manifest::FileEntry;
use crate::shared::Inner;

/// Encoder threads; why: day-1 compression and later days' base reads and
/// delta encoding each cost more than cutting and hashing, so two encoders
/// keep pace with the chunker, and once pg_dump ends the store uses both of
/// a two-core machine's cores. Chunks go to them in turn, so the records
/// (and the packs) do not depend on timing.
pub(super) const ENCODERS: usize = 2;
/// Chunks queued to each encoder and records queued from each; why: one
/// waiting on each side keeps every thread busy, and each costs up to the
/// max chunk size (plus its base while it is encoded) in memory.
const QUEUE_PER_ENCODER: usize = 1;

/// The chunker's hand-over to the encoders: job `n` goes to encoder
/// `n % ENCODERS`.
pub(super) struct Jobs {
    to: Vec<SyncSender<Job>>,
    sent: usize,
}

impl Jobs {
    pub(super) fn send(&mut self, job: Job) -> Result<(), StoreError> {
        let i = self.sent % self.to.len();
        self.sent += 1;
        self.to[i].send(job).map_err(|_| StoreError::Invalid {
            what: "ingest state",
            detail: "an encoder thread stopped".to_string(),
        })
    }
}

fn panicked(what: &str) -> StoreError {
    StoreError::Invalid {
        what: "ingest state",
        detail: format!("the {what} thread panicked"),
    }
}

fn spawn_error(what: &str) -> impl FnOnce(std::io::Error) -> StoreError {
    StoreError::io(format!("start the {what} thread"))
}

/// Stores one file read from `r` (see the module doc).
pub(super) fn store_file(
    inner: &Arc<Inner>,
    dump_uuid: Uuid,
    cutter: Cutter<'_>,
    sink: &mut PackSink,
    logical_bytes: &mut u64,
    name: &str,
    r: impl Read,
) -> Result<FileEntry, StoreError> {
    let nice = inner.opts.ingest_nice;
    std::thread::scope(|scope| {
        let mut job_senders = Vec::with_capacity(ENCODERS);
        let mut results = Vec::with_capacity(ENCODERS);
        let mut encoders = Vec::with_capacity(ENCODERS);
        for _ in 0..ENCODERS {
            let (job_tx, job_rx) = mpsc::sync_channel::<Job>(QUEUE_PER_ENCODER);
            let (rec_tx, rec_rx) = mpsc::sync_channel(QUEUE_PER_ENCODER);
            let mut encoder = Encoder::new(Arc::clone(inner), dump_uuid);
            let thread = std::thread::Builder::new()
                .name("store-encoder".to_string())
                .spawn_scoped(scope, move || {
                    feed::lower_priority(nice);
                    for job in job_rx {
                        let rec = encoder.encode(job);
                        let failed = rec.is_err();
                        if rec_tx.send(rec).is_err() || failed {
                            break;
                        }
                    }
                })
                .map_err(spawn_error("encoder"))?;
            job_senders.push(job_tx);
            results.push(rec_rx);
            encoders.push(thread);
        }
        let writer = std::thread::Builder::new()
            .name("store-writer".to_string())
            .spawn_scoped(scope, move || {
                feed::lower_priority(nice);
                write_in_order(sink, &results)
            })
            .map_err(spawn_error("writer"))?;
        let (blocks, block_queue) = mpsc::sync_channel(feed::READ_AHEAD_BLOCKS);
        let (spare, spare_queue) = mpsc::sync_channel(feed::READ_AHEAD_BLOCKS);
        let mut jobs = Jobs {
            to: job_senders,
            sent: 0,
        };
        let chunker = std::thread::Builder::new()
            .name("store-chunker".to_string())
            .spawn_scoped(scope, move || {
                feed::lower_priority(nice);
                let reader = feed::BlockReader::new(block_queue, spare);
                // Returning drops `jobs`: the encoders finish what is queued.
                cutter.cut_file(name, reader, logical_bytes, &mut jobs)
            })
            .map_err(spawn_error("chunker"))?;
        // The source's own error also reaches the chunker, which names the
        // file; the pump's copy only matters if the chunker is gone.
        let pumped = feed::pump(r, &blocks, &spare_queue);
        drop(blocks);
        let cut = chunker.join().unwrap_or_else(|_| Err(panicked("chunker")));
        let mut encoders_ok = true;
        for e in encoders {
            encoders_ok &= e.join().is_ok();
        }
        let written = writer.join().unwrap_or_else(|_| Err(panicked("writer")));
        // A writer or encoder error also made the chunker's send fail:
        // report it first.
        written?;
        if !encoders_ok {
            return Err(panicked("encoder"));
        }
        let entry = cut?;
        pumped.map_err(StoreError::io(format!("read {name} of dump {dump_uuid}")))?;
        Ok(entry)
    })
}

/// Appends record `n` from encoder `n % ENCODERS`, in order, until an
/// encoder ends (no more chunks) or a record is an error.
fn write_in_order(
    sink: &mut PackSink,
    results: &[Receiver<Result<Record, StoreError>>],
) -> Result<(), StoreError> {
    for n in 0.. {
        let Ok(rec) = results[n % results.len()].recv() else {
            return Ok(());
        };
        sink.append(rec?)?;
    }
    Ok(())
}
