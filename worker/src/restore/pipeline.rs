//! Moves dump bytes during a restore: from the store into pg_restore's or
//! psql's stdin through a pipe (a blocking thread per stream, every chunk
//! hash-checked by the store), into the spool when pg_restore needs a
//! seekable archive, and through the SQL filter between `pg_restore -f -`
//! (or a plain dump) and psql. Processes run through `runner::process`.
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::fcntl::OFlag;
use pgsnapman_store::{READ_AHEAD_CHUNKS, ReadAhead, Store};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::classify::{Classifier, Source};
use super::pipe_out::{PipeOut, Wrote};
use super::script::{Filter, Report, Rules};
use crate::runner::process::{self, Outcome, StdoutTo};

/// Bytes moved per read.
const BUF: usize = 256 * 1024;

/// A restore was cancelled (lease lost, shutdown): stop, clean up, report
/// nothing unless the target changed.
#[derive(Debug, thiserror::Error)]
#[error("the restore was cancelled")]
pub struct Cancelled;

/// Capacity asked for the pipes that carry dump bytes; why: Linux's
/// default 64 KiB makes pg_restore wait for the feeding thread between
/// every few reads, and 1 MiB is the unprivileged maximum by default
/// (`/proc/sys/fs/pipe-max-size`).
const PIPE_BYTES: i32 = 1 << 20;

/// A pipe whose ends are closed when the program that gets them runs.
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).context("create a pipe")
}

/// Grows the pipe (or FIFO) behind `fd` to `PIPE_BYTES`; where the system
/// refuses, the pipe keeps its size (only slower).
pub(super) fn grow_pipe(fd: std::os::fd::RawFd) {
    if let Err(e) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES)) {
        tracing::debug!("cannot grow a pipe to {PIPE_BYTES} bytes: {e}");
    }
}

/// One stored file of a dump.
#[derive(Clone)]
pub struct Stored {
    pub store: Store,
    pub dump: Uuid,
    pub file: String,
}

/// Copies `reader` into `out`, counting into `progress`. `Ok(false)`: the
/// other end went away (broken pipe) or `cancel` fired.
pub(super) fn copy_counted(
    reader: &mut impl Read,
    out: &mut impl Write,
    progress: &AtomicU64,
    cancel: &CancellationToken,
) -> Result<bool> {
    let mut buf = vec![0u8; BUF];
    loop {
        if cancel.is_cancelled() {
            return Ok(false);
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(anyhow!("cannot read the dump from the store: {e}")),
        };
        match out.write_all(&buf[..n]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(false),
            Err(e) => return Err(anyhow!("write: {e}")),
        }
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Feeds a stored file into the pipe `out` on a blocking thread, the store
/// decoding ahead on another (`READ_AHEAD_CHUNKS`), in batches
/// (`PipeOut`).
pub(crate) fn feed(
    src: Stored,
    out: OwnedFd,
    progress: Arc<AtomicU64>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<Result<bool>> {
    tokio::task::spawn_blocking(move || {
        let reader = src
            .store
            .file_reader(src.dump, &src.file)
            .map_err(|e| anyhow!("cannot read {} of the dump from the store: {e}", src.file))?
            .read_ahead(READ_AHEAD_CHUNKS);
        let mut out = PipeOut::new(File::from(out));
        let stopped = || cancel.is_cancelled();
        Ok(feed_pipe(reader, &mut out, &progress, &stopped)? == Wrote::All)
    })
}

/// Copies a stored file's decoded chunks into `out` without copying them
/// first, counting into `progress`: `All`, or `Gone` when the reader went
/// away or `stopped` said so. A store error is the error (`out` stays
/// open: the caller records it before the reader sees the end).
pub(crate) fn feed_pipe(
    mut reader: ReadAhead,
    out: &mut PipeOut,
    progress: &AtomicU64,
    stopped: &dyn Fn() -> bool,
) -> Result<Wrote> {
    loop {
        if stopped() {
            return Ok(Wrote::Gone);
        }
        let slice = match reader.next_slice() {
            Ok([]) => return Ok(Wrote::All),
            Ok(s) => s,
            Err(e) => bail!("cannot read the dump from the store: {e}"),
        };
        let n = slice.len() as u64;
        if out
            .write_all(slice, stopped)
            .map_err(|e| anyhow!("write into the pipe: {e}"))?
            == Wrote::Gone
        {
            return Ok(Wrote::Gone);
        }
        progress.fetch_add(n, Ordering::Relaxed);
    }
}

/// Space a spooled archive must leave free on the spool's file system (the
/// store, the outbox and other tasks share it).
pub const SPOOL_RESERVE: u64 = 256 * 1024 * 1024;

/// Bytes available to this process on the file system holding `dir`.
// The field types differ between platforms (u32 on some).
#[allow(clippy::useless_conversion)]
pub fn free_bytes(dir: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir)
        .with_context(|| format!("look at the free space of {}", dir.display()))?;
    Ok(u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size())))
}

