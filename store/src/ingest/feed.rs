//! The front of an ingest: the caller's thread drains its source (a pipe
//! from pg_dump) into a bounded queue of blocks, so the dump program never
//! waits for chunking, hashing or compression while the queue has room;
//! the chunker reads the blocks back at lower CPU priority (`window.rs`).

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};

/// Bytes per block read from the source; why: one channel message per MiB
/// keeps the hand-over cost negligible, and a pipe rarely holds more.
pub(super) const BLOCK_BYTES: usize = 1 << 20;
/// Blocks queued between the source and the chunker: bounds the read-ahead
/// to `READ_AHEAD_BLOCKS + 2` blocks (66 MiB) per running ingest; why: the
/// store can fall ~20% behind pg_dump on two cores (docs/benchmarks.md) and
/// catches up after pg_dump ends, so a 300 MB dump never blocks pg_dump.
pub(super) const READ_AHEAD_BLOCKS: usize = 64;

/// A block of the source (`len` bytes of `buf` hold data), or the error
/// reading it ended with.
pub(super) type Block = io::Result<Filled>;

/// A block read from the source. `buf` keeps its full length
/// (`BLOCK_BYTES`) when it is recycled, so a reused block is never zeroed
/// again: only the first `len` bytes are the source's.
pub(super) struct Filled {
    pub(super) buf: Vec<u8>,
    pub(super) len: usize,
}

impl Filled {
    pub(super) fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Reads `source` into blocks of up to `BLOCK_BYTES` and sends them, reusing
/// the blocks the reader hands back in `spare`. Returns when the source ends
/// (`Ok(true)`), when the receiver is gone (`Ok(false)`: the store stopped;
/// its own error says why), or with the source's read error (also sent on,
/// so the chunker reports where it happened).
pub(super) fn pump(
    mut source: impl Read,
    blocks: &SyncSender<Block>,
    spare: &Receiver<Vec<u8>>,
) -> io::Result<bool> {
    loop {
        let mut buf = match spare.try_recv() {
            Ok(b) if b.len() == BLOCK_BYTES => b,
            // Zeroed once per block; recycled blocks are not cleared.
            Ok(_) | Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                vec![0; BLOCK_BYTES]
            }
        };
        let filled = fill(&mut source, &mut buf);
        match filled {
            Ok(0) => return Ok(true),
            Ok(len) => {
                if blocks.send(Ok(Filled { buf, len })).is_err() {
                    return Ok(false);
                }
            }
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                // The chunker may be gone already; the caller reports `e`.
                let _ = blocks.send(Err(copy));
                return Err(e);
            }
        }
    }
}

