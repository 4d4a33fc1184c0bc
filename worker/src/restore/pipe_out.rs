//! Writing a restore's bytes into a pipe (pg_restore's or psql's stdin, a
//! served FIFO) in large batches. A blocking write into a full pipe wakes
//! its writer each time the reader frees one page (4 KiB, what pg_restore's
//! stdio reads), and the kernel runs the woken writer on the reader's CPU:
//! thousands of preemptions of pg_restore per 100 MB, CPU taken from the
//! server on a small machine. `PipeOut` writes only once a quarter of the
//! pipe is free (asked with `FIONREAD`) and otherwise sleeps briefly, so
//! the writer wakes a few times per quarter pipe instead of per page. Its
//! writes never block (`O_NONBLOCK` on its own end only): a reader that
//! stops reading or goes away is noticed while waiting for room.
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// First pause when the pipe has too little room; doubled while it stays
/// so, up to `MAX_PAUSE`.
const MIN_PAUSE: Duration = Duration::from_micros(200);
/// Longest pause; why: a 1 MiB pipe three quarters full lasts 2 ms only
/// for a reader faster than 380 MB/s, several times what one server
/// process takes in through COPY, so the reader does not run dry.
const MAX_PAUSE: Duration = Duration::from_millis(2);
/// A pipe whose free space has not changed for this long gets what fits
/// (its reader is busy elsewhere, or gone: a write tells which).
const STALL: Duration = Duration::from_millis(20);

/// What a write ended with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wrote {
    All,
    /// The reader closed its end (pg_restore ended or was stopped), or
    /// `stopped` said so while waiting for room.
    Gone,
}

/// A pipe's write end with batched writes (see the module doc).
pub(crate) struct PipeOut {
    file: File,
    /// The pipe's capacity; `None` when it is not a pipe or the system does
    /// not say how full it is (then writes simply block).
    capacity: Option<u64>,
    pause: Duration,
    /// write(2) calls that wrote something, for the tests.
    writes: u64,
}

impl PipeOut {
    /// Grows the pipe behind `file` (`pipeline::grow_pipe`), learns its
    /// capacity and makes this end non-blocking.
    pub(crate) fn new(file: File) -> PipeOut {
        let fd = file.as_raw_fd();
        super::pipeline::grow_pipe(fd);
        let capacity = fcntl(fd, FcntlArg::F_GETPIPE_SZ)
            .ok()
            .and_then(|n| u64::try_from(n).ok())
            .filter(|&n| n > 0)
            .filter(|_| set_nonblocking(&file, true))
            .filter(|_| rustix::io::ioctl_fionread(&file).is_ok());
        if capacity.is_none() {
            set_nonblocking(&file, false);
        }
        PipeOut {
            file,
            capacity,
            pause: MIN_PAUSE,
            writes: 0,
        }
    }

    /// Writes all of `buf`. While the pipe has too little room it sleeps
    /// and asks `stopped` (a cancelled restore), returning `Gone` if so.
    pub(crate) fn write_all(
        &mut self,
        mut buf: &[u8],
        stopped: &dyn Fn() -> bool,
    ) -> std::io::Result<Wrote> {
        let Some(capacity) = self.capacity else {
            return match self.file.write_all(buf) {
                Ok(()) => Ok(Wrote::All),
                Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(Wrote::Gone),
                Err(e) => Err(e),
            };
        };
        // Free bytes at a look and when: unchanged for `STALL` means nobody
        // reads now, and maybe nobody will (only a write tells).
        let mut unchanged: Option<(u64, Instant)> = None;
        while !buf.is_empty() {
            let free = capacity.saturating_sub(rustix::io::ioctl_fionread(&self.file)?);
            let want = (capacity / 4).min(buf.len() as u64);
            let stalled = match unchanged {
                Some((f, since)) if f == free => since.elapsed() >= STALL,
                _ => {
                    unchanged = Some((free, Instant::now()));
                    false
                }
            };
            if free >= want || stalled {
                // What fits, at least one byte (refused while the pipe is
                // full; a gone reader fails it).
                let n = usize::try_from(free).map_or(buf.len(), |f| f.clamp(1, buf.len()));
                match self.file.write(&buf[..n]) {
                    Ok(0) => return Err(std::io::Error::from(ErrorKind::WriteZero)),
                    Ok(w) => {
                        self.writes += 1;
                        buf = &buf[w..];
                        self.pause = MIN_PAUSE;
                        unchanged = None;
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(Wrote::Gone),
                    Err(e)
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) =>
                    {
                        unchanged = None;
                    }
                    Err(e) => return Err(e),
                }
            }
            if stopped() {
                return Ok(Wrote::Gone);
            }
            std::thread::sleep(self.pause);
            self.pause = (self.pause * 2).min(MAX_PAUSE);
        }
        Ok(Wrote::All)
    }

    #[cfg(test)]
    fn writes(&self) -> u64 {
        self.writes
    }
}

/// Sets or clears `O_NONBLOCK` on `file`'s open file description (the
/// other end of a pipe has its own); false if the system refused.
fn set_nonblocking(file: &File, on: bool) -> bool {
    let fd = file.as_raw_fd();
    let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) else {
        return false;
    };
    let mut flags = OFlag::from_bits_truncate(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(fd, FcntlArg::F_SETFL(flags)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pipe_files() -> (File, File) {
        let (r, w) = super::super::pipeline::pipe().unwrap();
        (File::from(r), File::from(w))
    }

    /// A reader slower than the writer gets every byte in order, and the
    /// writer writes a quarter pipe or more at a time, not page by page.
    #[test]
    fn a_slow_reader_gets_everything_in_few_writes() {
        let (mut r, w) = pipe_files();
        let data: Vec<u8> = (0..6u32 << 20).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            let mut out = PipeOut::new(w);
            let capacity = out.capacity.unwrap();
            // Slices of 256 KiB, as the store hands out chunks.
            for piece in sent.chunks(256 * 1024) {
                assert_eq!(out.write_all(piece, &|| false).unwrap(), Wrote::All);
            }
            (out.writes(), capacity)
        });
        let mut got = Vec::new();
        let mut page = vec![0u8; 4096];
        loop {
            let n = r.read(&mut page).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&page[..n]);
            if got.len() % (64 * 4096) == 0 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        let (writes, capacity) = writer.join().unwrap();
        assert_eq!(got, data);
        // Each write is a quarter pipe or the rest of a slice: at most one
        // per quarter pipe plus one per slice (24 slices).
        let bound = data.len() as u64 / (capacity / 4) + 24;
        assert!(writes <= bound, "{writes} writes, at most {bound} expected");
    }

    #[test]
    fn a_closed_reader_and_a_stop_end_the_write() {
        let (r, w) = pipe_files();
        let mut out = PipeOut::new(w);
        let big = vec![1u8; 8 << 20];
        // Nobody reads: the pipe fills, then the stop is seen.
        assert_eq!(out.write_all(&big, &|| true).unwrap(), Wrote::Gone);
        drop(r);
        assert_eq!(out.write_all(&big, &|| false).unwrap(), Wrote::Gone);
    }

    #[test]
    fn a_file_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut out = PipeOut::new(File::create(&path).unwrap());
        assert!(out.capacity.is_none());
        assert_eq!(out.write_all(b"abc", &|| false).unwrap(), Wrote::All);
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
    }
}