/// Writes stored files into `dir` (the spool) for pg_restore to seek in.
pub async fn spool(
    store: &Store,
    dump: Uuid,
    files: Vec<String>,
    dir: &Path,
    progress: Arc<AtomicU64>,
    cancel: &CancellationToken,
) -> Result<()> {
    let store = store.clone();
    let dir = dir.to_path_buf();
    let cancel2 = cancel.clone();
    let done = tokio::task::spawn_blocking(move || -> Result<bool> {
        for name in files {
            if !spool_file(&store, dump, &name, &dir, &progress, &cancel2)? {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
    .context("the spooling thread failed")??;
    if !done || cancel.is_cancelled() {
        return Err(Cancelled.into());
    }
    Ok(())
}

/// Writes one stored file into a new file of `dir` (blocking), the store
/// decoding ahead; `false` when cancelled.
pub(crate) fn spool_file(
    store: &Store,
    dump: Uuid,
    name: &str,
    dir: &Path,
    progress: &AtomicU64,
    cancel: &CancellationToken,
) -> Result<bool> {
    let path = dir.join(name);
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut reader = store
        .file_reader(dump, name)
        .map_err(|e| anyhow!("cannot read {name} of the dump from the store: {e}"))?
        .read_ahead(READ_AHEAD_CHUNKS);
    if !copy_counted(&mut reader, &mut out, progress, cancel)? {
        return Ok(false);
    }
    out.flush()
        .with_context(|| format!("write {}", path.display()))?;
    Ok(true)
}

/// How a program run ended.
pub struct Ran {
    pub status: ExitStatus,
    pub classifier: Classifier,
    /// Captured stdout (small outputs only), empty otherwise.
    pub stdout: Vec<u8>,
}

/// An observer that feeds stderr lines into a shared classifier.
fn observer(c: &Arc<Mutex<Classifier>>) -> process::LineObserver {
    let c = Arc::clone(c);
    Box::new(move |line: &str| {
        c.lock().unwrap_or_else(|e| e.into_inner()).line(line);
    })
}

fn take(c: Arc<Mutex<Classifier>>) -> Classifier {
    let mut c = match Arc::try_unwrap(c) {
        Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
        Err(shared) => {
            let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *g, Classifier::new(Source::Psql))
        }
    };
    c.finish();
    c
}

/// What a program reads on stdin.
pub enum Stdin {
    Null,
    /// A stored file, fed through a pipe.
    Stored(Stored),
    /// The read end of a pipe someone else writes.
    Pipe(OwnedFd),
}

impl From<Option<Stored>> for Stdin {
    fn from(s: Option<Stored>) -> Self {
        s.map_or(Stdin::Null, Stdin::Stored)
    }
}

/// Runs `cmd` (pg_restore or psql) with `stdin`, stdout captured if
/// `capture`, every stderr line classified. A store failure is the error
/// (it is why the program saw a short input).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    cmd: Command,
    program: &str,
    source: Source,
    stdin: impl Into<Stdin>,
    capture: bool,
    progress: Arc<AtomicU64>,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<Ran> {
    let classifier = Arc::new(Mutex::new(Classifier::new(source)));
    let (stdin, feeder) = match stdin.into() {
        Stdin::Stored(src) => {
            let (r, w) = pipe()?;
            (Some(r), Some(feed(src, w, progress, cancel.clone())))
        }
        Stdin::Pipe(fd) => (Some(fd), None),
        Stdin::Null => (None, None),
    };
    let stdout = if capture {
        StdoutTo::Capture(process::DEFAULT_MAX_OUTPUT_BYTES)
    } else {
        StdoutTo::Null
    };
    let outcome = process::run_observed(
        cmd,
        program,
        stdin,
        stdout,
        Some(observer(&classifier)),
        cancel,
        grace,
    )
    .await;
    if let Some(f) = feeder {
        f.await.context("the feeding thread failed")??;
    }
    match outcome? {
        Outcome::Cancelled => Err(Cancelled.into()),
        Outcome::Exited { status, stdout, .. } => {
            if cancel.is_cancelled() {
                return Err(Cancelled.into());
            }
            Ok(Ran {
                status,
                classifier: take(classifier),
                stdout,
            })
        }
    }
}

/// Where a script comes from.
pub enum ScriptSource {
    /// A plain dump in the store.
    Plain(Stored),
    /// `pg_restore -f -` (the command), reading a stored archive from stdin
    /// or a spooled one named in its arguments.
    PgRestore {
        cmd: Box<Command>,
        input: Option<Stored>,
    },
}

/// A script's run through the filter into psql.
pub struct Script {
    pub source: ScriptSource,
    pub rules: Rules,
    /// Sent before the script (after `BEGIN;` when `transaction`).
    pub prelude: String,
    /// Sent after it, before `COMMIT;`.
    pub postlude: String,
    /// Wrap everything in one transaction, committed only when the whole
    /// script was produced without error: a failure anywhere leaves the
    /// database as it was.
    pub transaction: bool,
}

/// How a script run ended.
pub struct ScriptRan {
    pub psql: Ran,
    /// pg_restore's run, when it produced the script.
    pub producer: Option<Ran>,
    pub report: Report,
    /// Why the script is incomplete (store or producer failure), if it is.
    pub producer_error: Option<String>,
}

/// The filter thread: prelude, the filtered script, and (in a transaction)
/// the postlude and `COMMIT;` only when `verdict` says the producer
/// succeeded. Without that COMMIT, psql ends at EOF and the server rolls
/// the transaction back. Returns the filter's report and whether `COMMIT;`
/// was sent.
fn filter_thread(
    mut input: Box<dyn Read + Send>,
    out: OwnedFd,
    rules: Rules,
    prelude: String,
    postlude: String,
    transaction: bool,
    verdict: Option<std::sync::mpsc::Receiver<bool>>,
) -> Result<(Report, bool)> {
    let mut out = BufWriter::with_capacity(1 << 20, File::from(out));
    let mut filter = Filter::new(rules);
    let mut buf = vec![0u8; BUF];
    let mut filtered = Vec::with_capacity(BUF + BUF / 4);
    let write = |out: &mut BufWriter<File>, bytes: &[u8]| -> Result<()> {
        out.write_all(bytes)
            .map_err(|e| anyhow!("psql stopped reading the script: {e}"))
    };
    if transaction {
        write(&mut out, b"BEGIN;\n")?;
    }
    write(&mut out, prelude.as_bytes())?;
    let mut read_ok = true;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                read_ok = false;
                tracing::warn!("the script's input failed: {e}");
                break;
            }
        };
        filtered.clear();
        filter.feed(&buf[..n], &mut filtered);
        write(&mut out, &filtered)?;
    }
    filtered.clear();
    filter.finish(&mut filtered);
    write(&mut out, &filtered)?;
    let complete = read_ok
        && match verdict {
            Some(rx) => rx.recv().unwrap_or(false),
            None => true,
        };
    let mut commit_sent = false;
    if complete {
        write(&mut out, b"\n")?;
        write(&mut out, postlude.as_bytes())?;
        if transaction {
            write(&mut out, b"COMMIT;\n")?;
        }
        out.flush()
            .map_err(|e| anyhow!("psql stopped reading the script: {e}"))?;
        commit_sent = transaction;
    }
    out.flush()
        .map_err(|e| anyhow!("psql stopped reading the script: {e}"))?;
    if !read_ok {
        bail!("the script could not be read to its end");
    }
    Ok((filter.report().clone(), commit_sent))
}

