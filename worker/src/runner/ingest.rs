//! Streams a dump program's output into the pack store, with no copy on
//! disk: one stream (custom or plain format, pg_dumpall) from stdout through
//! a pipe, or the files of a directory-format dump as pg_dump closes them
//! (inotify), each deleted from the spool once stored. Also reads a stored
//! archive back into `pg_restore --list`. Knows nothing of the catalog.
use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use pgsnapman_store::Ingest;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::process::{self, Outcome, StdoutTo};
use crate::error::ClientError;
use crate::rowcount::{self, RowCounter, Tee};

/// Bytes kept from the end of a stream (plain dumps end with a marker).
const TAIL_BYTES: usize = 4096;
/// How long the spool watcher sleeps when no file was closed.
const WATCH_POLL: Duration = Duration::from_millis(20);

/// A dump program's command, and what sees its stderr lines as they come
/// (a script's lines become messages).
pub struct Program {
    pub cmd: Command,
    pub observer: Option<process::LineObserver>,
}

/// How a dump into the store ended.
pub enum Ended {
    /// The program exited 0 and every byte it wrote is stored (not yet
    /// finished: no manifest).
    Stored {
        ingest: Box<Ingest>,
        tail: Vec<u8>,
        /// The rows of every table, counted on the way (or why not).
        rows: rowcount::Counted,
        /// When the program exited (the store may have caught up later).
        exited: Instant,
        /// A custom archive read whole on the way: the length of its header
        /// and table of contents (`check_stream_head` reads them back) and
        /// where its data blocks start (into the manifest).
        archive: Option<rowcount::ArchiveMap>,
    },
    Cancelled,
}

/// Capacity asked for the pipe from the dump program (Linux default 64 KiB);
/// why: the store reads 1 MiB blocks, and a bigger pipe lets pg_dump write
/// on while the reading thread hands a block over. Within the default
/// `/proc/sys/fs/pipe-max-size` (1 MiB); if refused, the default stays.
const PIPE_BYTES: i32 = 1 << 20;

/// A pipe whose ends are closed when the program that gets them runs.
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).context("create a pipe")
}

/// A pipe for a dump program's output, as big as `PIPE_BYTES` if allowed.
fn dump_pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (read_end, write_end) = pipe()?;
    if let Err(e) = nix::fcntl::fcntl(
        read_end.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES),
    ) {
        tracing::debug!("cannot enlarge the dump pipe: {e}");
    }
    Ok((read_end, write_end))
}

/// Removes a scratch directory of the spool; gone already is fine.
fn remove_scratch(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %dir.display(), "cannot remove a spool directory: {e}");
    }
}

/// Counts bytes read into `progress` and keeps the last `TAIL_BYTES`.
struct Counting<R> {
    inner: R,
    progress: Arc<AtomicU64>,
    tail: Vec<u8>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        // Only the last TAIL_BYTES of a read can end up in the tail.
        if n >= TAIL_BYTES {
            self.tail.clear();
        }
        self.tail
            .extend_from_slice(&buf[n.saturating_sub(TAIL_BYTES)..n]);
        if self.tail.len() > 2 * TAIL_BYTES {
            self.tail.drain(..self.tail.len() - TAIL_BYTES);
        }
        Ok(n)
    }
}

/// Why a program failed, with the store's error first: when storing fails,
/// the reader goes away and the program only sees a broken pipe.
fn failure(
    program: &str,
    status: std::process::ExitStatus,
    stderr: &process::Stderr,
) -> ClientError {
    ClientError::exited(program, status, stderr.error_text())
}

