//! The threads of one `Ingest::add_file`: the caller's reads the source into
//! the read-ahead queue (`feed.rs`); a chunker cuts (`window.rs`), hashes and
//! chooses bases; `ENCODERS` encoders compress, taking batches of new chunks
//! in turn; a writer appends their records in chunk order. Every queue is
//! bounded; all but the caller's thread run at lower CPU priority; all end
//! before `store_file` returns.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};

use uuid::Uuid;

use super::Cutter;
use super::feed;
use super::sink::{Encoder, Job, PackSink, Record};
use super::window::Window;
use crate::error::StoreError;
use crate::manifest::FileEntry;
use crate::shared::Inner;

/// Encoder threads; why: day-1 compression and later days' base reads and
/// delta encoding each cost more than cutting and hashing, so two encoders
/// keep pace with the chunker, and once pg_dump ends the store uses both of
/// a two-core machine's cores. Batches go to them in turn, so the records
/// (and the packs) come out in chunk order whatever the timing.
pub(super) const ENCODERS: usize = 2;
/// Batches queued to each encoder and batches of records queued from each;
/// why: one waiting on each side keeps every thread busy.
const QUEUE_PER_ENCODER: usize = 1;
/// Raw bytes per hand-over to an encoder (a batch is handed over once it
/// holds at least this many, so it is at most this plus one max chunk);
/// why: against one chunk per hand-over, 1 MiB halves the ingest's context
/// switches on the churn benchmark (4 MiB saves little more and queues
/// four times the bytes); docs/benchmarks.md. A chunker that then finds
/// only stored chunks hands nothing over, so it checks `Jobs::check` on
/// every chunk: a failed writer or encoder stops it, and so the source
/// read, within a chunk.
const BATCH_BYTES: usize = 1 << 20;

/// Raised by an encoder or the writer that ends other than by running out
/// of work (an error or a panic). The chunker may be handing nothing over
/// (every chunk already stored, or a batch still filling), so it would not
/// learn of the failure from a closed queue: it checks this on every chunk.
struct Alarm<'a> {
    raised: &'a AtomicBool,
    done: bool,
}

impl<'a> Alarm<'a> {
    fn new(raised: &'a AtomicBool) -> Alarm<'a> {
        Alarm {
            raised,
            done: false,
        }
    }
}

impl Drop for Alarm<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.raised.store(true, Ordering::Release);
        }
    }
}

/// The chunker's hand-over to the encoders: batch `n` goes to encoder
/// `n % ENCODERS`.
pub(super) struct Jobs<'a> {
    to: Vec<SyncSender<Vec<Job>>>,
    sent: usize,
    batch: Vec<Job>,
    batch_bytes: usize,
    /// An encoder or the writer failed (`Alarm`).
    failed: &'a AtomicBool,
}

impl Jobs<'_> {
    /// Fails once an encoder or the writer has failed (its own error is
    /// the one reported); the chunker calls it on every chunk.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(stopped());
        }
        Ok(())
    }

    /// Queues `job`, handing the batch over once it is big enough.
    pub(super) fn send(&mut self, job: Job) -> Result<(), StoreError> {
        self.batch_bytes += job.raw.len();
        self.batch.push(job);
        if self.batch_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the batch over, however small; called at the end of a file.
    pub(super) fn flush(&mut self) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let i = self.sent % self.to.len();
        self.sent += 1;
        self.to[i].send(batch).map_err(|_| stopped())
    }
}

fn stopped() -> StoreError {
    StoreError::Invalid {
        what: "ingest state",
        detail: "an encoder or the pack writer stopped".to_string(),
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
    let later_budget = Arc::clone(&sink.later_budget);
    let alarm_raised = AtomicBool::new(false);
    let alarm_raised = &alarm_raised;
    std::thread::scope(|scope| {
        let mut job_senders = Vec::with_capacity(ENCODERS);
        let mut results = Vec::with_capacity(ENCODERS);
        let mut encoders = Vec::with_capacity(ENCODERS);
        for _ in 0..ENCODERS {
            let (job_tx, job_rx) = mpsc::sync_channel::<Vec<Job>>(QUEUE_PER_ENCODER);
            let (rec_tx, rec_rx) = mpsc::sync_channel(QUEUE_PER_ENCODER);
            let mut encoder = Encoder::new(Arc::clone(inner), dump_uuid, Arc::clone(&later_budget));
            let thread = std::thread::Builder::new()
                .name("store-encoder".to_string())
                .spawn_scoped(scope, move || {
                    let mut alarm = Alarm::new(alarm_raised);
                    feed::lower_priority(nice);
                    for batch in job_rx {
                        let mut records = Vec::with_capacity(batch.len());
                        let mut failed = false;
                        for job in batch {
                            let rec = encoder.encode(job);
                            failed = rec.is_err();
                            records.push(rec);
                            if failed {
                                break;
                            }
                        }
                        if rec_tx.send(records).is_err() || failed {
                            return;
                        }
                    }
                    // No more work: the chunker is done.
                    alarm.done = true;
                })
                .map_err(spawn_error("encoder"))?;
            job_senders.push(job_tx);
            results.push(rec_rx);
            encoders.push(thread);
        }
        let writer = std::thread::Builder::new()
            .name("store-writer".to_string())
            .spawn_scoped(scope, move || {
                let mut alarm = Alarm::new(alarm_raised);
                feed::lower_priority(nice);
                let written = write_in_order(sink, &results);
                alarm.done = written.is_ok();
                written
            })
            .map_err(spawn_error("writer"))?;
        let (blocks, block_queue) = mpsc::sync_channel(feed::READ_AHEAD_BLOCKS);
        let (spare, spare_queue) = mpsc::sync_channel(feed::READ_AHEAD_BLOCKS);
        let mut jobs = Jobs {
            to: job_senders,
            sent: 0,
            batch: Vec::new(),
            batch_bytes: 0,
            failed: alarm_raised,
        };
        let chunker = std::thread::Builder::new()
            .name("store-chunker".to_string())
            .spawn_scoped(scope, move || {
                feed::lower_priority(nice);
                let mut window = Window::new(block_queue, spare, &inner.opts.chunking);
                let entry = cutter.cut_file(name, &mut window, logical_bytes, &mut jobs)?;
                jobs.flush()?;
                // Returning drops `jobs`: the encoders finish what is queued.
                Ok(entry)
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

/// Appends the records of batch `n` from encoder `n % ENCODERS`, in order,
/// until an encoder ends (no more chunks) or a record is an error.
fn write_in_order(
    sink: &mut PackSink,
    results: &[Receiver<Vec<Result<Record, StoreError>>>],
) -> Result<(), StoreError> {
    for n in 0.. {
        let Ok(batch) = results[n % results.len()].recv() else {
            return Ok(());
        };
        for rec in batch {
            sink.append(rec?)?;
        }
    }
    Ok(())
}