/// Runs `script` into `psql` (a command reading its stdin).
pub async fn run_script(
    script: Script,
    psql: Command,
    progress: Arc<AtomicU64>,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<ScriptRan> {
    let (psql_in, filter_out) = pipe()?;
    let Script {
        source,
        rules,
        prelude,
        postlude,
        transaction,
    } = script;
    let (verdict_tx, verdict_rx) = std::sync::mpsc::sync_channel::<bool>(1);
    // The producer: pg_restore's command, its input, its stdout's write end.
    type Producer = (Box<Command>, Option<Stored>, OwnedFd);
    let (input, producer): (Box<dyn Read + Send>, Option<Producer>) = match source {
        ScriptSource::Plain(src) => {
            let reader = src
                .store
                .file_reader(src.dump, &src.file)
                .map_err(|e| anyhow!("cannot read {} of the dump from the store: {e}", src.file))?
                .read_ahead(READ_AHEAD_CHUNKS);
            let counted = CountingReader {
                inner: reader,
                progress: Arc::clone(&progress),
                cancel: cancel.clone(),
            };
            (Box::new(counted), None)
        }
        ScriptSource::PgRestore { cmd, input } => {
            let (r, w) = pipe()?;
            (Box::new(File::from(r)), Some((cmd, input, w)))
        }
    };
    let has_producer = producer.is_some();
    let filtering = tokio::task::spawn_blocking(move || {
        filter_thread(
            input,
            filter_out,
            rules,
            prelude,
            postlude,
            transaction,
            has_producer.then_some(verdict_rx),
        )
    });
    let psql_run = run(
        psql,
        "psql",
        Source::Psql,
        Stdin::Pipe(psql_in),
        false,
        Arc::default(),
        cancel,
        grace,
    );
    let producer_run = async {
        let Some((cmd, input, stdout)) = producer else {
            drop(verdict_tx);
            return None;
        };
        let classifier = Arc::new(Mutex::new(Classifier::new(Source::PgRestore)));
        let (stdin, feeder) = match input {
            Some(src) => {
                let (r, w) = match pipe() {
                    Ok(p) => p,
                    Err(e) => return Some(Err(e)),
                };
                (
                    Some(r),
                    Some(feed(src, w, Arc::clone(&progress), cancel.clone())),
                )
            }
            None => (None, None),
        };
        let outcome = process::run_observed(
            *cmd,
            "pg_restore",
            stdin,
            StdoutTo::File(stdout),
            Some(observer(&classifier)),
            cancel,
            grace,
        )
        .await;
        let fed = match feeder {
            Some(f) => f
                .await
                .map_err(|e| anyhow!("the feeding thread failed: {e}"))
                .and_then(|r| r),
            None => Ok(true),
        };
        let result = (|| -> Result<Ran> {
            let Outcome::Exited { status, stdout, .. } = outcome? else {
                return Err(Cancelled.into());
            };
            Ok(Ran {
                status,
                classifier: take(Arc::clone(&classifier)),
                stdout,
            })
        })();
        // A broken pipe (fed = Ok(false)) is fine when pg_restore succeeded:
        // it stops reading once it has what it needs (--schema-only reads
        // no data).
        let good = matches!(&result, Ok(r) if r.status.success() && r.classifier.fatal_count == 0)
            && fed.is_ok()
            && !cancel.is_cancelled();
        // The filter commits only on this word.
        let _ = verdict_tx.send(good);
        Some(match fed {
            Err(e) => Err(e),
            Ok(_) => result,
        })
    };
    let (psql_ran, producer_ran) = tokio::join!(psql_run, producer_run);
    let filtered = filtering.await.context("the filter thread failed")?;
    if cancel.is_cancelled() {
        if matches!(filtered, Ok((_, true))) {
            // psql may have run it before it was killed.
            bail!("cancelled after COMMIT was sent to psql: the change may have been committed");
        }
        return Err(Cancelled.into());
    }
    let mut producer_error = None;
    let producer = match producer_ran {
        None => None,
        Some(Ok(ran)) => {
            if !ran.status.success() || ran.classifier.fatal_count > 0 {
                let text = ran.classifier.fatal_text(5);
                producer_error = Some(if text.is_empty() {
                    format!("pg_restore exited with {}", ran.status)
                } else {
                    text
                });
            }
            Some(ran)
        }
        Some(Err(e)) => {
            if e.is::<Cancelled>() {
                return Err(e);
            }
            producer_error = Some(format!("{e:#}"));
            None
        }
    };
    let psql = psql_ran?;
    let report = match filtered {
        Ok((r, committed)) => {
            if transaction && !committed {
                producer_error.get_or_insert_with(|| {
                    "the script ended without COMMIT: the transaction was rolled back".into()
                });
            }
            r
        }
        Err(e) => {
            producer_error.get_or_insert_with(|| format!("{e:#}"));
            Report::default()
        }
    };
    Ok(ScriptRan {
        psql,
        producer,
        report,
        producer_error,
    })
}

/// A store reader that counts and stops when cancelled.
struct CountingReader<R> {
    inner: R,
    progress: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::other("cancelled"));
        }
        let n = self.inner.read(buf)?;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A run's scratch directory in the spool, removed when dropped.
