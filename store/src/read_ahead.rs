//! `ReadAhead`: a stored file streamed as `std::io::Read` while a thread of
//! its own decodes the next chunks (pack reads, zstd, delta chains), so the
//! program reading the stream (pg_restore, psql) never waits for a decode.
//! Memory is bounded: at most `depth + 2` decoded chunks exist at once.

use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::error::StoreError;
use crate::reader::FileReader;

/// Chunks a restore decodes ahead of the reader by default; why: four
/// average chunks (about 1 MiB) cover the time pg_restore spends on one
/// pipe's worth of data, and the bound stays small per stream.
pub const READ_AHEAD_CHUNKS: usize = 4;

/// One decoded chunk, or the error that ended the stream.
type Item = Result<Vec<u8>, StoreError>;

/// A stored file read through a decoding thread. Dropping it stops the
/// thread (after the chunk it is decoding) and waits for it.
pub struct ReadAhead {
    rx: Option<Receiver<Item>>,
    thread: Option<JoinHandle<()>>,
    buf: Vec<u8>,
    pos: usize,
    done: u64,
    size: u64,
    max_chunk: usize,
    depth: usize,
    ended: bool,
    failed: bool,
}

impl ReadAhead {
    /// Starts decoding `reader` with up to `depth` (at least 1) chunks
    /// queued ahead of the consumer.
    pub(crate) fn new(mut reader: FileReader, depth: usize) -> ReadAhead {
        let depth = depth.max(1);
        let size = reader.size();
        let max_chunk = reader.max_chunk();
        Self::spawn(size, max_chunk, depth, move || reader.next_chunk())
    }

    /// Runs `next` (the next chunk, `None` at the end) on a new thread.
    fn spawn(
        size: u64,
        max_chunk: usize,
        depth: usize,
        next: impl FnMut() -> Result<Option<Vec<u8>>, StoreError> + Send + 'static,
    ) -> ReadAhead {
        let (tx, rx) = sync_channel::<Item>(depth);
        let thread = std::thread::Builder::new()
            .name("store-read-ahead".into())
            .spawn(move || produce(next, tx))
            .ok();
        ReadAhead {
            rx: Some(rx),
            thread,
            buf: Vec::new(),
            pos: 0,
            done: 0,
            size,
            max_chunk,
            depth,
            ended: false,
            failed: false,
        }
    }

    /// Bytes of the whole file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes handed out so far.
    pub fn position(&self) -> u64 {
        self.done
    }

    /// The most memory the decoded chunks of this stream can hold: the one
    /// being read, `depth` queued, the one being decoded. (The decoding
    /// thread also keeps one buffer of stored bytes, at most the largest
    /// record it has read.)
    pub fn memory_bound(&self) -> usize {
        self.max_chunk.saturating_mul(self.depth + 2)
    }

    /// The next decoded chunk without copying it: the rest of the current
    /// one, else the next from the thread; empty at the end of the file.
    pub fn next_slice(&mut self) -> std::io::Result<&[u8]> {
        if self.pos >= self.buf.len() && !self.refill()? {
            return Ok(&[]);
        }
        let slice = &self.buf[self.pos..];
        self.pos = self.buf.len();
        self.done += slice.len() as u64;
        Ok(slice)
    }

    /// Takes the next chunk from the thread into `buf`; false at the end.
    fn refill(&mut self) -> std::io::Result<bool> {
        loop {
            if self.failed {
                // Never an end of file after an error: that would cut the
                // stream short silently.
                return Err(std::io::Error::other(
                    "an earlier read of this stored file failed",
                ));
            }
            if self.ended {
                return Ok(false);
            }
            let Some(rx) = &self.rx else {
                return Ok(false);
            };
            match rx.recv() {
                Ok(Ok(raw)) => {
                    self.buf = raw;
                    self.pos = 0;
                    if !self.buf.is_empty() {
                        return Ok(true);
                    }
                }
                Ok(Err(e)) => {
                    self.failed = true;
                    return Err(std::io::Error::other(e));
                }
                Err(_) if self.thread.is_none() => {
                    self.failed = true;
                    return Err(std::io::Error::other(StoreError::Invalid {
                        what: "reader state",
                        detail: "cannot start the read-ahead thread".to_string(),
                    }));
                }
                // The thread ended: the file's end (errors were sent).
                Err(_) => {
                    self.ended = true;
                    return Ok(false);
                }
            }
        }
    }
}