/// Runs `cmd` with its stdout stored as `file_name` of the ingest, counting
/// the rows of its tables as `rows` says.
/// Success needs, in this order: EOF on stdout, every chunk stored, exit 0.
#[allow(clippy::too_many_arguments)]
pub async fn stream(
    mut ingest: Ingest,
    file_name: &'static str,
    rows: rowcount::Kind,
    cmd: Program,
    program: &str,
    cancel: &CancellationToken,
    grace: Duration,
    progress: Arc<AtomicU64>,
) -> Result<Ended> {
    let (read_end, write_end) = dump_pipe()?;
    let storing = tokio::task::spawn_blocking(move || {
        let mut counter = RowCounter::new(rows);
        // No BufReader: the store reads the pipe in 1 MiB blocks itself.
        let mut counting = Counting {
            inner: Tee::new(File::from(read_end), file_name, &mut counter),
            progress,
            tail: Vec::new(),
        };
        let res = ingest.add_file(file_name, &mut counting);
        // Dropping the reader closes the pipe: a program still writing gets
        // EPIPE instead of blocking forever.
        let tail = std::mem::take(&mut counting.tail);
        drop(counting);
        (ingest, res.map(|_| (tail, counter.finish_with_toc())))
    });
    let outcome = process::run_observed(
        cmd.cmd,
        program,
        None,
        StdoutTo::File(write_end),
        cmd.observer,
        cancel,
        grace,
    )
    .await;
    let exited = Instant::now();
    let (ingest, stored) = storing.await.context("the storing thread failed")?;
    match outcome? {
        Outcome::Cancelled => Ok(Ended::Cancelled),
        Outcome::Exited { status, stderr, .. } => {
            if cancel.is_cancelled() {
                return Ok(Ended::Cancelled);
            }
            let (tail, (rows, archive)) =
                stored.map_err(|e| anyhow!("cannot store the dump: {e}"))?;
            if !status.success() {
                return Err(failure(program, status, &stderr).into());
            }
            Ok(Ended::Stored {
                ingest: Box::new(ingest),
                tail,
                rows,
                exited,
                archive,
            })
        }
    }
}

const RUNNING: u8 = 0;
const FINISH: u8 = 1;
const ABORT: u8 = 2;

/// Runs `cmd`, a `pg_dump --format=directory` writing into `spool` (which
/// must not exist), storing each file as soon as pg_dump closes it and
/// deleting it from the spool. The spool directory is removed in any case.
pub async fn directory(
    ingest: Ingest,
    spool: PathBuf,
    cmd: Program,
    program: &str,
    cancel: &CancellationToken,
    grace: Duration,
    progress: Arc<AtomicU64>,
) -> Result<Ended> {
    std::fs::create_dir(&spool).with_context(|| format!("create {}", spool.display()))?;
    let result = directory_in(ingest, &spool, cmd, program, cancel, grace, progress).await;
    remove_scratch(&spool);
    result
}

async fn directory_in(
    ingest: Ingest,
    spool: &Path,
    cmd: Program,
    program: &str,
    cancel: &CancellationToken,
    grace: Duration,
    progress: Arc<AtomicU64>,
) -> Result<Ended> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .context("start watching the spool (inotify)")?;
    inotify
        .add_watch(spool, AddWatchFlags::IN_CLOSE_WRITE)
        .with_context(|| format!("watch {}", spool.display()))?;
    let state = Arc::new(AtomicU8::new(RUNNING));
    let storing = {
        let state = Arc::clone(&state);
        let spool = spool.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut counter = RowCounter::new(rowcount::Kind::Directory);
            let (ingest, res) =
                store_spool(ingest, &spool, &inotify, &state, &progress, &mut counter);
            (ingest, res.map(|()| counter.finish()))
        })
    };
    let outcome = process::run_observed(
        cmd.cmd,
        program,
        None,
        StdoutTo::Null,
        cmd.observer,
        cancel,
        grace,
    )
    .await;
    let ok = matches!(&outcome, Ok(Outcome::Exited { status, .. }) if status.success())
        && !cancel.is_cancelled();
    state.store(if ok { FINISH } else { ABORT }, Ordering::SeqCst);
    let exited = Instant::now();
    let (ingest, stored) = storing.await.context("the storing thread failed")?;
    match outcome? {
        Outcome::Cancelled => Ok(Ended::Cancelled),
        Outcome::Exited { status, stderr, .. } => {
            if cancel.is_cancelled() {
                return Ok(Ended::Cancelled);
            }
            if !status.success() {
                // A storing failure first: it is why pg_dump lost its files.
                if let Err(e) = stored {
                    bail!("cannot store the dump: {e:#}");
                }
                return Err(failure(program, status, &stderr).into());
            }
            let rows = stored.map_err(|e| anyhow!("cannot store the dump: {e:#}"))?;
            Ok(Ended::Stored {
                ingest: Box::new(ingest),
                tail: Vec::new(),
                rows,
                exited,
                archive: None,
            })
        }
    }
}