/// Reads into `buf` until it is full or the source ends; returns the bytes
/// read. A partial block is returned at EOF; an error after some bytes is
/// returned on the next call (the bytes go first).
fn fill(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = 0;
    let res = loop {
        if len == buf.len() {
            break Ok(());
        }
        match source.read(&mut buf[len..]) {
            Ok(0) => break Ok(()),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    match res {
        Err(e) if len == 0 => Err(e),
        // Deliver what was read; the source fails again on the next read.
        _ => Ok(len),
    }
}

/// Lowers the calling thread's CPU priority to nice value `nice`
/// (`StoreOptions::ingest_nice`, for the ingest's threads and the worker's
/// compression thread; Linux nice values are per thread); never raises it. Best effort: a failure is logged at debug level and the thread
/// runs at its inherited priority.
pub fn lower_priority(nice: i32) {
    let now = rustix::process::getpriority_process(None).unwrap_or(0);
    if now >= nice {
        return;
    }
    if let Err(e) = rustix::process::setpriority_process(None, nice) {
        tracing::debug!("cannot lower the store thread's priority: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    /// A source that returns `step` bytes per read, then fails if told to.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
        fail_at_end: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.at == self.data.len() {
                if self.fail_at_end {
                    return Err(io::Error::new(io::ErrorKind::BrokenPipe, "source broke"));
                }
                return Ok(0);
            }
            let n = self.step.min(out.len()).min(self.data.len() - self.at);
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// Everything queued, in order, handing blocks back for reuse; and the
    /// error that ended it, if any.
    fn drain(rx: Receiver<Block>, spare: SyncSender<Vec<u8>>) -> (Vec<u8>, Option<io::Error>) {
        let mut got = Vec::new();
        for block in rx {
            match block {
                Ok(b) => {
                    assert_eq!(b.buf.len(), BLOCK_BYTES, "blocks keep their length");
                    got.extend_from_slice(b.data());
                    let _ = spare.try_send(b.buf);
                }
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn blocks_carry_the_source_unchanged_whatever_the_read_sizes() {
        let want = data(3 * BLOCK_BYTES + 12_345);
        for step in [1 << 16, 4093, BLOCK_BYTES * 2] {
            let source = Trickle {
                data: want.clone(),
                at: 0,
                step,
                fail_at_end: false,
            };
            let (tx, rx) = sync_channel(READ_AHEAD_BLOCKS);
            let (spare_tx, spare_rx) = sync_channel(READ_AHEAD_BLOCKS);
            let got = std::thread::scope(|s| {
                let reader = s.spawn(move || {
                    let (got, end) = drain(rx, spare_tx);
                    assert!(end.is_none());
                    got
                });
                assert!(pump(source, &tx, &spare_rx).unwrap());
                drop(tx);
                reader.join().unwrap()
            });
            assert_eq!(got.len(), want.len(), "step {step}");
            assert!(got == want, "step {step}");
        }
    }

    #[test]
    fn the_queue_bounds_what_is_read_ahead() {
        // Nobody reads: the pump must stop after READ_AHEAD_BLOCKS blocks
        // and one more in its hands, never reading the whole source.
        let source = Trickle {
            data: data((READ_AHEAD_BLOCKS + 8) * BLOCK_BYTES),
            at: 0,
            step: BLOCK_BYTES,
            fail_at_end: false,
        };
        let (tx, rx) = sync_channel(READ_AHEAD_BLOCKS);
        let (_spare_tx, spare_rx) = sync_channel::<Vec<u8>>(READ_AHEAD_BLOCKS);
        let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        struct Counted<R>(R, std::sync::Arc<std::sync::atomic::AtomicUsize>);
        impl<R: Read> Read for Counted<R> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = self.0.read(out)?;
                self.1.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                Ok(n)
            }
        }
        let counted = Counted(source, progress.clone());
        let pumping = std::thread::spawn(move || pump(counted, &tx, &spare_rx));
        // The pump reaches the bound (it must: nobody reads) …
        let bound = READ_AHEAD_BLOCKS * BLOCK_BYTES;
        while progress.load(std::sync::atomic::Ordering::SeqCst) < bound {
            std::thread::yield_now();
        }
        // … and, given time to, reads at most the one block in its hands.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let read = progress.load(std::sync::atomic::Ordering::SeqCst);
        assert!(read <= bound + BLOCK_BYTES, "{read} bytes read ahead");
        // The reader goes away: the pump stops and says so.
        drop(rx);
        assert!(!pumping.join().unwrap().unwrap());
    }

    #[test]
    fn a_source_error_reaches_the_reader_after_the_bytes_before_it() {
        let want = data(BLOCK_BYTES + 100);
        let source = Trickle {
            data: want.clone(),
            at: 0,
            step: 1 << 16,
            fail_at_end: true,
        };
        let (tx, rx) = sync_channel(READ_AHEAD_BLOCKS);
        let (spare_tx, spare_rx) = sync_channel(READ_AHEAD_BLOCKS);
        let err = pump(source, &tx, &spare_rx).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        drop(tx);
        let (got, end) = drain(rx, spare_tx);
        assert_eq!(end.map(|e| e.kind()), Some(io::ErrorKind::BrokenPipe));
        assert!(got == want);
    }
}
