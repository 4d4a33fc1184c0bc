//! A directory-format dump served to pg_restore without spooling its data:
//! `toc.dat` and the other small files are written into the run's spool
//! directory, each data file (`*.dat`) is a named pipe (FIFO) that a thread
//! fills from the store once pg_restore opens it, in whatever order its
//! parallel workers ask. Never used where a short file could commit.
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::stat::Mode;
use pgsnapman_store::{READ_AHEAD_CHUNKS, Store};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::pipe_out::{PipeOut, Wrote};
use super::pipeline;

/// Data files a dump may have for its data to be served through FIFOs, one
/// thread each (waiting in `open` until pg_restore opens the file); why: a
/// thread is cheap but not free. Dumps with more data files are spooled.
pub const SERVE_MAX_FILES: usize = 2048;

/// Stack of a serving thread; why: it only copies (the store decodes on
/// its read-ahead thread), 256 KiB is ample and keeps 2048 threads small.
const SERVER_STACK_BYTES: usize = 256 * 1024;

/// How long dropping a `Served` waits for each of its threads to stop.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a stored file is table data pg_restore reads once, start to end
/// (served through a FIFO), rather than a table of contents (written out).
pub fn is_data_file(name: &str) -> bool {
    (name.ends_with(".dat") || name.ends_with(".dat.gz")) && name != "toc.dat"
}

/// One FIFO and the thread that serves it.
struct Server {
    path: PathBuf,
    thread: JoinHandle<()>,
}

/// The served directory: its FIFOs' threads and what they saw.
pub struct Served {
    servers: Vec<Server>,
    stop: Arc<AtomicBool>,
    /// The first store error of a serving thread (the file it cut short).
    error: Arc<Mutex<Option<String>>>,
    /// Data files served to their end.
    complete: Arc<AtomicU64>,
}

impl Served {
    /// Writes the dump's non-data files into `dir` (which exists) and makes
    /// a FIFO for each data file, with its serving thread.
    pub fn start(
        store: &Store,
        dump: Uuid,
        files: &[String],
        dir: &Path,
        progress: Arc<AtomicU64>,
        cancel: &CancellationToken,
    ) -> Result<Served> {
        let mut served = Served {
            servers: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            error: Arc::default(),
            complete: Arc::default(),
        };
        for name in files.iter().filter(|n| !is_data_file(n)) {
            write_out(store, dump, name, dir, cancel)?;
        }
        for name in files.iter().filter(|n| is_data_file(n)) {
            let path = dir.join(name);
            nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)
                .with_context(|| format!("create the named pipe {}", path.display()))?;
            let job = Job {
                store: store.clone(),
                dump,
                name: name.clone(),
                path: path.clone(),
                stop: Arc::clone(&served.stop),
                error: Arc::clone(&served.error),
                complete: Arc::clone(&served.complete),
                progress: Arc::clone(&progress),
                cancel: cancel.clone(),
            };
            let thread = std::thread::Builder::new()
                .name("restore-serve".into())
                .stack_size(SERVER_STACK_BYTES)
                .spawn(move || job.serve())
                .context("start a thread to serve a data file")?;
            served.servers.push(Server { path, thread });
        }
        Ok(served)
    }

    /// Data files served to their end so far, of how many.
    pub fn counts(&self) -> (u64, usize) {
        (self.complete.load(Ordering::SeqCst), self.servers.len())
    }

    /// The store error that cut a served file short, if one did. Call it
    /// after pg_restore ended and before trusting what it restored.
    pub fn check(&self) -> Result<()> {
        let error = self.error.lock().unwrap_or_else(|e| e.into_inner());
        match &*error {
            Some(e) => bail!("{e}"),
            None => Ok(()),
        }
    }
}

impl Drop for Served {
    /// Stops every thread: one still waiting for pg_restore to open its
    /// FIFO is released by opening the FIFO for reading here (and draining
    /// what it writes until it sees the stop).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.servers.drain(..) {
            if !release(&s) {
                tracing::warn!(path = %s.path.display(), "a thread serving a restore's data file did not stop; left behind");
                continue;
            }
            let _ = s.thread.join();
        }
    }
}