/// The storing thread of a directory dump: stores files as pg_dump closes
/// them, and when told to finish, every file still in the spool.
fn store_spool(
    mut ingest: Ingest,
    spool: &Path,
    inotify: &Inotify,
    state: &AtomicU8,
    progress: &AtomicU64,
    counter: &mut RowCounter,
) -> (Ingest, Result<()>) {
    let mut added: HashSet<String> = HashSet::new();
    let mut store_one = |ingest: &mut Ingest, name: &str| -> Result<()> {
        if added.contains(name) {
            return Ok(());
        }
        let path = spool.join(name);
        let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        let reader = Tee::new(file, name, counter);
        let entry = ingest
            .add_file(name, reader)
            .with_context(|| format!("store {name}"))?;
        progress.fetch_add(entry.size, Ordering::Relaxed);
        std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
        added.insert(name.to_string());
        Ok(())
    };
    let res = (|| -> Result<()> {
        loop {
            let now = state.load(Ordering::SeqCst);
            if now == ABORT {
                bail!("the dump program failed");
            }
            match inotify.read_events() {
                Ok(events) => {
                    for ev in events {
                        if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                            tracing::warn!(
                                "spool watch overflowed; the rest is stored when pg_dump ends"
                            );
                        }
                        if let Some(name) = ev.name.as_ref().and_then(|n| n.to_str()) {
                            store_one(&mut ingest, name)?;
                        }
                    }
                }
                Err(Errno::EAGAIN) => {
                    if now == FINISH {
                        break;
                    }
                    std::thread::sleep(WATCH_POLL);
                }
                Err(e) => return Err(anyhow!("watch the spool: {e}")),
            }
        }
        // pg_dump has exited: whatever is left is complete.
        let mut rest = Vec::new();
        for e in std::fs::read_dir(spool).with_context(|| format!("list {}", spool.display()))? {
            let e = e.with_context(|| format!("list {}", spool.display()))?;
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| anyhow!("pg_dump wrote a file whose name is not UTF-8: {n:?}"))?;
            rest.push(name);
        }
        rest.sort();
        for name in rest {
            store_one(&mut ingest, &name)?;
        }
        Ok(())
    })();
    (ingest, res)
}