pub struct SpoolDir {
    path: PathBuf,
}

impl SpoolDir {
    /// Creates `<spool>/restore-<run_id>` (an older one of the same run is
    /// removed first).
    pub fn create(spool: &Path, run_id: i64) -> Result<Self> {
        let path = spool.join(format!("restore-{run_id}"));
        if path.exists() {
            std::fs::remove_dir_all(&path).with_context(|| format!("remove {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpoolDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), "cannot remove a restore's spool directory: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_copy_stops_on_cancel_and_counts() {
        let data = vec![7u8; 3 * BUF + 5];
        let progress = AtomicU64::new(0);
        let mut out = Vec::new();
        let done = copy_counted(
            &mut std::io::Cursor::new(&data),
            &mut out,
            &progress,
            &CancellationToken::new(),
        )
        .unwrap();
        assert!(done);
        assert_eq!(out, data);
        assert_eq!(progress.load(Ordering::Relaxed), data.len() as u64);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let done = copy_counted(
            &mut std::io::Cursor::new(&data),
            &mut Vec::new(),
            &progress,
            &cancel,
        )
        .unwrap();
        assert!(!done);
    }

    #[test]
    fn spool_dirs_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = {
            let s = SpoolDir::create(dir.path(), 3).unwrap();
            std::fs::write(s.path().join("x"), b"1").unwrap();
            s.path().to_path_buf()
        };
        assert!(!p.exists());
    }
}