/// Opens `s`'s FIFO for reading (never blocking) and drains it until its
/// thread has ended; false if it did not end in time.
fn release(s: &Server) -> bool {
    let deadline = Instant::now() + RELEASE_TIMEOUT;
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(&s.path)
        .ok();
    let mut sink = vec![0u8; 64 * 1024];
    while !s.thread.is_finished() {
        if Instant::now() > deadline {
            return false;
        }
        if let Some(r) = reader.as_mut() {
            // WouldBlock and EOF alike: look again shortly.
            let _ = r.read(&mut sink);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// What a serving thread needs.
struct Job {
    store: Store,
    dump: Uuid,
    name: String,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    error: Arc<Mutex<Option<String>>>,
    complete: Arc<AtomicU64>,
    progress: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl Job {
    /// Waits for a reader, then copies the stored file into the FIFO once.
    /// A second open of the same file is not served: pg_restore reads each
    /// data file once, and a writer that came back while the first reader
    /// still had the FIFO open would append the file to itself.
    fn serve(self) {
        // Blocks until pg_restore (or `release`) opens the FIFO to read.
        let out = match std::fs::OpenOptions::new().write(true).open(&self.path) {
            Ok(f) => f,
            Err(e) => {
                self.fail(format!(
                    "cannot open the named pipe {}: {e}",
                    self.path.display()
                ));
                return;
            }
        };
        if self.stopped() {
            return;
        }
        let reader = match self.store.file_reader(self.dump, &self.name) {
            Ok(r) => r.read_ahead(READ_AHEAD_CHUNKS),
            Err(e) => {
                self.fail(format!(
                    "cannot read {} of the dump from the store: {e}",
                    self.name
                ));
                return;
            }
        };
        match self.copy(reader, out) {
            Ok(true) => {
                self.complete.fetch_add(1, Ordering::SeqCst);
            }
            // pg_restore closed the file early (it failed or was stopped).
            Ok(false) => {}
            // Recorded before the FIFO closes (`out` is dropped in `copy`),
            // so pg_restore's end of file is never taken for success.
            Err(e) => self.fail(format!("{e:#}")),
        }
    }

    /// Copies until the end (true), a gone reader or a stop (false), or a
    /// store error, which is recorded before `out` is closed.
    fn copy(&self, reader: pgsnapman_store::ReadAhead, out: File) -> Result<bool> {
        let mut out = PipeOut::new(out);
        let stopped = || self.stopped();
        match pipeline::feed_pipe(reader, &mut out, &self.progress, &stopped) {
            Ok(wrote) => Ok(wrote == Wrote::All),
            Err(e) => {
                let e = e.context(format!("serving {} to pg_restore", self.name));
                self.fail(format!("{e:#}"));
                Err(e)
            }
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.cancel.is_cancelled()
    }

    fn fail(&self, message: String) {
        let mut error = self.error.lock().unwrap_or_else(|e| e.into_inner());
        error.get_or_insert(message);
    }
}

/// Writes one stored file into `dir`.
fn write_out(
    store: &Store,
    dump: Uuid,
    name: &str,
    dir: &Path,
    cancel: &CancellationToken,
) -> Result<()> {
    if pipeline::spool_file(store, dump, name, dir, &AtomicU64::new(0), cancel)? {
        Ok(())
    } else {
        Err(pipeline::Cancelled.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_data_is_served_and_tables_of_contents_are_written() {
        assert!(is_data_file("3345.dat"));
        assert!(is_data_file("blob_16385.dat"));
        assert!(is_data_file("3345.dat.gz"));
        assert!(!is_data_file("toc.dat"));
        assert!(!is_data_file("blobs.toc"));
        assert!(!is_data_file("blobs_12.toc"));
    }
}