/// The decoding thread: sends chunks until the end, an error, or until the
/// consumer is gone.
fn produce(mut next: impl FnMut() -> Result<Option<Vec<u8>>, StoreError>, tx: SyncSender<Item>) {
    loop {
        let item = match next() {
            Ok(Some(raw)) => Ok(raw),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let failed = item.is_err();
        if tx.send(item).is_err() || failed {
            return;
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.buf.len() && !self.refill()? {
            return Ok(0);
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.done += n as u64;
        Ok(n)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the channel makes the thread's next send fail.
        drop(self.rx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    /// A source of `n` chunks of 10 bytes each (chunk i filled with i),
    /// counting the chunks it produced; fails at chunk `fail_at`.
    fn source(
        n: usize,
        fail_at: Option<usize>,
        made: Arc<AtomicUsize>,
    ) -> impl FnMut() -> Result<Option<Vec<u8>>, StoreError> + Send + 'static {
        let mut i = 0usize;
        move || {
            if Some(i) == fail_at {
                return Err(StoreError::Invalid {
                    what: "test",
                    detail: format!("chunk {i} is damaged"),
                });
            }
            if i == n {
                return Ok(None);
            }
            let chunk = vec![i as u8; 10];
            i += 1;
            made.fetch_add(1, Ordering::SeqCst);
            Ok(Some(chunk))
        }
    }

    #[test]
    fn chunks_come_out_in_order_through_small_and_whole_reads() {
        let made = Arc::new(AtomicUsize::new(0));
        let mut r = ReadAhead::spawn(200, 10, 3, source(20, None, made));
        let mut first = [0u8; 3];
        assert_eq!(r.read(&mut first).unwrap(), 3);
        assert_eq!(first, [0, 0, 0]);
        assert_eq!(r.next_slice().unwrap(), &[0u8; 7]);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        let expected: Vec<u8> = (1..20u8).flat_map(|i| [i; 10]).collect();
        assert_eq!(rest, expected);
        assert_eq!(r.position(), 200);
        assert!(r.next_slice().unwrap().is_empty());
    }

    #[test]
    fn the_thread_stays_at_most_depth_plus_one_chunks_ahead() {
        let made = Arc::new(AtomicUsize::new(0));
        let depth = 2;
        let mut r = ReadAhead::spawn(1000, 10, depth, source(100, None, Arc::clone(&made)));
        assert_eq!(r.memory_bound(), 10 * (depth + 2));
        let mut one = [0u8; 10];
        r.read_exact(&mut one).unwrap();
        // One chunk consumed, `depth` queued, one decoded and waiting to be
        // sent: the thread reaches that point and stops there.
        let deadline = Instant::now() + Duration::from_secs(30);
        while made.load(Ordering::SeqCst) < 1 + depth + 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(made.load(Ordering::SeqCst), 1 + depth + 1);
        drop(r);
        assert_eq!(made.load(Ordering::SeqCst), 1 + depth + 1);
    }

    #[test]
    fn an_error_reaches_the_reader_after_the_good_chunks() {
        let made = Arc::new(AtomicUsize::new(0));
        let mut r = ReadAhead::spawn(100, 10, 4, source(10, Some(3), made));
        let mut good = vec![0u8; 30];
        r.read_exact(&mut good).unwrap();
        let err = r.read(&mut [0u8; 10]).unwrap_err();
        let inner = err.get_ref().expect("a store error inside");
        assert!(inner.to_string().contains("chunk 3 is damaged"), "{err}");
        // Never an end of file after the error.
        assert!(r.read(&mut [0u8; 10]).is_err());
    }
}