/// Lets `pg_restore --list` read a stored custom-format archive from its
/// stdin, straight from the store (every chunk hash-checked). Fails with the
/// reason if the table of contents cannot be read. `Ok(false)`: cancelled.
pub async fn check_stream_toc(
    ingest: Ingest,
    file_name: &'static str,
    pg_restore: PathBuf,
    max_output: u64,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<(Ingest, bool)> {
    let (read_end, write_end) = pipe()?;
    let feeding = tokio::task::spawn_blocking(move || {
        let mut ingest = ingest;
        let res = (|| -> Result<u64> {
            let mut reader = ingest
                .read_back(file_name)
                .context("read the stored archive back")?;
            let mut out = File::from(write_end);
            match std::io::copy(&mut reader, &mut out) {
                Ok(n) => Ok(n),
                // pg_restore stops reading after the table of contents.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
                Err(e) => Err(anyhow!("read the stored archive back: {e}")),
            }
        })();
        (ingest, res)
    });
    let mut cmd = Command::new(pg_restore);
    cmd.arg("--list");
    let outcome = process::run_with(
        cmd,
        "pg_restore",
        Some(read_end),
        StdoutTo::Capture(max_output),
        cancel,
        grace,
    )
    .await;
    let (ingest, fed) = feeding.await.context("the reading thread failed")?;
    fed?;
    let ok = toc_listed(outcome?)?;
    Ok((ingest, ok))
}

/// Reads the first `toc_bytes` of a stored custom-format archive back from
/// the store (every chunk hash-checked): the header and table of contents
/// that the row counter already parsed as they streamed past, i.e. what
/// `check_stream_toc`'s `pg_restore --list` would read, without starting it.
pub async fn check_stream_head(
    ingest: Ingest,
    file_name: &'static str,
    toc_bytes: u64,
) -> Result<Ingest> {
    let (ingest, res) = tokio::task::spawn_blocking(move || {
        let mut ingest = ingest;
        let res = (|| -> Result<()> {
            let reader = ingest
                .read_back(file_name)
                .context("read the stored archive back")?;
            let read = std::io::copy(&mut reader.take(toc_bytes), &mut std::io::sink())
                .map_err(|e| anyhow!("read the stored archive back: {e}"))?;
            if read != toc_bytes {
                bail!(
                    "the stored archive ends after {read} bytes, inside its table of contents ({toc_bytes} bytes)"
                );
            }
            Ok(())
        })();
        (ingest, res)
    })
    .await
    .context("the reading thread failed")?;
    res?;
    Ok(ingest)
}

/// Writes the stored `toc.dat` of a directory-format dump into `dir` and runs
/// `pg_restore --list` on it (listing reads no data file).
pub async fn check_directory_toc(
    ingest: Ingest,
    dir: PathBuf,
    pg_restore: PathBuf,
    max_output: u64,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<(Ingest, bool)> {
    let d = dir.clone();
    let written = tokio::task::spawn_blocking(move || {
        let mut ingest = ingest;
        let res = (|| -> Result<()> {
            std::fs::create_dir(&d).with_context(|| format!("create {}", d.display()))?;
            let mut reader = ingest
                .read_back("toc.dat")
                .context("read the stored toc.dat back")?;
            let path = d.join("toc.dat");
            let mut f =
                File::create(&path).with_context(|| format!("create {}", path.display()))?;
            std::io::copy(&mut reader, &mut f)
                .map_err(|e| anyhow!("read the stored toc.dat back: {e}"))?;
            Ok(())
        })();
        (ingest, res)
    })
    .await
    .context("the reading thread failed")?;
    let (ingest, res) = written;
    let checked = match res {
        Ok(()) => {
            let mut cmd = Command::new(pg_restore);
            cmd.arg("--list").arg(&dir);
            process::run(
                cmd,
                "pg_restore",
                StdoutTo::Capture(max_output),
                cancel,
                grace,
            )
            .await
            .map_err(anyhow::Error::from)
            .and_then(toc_listed)
        }
        Err(e) => Err(e),
    };
    remove_scratch(&dir);
    Ok((ingest, checked?))
}

/// `Ok(true)` when pg_restore listed a table of contents.
fn toc_listed(outcome: Outcome) -> Result<bool> {
    match outcome {
        Outcome::Cancelled => Ok(false),
        Outcome::Exited {
            status,
            stdout,
            stderr,
        } => {
            if !status.success() || stdout.is_empty() {
                bail!(
                    "the archive's table of contents cannot be read back (pg_restore --list exited with {status}): {}",
                    stderr.error_text()
                );
            }
            Ok(true)
        }
    }
}

/// True when a plain-format dump's last bytes carry pg_dump's or
/// pg_dumpall's completion marker.
pub fn plain_dump_complete(tail: &[u8]) -> bool {
    let text = String::from_utf8_lossy(tail);
    text.contains("PostgreSQL database dump complete")
        || text.contains("PostgreSQL database cluster dump complete")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_reader_keeps_the_tail_and_counts() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let progress = Arc::new(AtomicU64::new(0));
        let mut c = Counting {
            inner: std::io::Cursor::new(data.clone()),
            progress: progress.clone(),
            tail: Vec::new(),
        };
        let mut sink = Vec::new();
        c.read_to_end(&mut sink).unwrap();
        assert_eq!(sink, data);
        assert_eq!(progress.load(Ordering::Relaxed), data.len() as u64);
        assert!(c.tail.len() >= TAIL_BYTES && c.tail.len() <= 2 * TAIL_BYTES);
        assert!(data.ends_with(&c.tail));
    }

    #[tokio::test]
    async fn the_stored_head_reads_back_and_a_short_archive_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            pgsnapman_store::Store::open(dir.path(), pgsnapman_store::StoreOptions::default())
                .unwrap();
        let data: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut ingest = store.begin(uuid::Uuid::now_v7()).unwrap();
        ingest.add_file("archive.dump", &data[..]).unwrap();
        let len = data.len() as u64;
        // The whole file, and a head of it, read back.
        let ingest = check_stream_head(ingest, "archive.dump", len)
            .await
            .unwrap();
        let ingest = check_stream_head(ingest, "archive.dump", 4096)
            .await
            .unwrap();
        // A table of contents said to be longer than what was stored.
        let Err(err) = check_stream_head(ingest, "archive.dump", len + 1).await else {
            panic!("a head longer than the stored archive read back");
        };
        let err = err.to_string();
        assert!(err.contains(&format!("ends after {len} bytes")), "{err}");
    }

    #[test]
    fn plain_markers() {
        assert!(plain_dump_complete(
            b"\n--\n-- PostgreSQL database dump complete\n--\n\n"
        ));
        assert!(plain_dump_complete(
            b"--\n-- PostgreSQL database cluster dump complete\n--\n\n"
        ));
        assert!(!plain_dump_complete(b"COPY public.t (a) FROM stdin;\n1\n"));
    }
}
