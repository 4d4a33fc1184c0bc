//! A directory-format dump served to pg_restore without spooling its data:
//! `toc.dat` and the other small files are written into the run's spool
//! directory, each data file (`*.dat`) is a named pipe (FIFO) that a thread
//! fills from the store once pg_restore opens it, in whatever order its
//! parallel workers ask. Never used where a short file could commit.
//! A custom-format dump is served the same way as a directory one
//! (`custom`): its TOC rewritten as toc.dat, each data block a FIFO fed from
//! its offset in the stored archive, which a scanning thread finds ahead.
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::stat::Mode;
use pgsnapman_store::{READ_AHEAD_CHUNKS, Store, StoredFile};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::custom::{self, Blocks, Event, Layout, Refusal};
use super::order;
use super::pipe_out::{PipeOut, Wrote};
use super::pipeline;

/// Data files a dump may have for its data to be served through FIFOs, one
/// thread each (waiting in `open` until pg_restore opens the file); why: a
/// thread is cheap but not free. Dumps with more data files are spooled.
pub const SERVE_MAX_FILES: usize = 2048;
// Every custom archive served has its block offsets recorded at dump time.
const _: () = assert!(crate::rowcount::MAX_BLOCK_OFFSETS >= SERVE_MAX_FILES);

/// Stack of a serving thread; why: it only copies (the store decodes on
/// its read-ahead thread), 256 KiB is ample and keeps 2048 threads small.
const SERVER_STACK_BYTES: usize = 256 * 1024;

/// How long dropping a `Served` waits for each of its threads to stop.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a thread waiting for its block's offset looks at the stop flag.
const OFFSET_WAIT: Duration = Duration::from_millis(50);

/// De-framed rows of a custom archive's block gathered before one write
/// into its FIFO (plus at most one decoded chunk over).
const BLOCK_BATCH_BYTES: usize = 256 * 1024;

/// Largest toc.dat renumbered largest first (`order_largest_first`); why:
/// it is read and rewritten in memory, and a TOC this large (hundreds of
/// thousands of objects, or huge function bodies) is served as pg_dump
/// wrote it rather than double the worker's memory.
const MAX_ORDERED_TOC_BYTES: u64 = 64 << 20;

/// Buffer of the reader of a custom archive's TOC.
const TOC_READ_BYTES: usize = 64 * 1024;

/// Whether a stored file is table data pg_restore reads once, start to end
/// (served through a FIFO), rather than a table of contents (written out).
pub fn is_data_file(name: &str) -> bool {
    (name.ends_with(".dat") || name.ends_with(".dat.gz")) && name != "toc.dat"
}

/// Renumbers the served `toc.dat` in `dir` so that pg_restore -j, which
/// sees every FIFO as empty, starts the data with the most bytes first, as
/// it would from files (see `order`): `sizes` is each data file's size by
/// name. The number of entries renumbered (0: already in that order), or
/// why the toc.dat was left as it is.
pub fn order_largest_first(dir: &Path, sizes: &HashMap<String, u64>) -> Result<usize, String> {
    let path = dir.join("toc.dat");
    let len = std::fs::metadata(&path)
        .map_err(|e| format!("read {}: {e}", path.display()))?
        .len();
    if len > MAX_ORDERED_TOC_BYTES {
        return Err(format!(
            "its {len} bytes are more than the {MAX_ORDERED_TOC_BYTES} renumbered in memory"
        ));
    }
    let toc = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let Some(done) = order::largest_first(&toc, |name| sizes.get(name).copied())? else {
        return Ok(0);
    };
    let tmp = dir.join("toc.dat.tmp");
    std::fs::write(&tmp, &done.toc)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(done.moved)
}

/// The size of each data block of a custom archive `archive_len` bytes
/// long, by its data file's name, from where the blocks start (`at`, in
/// any order): from one block's start to the next's, the last to the end.
pub fn block_sizes(at: &[(i64, u64)], archive_len: u64) -> HashMap<String, u64> {
    block_ends(at, archive_len)
        .into_iter()
        .map(|(id, (offset, end))| (custom::data_file(id), end - offset))
        .collect()
}

/// Where each data block of a custom archive `archive_len` bytes long
/// starts and where at the latest it ends, by dump id, from where the
/// blocks start (`at`, in any order): the next block's start (the next
/// larger offset), the last block's the archive's end.
fn block_ends(at: &[(i64, u64)], archive_len: u64) -> HashMap<i64, (u64, u64)> {
    let mut offsets: Vec<u64> = at.iter().map(|&(_, offset)| offset).collect();
    offsets.sort_unstable();
    offsets.dedup();
    at.iter()
        .map(|&(id, offset)| {
            let next = offsets.partition_point(|&o| o <= offset);
            let end = offsets.get(next).copied().unwrap_or(archive_len);
            (id, (offset, end.max(offset)))
        })
        .collect()
}

/// One FIFO and the thread that serves it.
struct Server {
    path: PathBuf,
    thread: JoinHandle<()>,
}

/// The served directory: its FIFOs' threads and what they saw.
pub struct Served {
    servers: Vec<Server>,
    /// A custom archive: the thread finding its data blocks.
    scanner: Option<JoinHandle<()>>,
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
        let mut served = Served::empty();
        for name in files.iter().filter(|n| !is_data_file(n)) {
            write_out(store, dump, name, dir, cancel)?;
        }
        // The manifest once, not once a data file (thousands of tables).
        let mut stored: HashMap<String, StoredFile> = store
            .stored_files(dump)
            .map_err(|e| anyhow::anyhow!("cannot read the dump from the store: {e}"))?
            .into_iter()
            .map(|f| (f.name().to_string(), f))
            .collect();
        for name in files.iter().filter(|n| is_data_file(n)) {
            let file = stored.remove(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "cannot read {name} of the dump from the store: the manifest has no such file"
                )
            })?;
            let job = served.job(Source::File(file), dir, &progress, cancel);
            served.add(job)?;
        }
        Ok(served)
    }

    /// Serves the custom archive `stream` of the dump as a directory archive
    /// in `dir` (which exists): toc.dat rewritten from its TOC, a FIFO per
    /// data block. Each block is served from its offset in `recorded` (the
    /// manifest's, from dump time) when that names every block, else from
    /// where a scanning thread finds it. `Ok(Err(why))` when the archive is
    /// not one served.
    pub fn start_custom(
        store: &Store,
        dump: Uuid,
        stream: &str,
        recorded: Option<&[(i64, u64)]>,
        dir: &Path,
        progress: Arc<AtomicU64>,
        cancel: &CancellationToken,
    ) -> Result<Result<Served, String>> {
        let file = store
            .stored_file(dump, stream)
            .map_err(|e| anyhow::anyhow!("cannot read {stream} of the dump from the store: {e}"))?;
        let reader = file.reader();
        let size = reader.size();
        let toc = dir.join("toc.dat");
        let out = File::create(&toc).with_context(|| format!("create {}", toc.display()))?;
        let layout = match custom::rewrite_toc(
            BufReader::with_capacity(TOC_READ_BYTES, reader),
            BufWriter::new(out),
        ) {
            Ok(layout) => layout,
            Err(Refusal::Unserved(why)) => return Ok(Err(why)),
            Err(Refusal::Io(e)) => {
                return Err(anyhow::anyhow!(
                    "rewrite the archive's table of contents: {e}"
                ));
            }
        };
        if layout.data.len() > SERVE_MAX_FILES {
            return Ok(Err(format!(
                "the archive has {} data blocks, more than the {SERVE_MAX_FILES} served",
                layout.data.len()
            )));
        }
        let recorded = recorded_blocks(recorded, &layout);
        let ends = recorded.as_ref().map_or_else(HashMap::new, |at| {
            let at: Vec<(i64, u64)> = at.iter().map(|(&id, &offset)| (id, offset)).collect();
            block_ends(&at, size)
                .into_iter()
                .map(|(id, (_, end))| (id, end))
                .collect()
        });
        let blocks = Arc::new(BlockIndex {
            // Many small blocks share a chunk: decoded once for all of them.
            file: file.sharing_decoded(),
            ends,
            int_size: layout.int_size,
            headers: recorded.is_some(),
            found: Mutex::new(Found {
                ended: recorded.is_some().then_some(Ok(())),
                at: recorded.unwrap_or_default(),
            }),
            changed: Condvar::new(),
        });
        let mut served = Served::empty();
        for &id in &layout.data {
            let source = Source::Block {
                id,
                blocks: Arc::clone(&blocks),
            };
            let job = served.job(source, dir, &progress, cancel);
            served.add(job)?;
        }
        if blocks.headers {
            return Ok(Ok(served));
        }
        let scan = Scan {
            layout,
            blocks,
            stop: Arc::clone(&served.stop),
            cancel: cancel.clone(),
        };
        served.scanner = Some(
            std::thread::Builder::new()
                .name("restore-scan".into())
                .spawn(move || scan.run())
                .context("start a thread to find the archive's data blocks")?,
        );
        Ok(Ok(served))
    }

    fn empty() -> Served {
        Served {
            servers: Vec::new(),
            scanner: None,
            stop: Arc::new(AtomicBool::new(false)),
            error: Arc::default(),
            complete: Arc::default(),
        }
    }

    /// The job serving `source` as a FIFO in `dir`.
    fn job(
        &self,
        source: Source,
        dir: &Path,
        progress: &Arc<AtomicU64>,
        cancel: &CancellationToken,
    ) -> Job {
        Job {
            path: dir.join(source.name()),
            source,
            stop: Arc::clone(&self.stop),
            error: Arc::clone(&self.error),
            complete: Arc::clone(&self.complete),
            progress: Arc::clone(progress),
            cancel: cancel.clone(),
        }
    }

    /// Makes `job`'s FIFO and starts its thread.
    fn add(&mut self, job: Job) -> Result<()> {
        let path = job.path.clone();
        nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)
            .with_context(|| format!("create the named pipe {}", path.display()))?;
        let thread = std::thread::Builder::new()
            .name("restore-serve".into())
            .stack_size(SERVER_STACK_BYTES)
            .spawn(move || job.serve())
            .context("start a thread to serve a data file")?;
        self.servers.push(Server { path, thread });
        Ok(())
    }

    /// A custom archive whose blocks a thread reads the archive to find
    /// (their offsets were not recorded at dump time).
    pub fn scans(&self) -> bool {
        self.scanner.is_some()
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
        if let Some(scan) = self.scanner.take() {
            // It looks at the stop flag after each chunk it reads.
            let _ = scan.join();
        }
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
    source: Source,
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
        let copied = match &self.source {
            Source::File(file) => self.copy(file.reader().read_ahead(READ_AHEAD_CHUNKS), out),
            Source::Block { id, blocks } => self.copy_block(*id, blocks, out),
        };
        match copied {
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
                let e = e.context(format!("serving {} to pg_restore", self.source.name()));
                self.fail(format!("{e:#}"));
                Err(e)
            }
        }
    }

    /// Copies the de-framed data of entry `id`'s block, once the scan has
    /// found it; like `copy`, an error is recorded before `out` is closed.
    fn copy_block(&self, id: i64, blocks: &BlockIndex, out: File) -> Result<bool> {
        let mut out = PipeOut::new(out);
        let copied = self.feed_block(id, blocks, &mut out);
        if let Err(e) = &copied {
            self.fail(format!(
                "serving {} to pg_restore: {e:#}",
                custom::data_file(id)
            ));
        }
        copied
    }

    fn feed_block(&self, id: i64, blocks: &BlockIndex, out: &mut PipeOut) -> Result<bool> {
        let Some(at) = blocks.wait_for(id, &|| self.stopped())? else {
            return Ok(false);
        };
        let mut reader = blocks.file.reader();
        reader
            .seek_to(at)
            .map_err(|e| anyhow::anyhow!("cannot read the dump from the store: {e}"))?;
        // Decode nothing past the block: a small table's block is a part
        // of one chunk, and the read-ahead would decode its depth beyond.
        if let Some(&end) = blocks.ends.get(&id) {
            reader.stop_at(end);
        }
        let mut reader = reader.read_ahead(READ_AHEAD_CHUNKS);
        // A recorded offset is the block's header, checked before its data
        // is served; a scan's is where the data starts, the header read.
        let (mut frames, mut header) = if blocks.headers {
            (Blocks::at_first_block(blocks.int_size, at), true)
        } else {
            (Blocks::at_chunks(blocks.int_size, at), false)
        };
        let mut wrong: Option<i64> = None;
        let stopped = || self.stopped();
        // pg_dump frames every COPY row: the rows are gathered and written
        // in batches, not one pipe write per row.
        let mut batch: Vec<u8> = Vec::with_capacity(BLOCK_BATCH_BYTES);
        let mut ended = false;
        while !ended {
            if stopped() {
                return Ok(false);
            }
            let slice = match reader.next_slice() {
                Ok([]) => bail!("the archive ends inside the data block of entry {id}"),
                Ok(s) => s,
                Err(e) => bail!("cannot read the dump from the store: {e}"),
            };
            frames
                .feed(slice, &mut |event| match event {
                    Event::Data(d) => {
                        batch.extend_from_slice(d);
                        true
                    }
                    Event::Start { id: found, .. } if header => {
                        header = false;
                        if found == id {
                            true
                        } else {
                            wrong = Some(found);
                            false
                        }
                    }
                    Event::End | Event::Start { .. } => {
                        ended = true;
                        false
                    }
                })
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(found) = wrong {
                bail!(
                    "the manifest places the data block of entry {id} at offset {at}, where the archive has entry {found}'s"
                );
            }
            if batch.len() >= BLOCK_BATCH_BYTES || ended {
                match out.write_all(&batch, &stopped) {
                    Ok(Wrote::All) => {}
                    Ok(Wrote::Gone) => return Ok(false),
                    Err(e) => bail!("write into the pipe: {e}"),
                }
                self.progress
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
            }
        }
        Ok(true)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.cancel.is_cancelled()
    }

    fn fail(&self, message: String) {
        let mut error = self.error.lock().unwrap_or_else(|e| e.into_inner());
        error.get_or_insert(message);
    }
}

/// What a FIFO serves.
enum Source {
    /// A stored file of a directory dump, whole.
    File(StoredFile),
    /// The data block of entry `id` of a custom archive, de-framed.
    Block { id: i64, blocks: Arc<BlockIndex> },
}

impl Source {
    /// The FIFO's file name.
    fn name(&self) -> String {
        match self {
            Source::File(file) => file.name().to_string(),
            Source::Block { id, .. } => custom::data_file(*id),
        }
    }
}

/// Where each data block of a custom archive starts, as the scan finds
/// them.
struct BlockIndex {
    /// The archive's stored file.
    file: StoredFile,
    /// Where each block ends at the latest (the next block's recorded
    /// start), when the offsets were recorded at dump time.
    ends: HashMap<i64, u64>,
    int_size: usize,
    /// The offsets are of the blocks' headers, recorded at dump time (else
    /// of their data, found by the scan).
    headers: bool,
    found: Mutex<Found>,
    changed: Condvar,
}

#[derive(Default)]
struct Found {
    /// Offset of each block's header (recorded) or first chunk (scanned),
    /// by dump id.
    at: HashMap<i64, u64>,
    /// The scan's end: `Err` with why it stopped early.
    ended: Option<Result<(), String>>,
}

impl BlockIndex {
    /// Waits until the offset of `id`'s chunks is known: `None` if
    /// `stopped` said so first; an error if the scan ended without it.
    fn wait_for(&self, id: i64, stopped: &dyn Fn() -> bool) -> Result<Option<u64>> {
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(&at) = found.at.get(&id) {
                return Ok(Some(at));
            }
            match &found.ended {
                Some(Ok(())) => bail!("the archive has no data block for entry {id}"),
                Some(Err(e)) => bail!("finding the data block of entry {id}: {e}"),
                None => {}
            }
            if stopped() {
                return Ok(None);
            }
            found = self
                .changed
                .wait_timeout(found, OFFSET_WAIT)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn end(&self, ended: Result<(), String>) {
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        found.ended.get_or_insert(ended);
        self.changed.notify_all();
    }
}

/// The recorded offsets of the blocks `layout` names, if they name each of
/// them (a manifest written before offsets were recorded has none; one that
/// disagrees with the archive's TOC is not used).
fn recorded_blocks(recorded: Option<&[(i64, u64)]>, layout: &Layout) -> Option<HashMap<i64, u64>> {
    let at: HashMap<i64, u64> = recorded?
        .iter()
        .copied()
        .filter(|(_, offset)| *offset >= layout.toc_end)
        .collect();
    layout
        .data
        .iter()
        .all(|id| at.contains_key(id))
        .then_some(at)
}

/// The thread that reads a custom archive's data blocks once, start to
/// end, to learn where each starts.
struct Scan {
    layout: Layout,
    blocks: Arc<BlockIndex>,
    stop: Arc<AtomicBool>,
    cancel: CancellationToken,
}

impl Scan {
    fn run(self) {
        let ended = self.scan();
        self.blocks.end(ended);
    }

    fn scan(&self) -> Result<(), String> {
        let mut reader = self.blocks.file.reader();
        reader
            .seek_to(self.layout.toc_end)
            .map_err(|e| format!("cannot read the dump from the store: {e}"))?;
        let mut reader = reader.read_ahead(READ_AHEAD_CHUNKS);
        let mut frames = Blocks::at_first_block(self.layout.int_size, self.layout.toc_end);
        // Once every block the TOC names is found, the rest (the last
        // block's data) need not be read: each server checks its own end.
        let mut left: std::collections::HashSet<i64> = self.layout.data.iter().copied().collect();
        loop {
            if left.is_empty() {
                return Ok(());
            }
            if self.stop.load(Ordering::SeqCst) || self.cancel.is_cancelled() {
                return Err("stopped".to_string());
            }
            let slice = match reader.next_slice() {
                Ok([]) if frames.between_blocks() => return Ok(()),
                Ok([]) => return Err("the archive ends inside a data block".to_string()),
                Ok(s) => s,
                Err(e) => return Err(format!("cannot read the dump from the store: {e}")),
            };
            frames.feed(slice, &mut |event| {
                if let Event::Start { id, chunks_at } = event {
                    let mut found = self.blocks.found.lock().unwrap_or_else(|e| e.into_inner());
                    found.at.insert(id, chunks_at);
                    self.blocks.changed.notify_all();
                    left.remove(&id);
                }
                !left.is_empty()
            })?;
        }
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
    use std::io::Read as _;

    use super::*;

    fn fixture(major: u32) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/custom/pg{major}"))
    }

    /// The data files read from the FIFOs of a served archive, by name, and
    /// whether it scanned; the serving threads' error, if any.
    fn serve(
        store: &Store,
        dump: Uuid,
        recorded: Option<&[(i64, u64)]>,
    ) -> (HashMap<String, Vec<u8>>, bool, Result<()>) {
        let dir = tempfile::tempdir().unwrap();
        let served = Served::start_custom(
            store,
            dump,
            "dump",
            recorded,
            dir.path(),
            Arc::default(),
            &CancellationToken::new(),
        )
        .unwrap()
        .unwrap();
        let mut files = HashMap::new();
        for id in [3362, 3363, 3364] {
            let name = custom::data_file(id);
            let mut data = Vec::new();
            std::fs::File::open(dir.path().join(&name))
                .unwrap()
                .read_to_end(&mut data)
                .unwrap();
            files.insert(name, data);
        }
        let scans = served.scans();
        // The serving threads have ended (each closed its FIFO).
        let checked = served.check();
        (files, scans, checked)
    }

    /// Golden pg_dump 15, 16 and 18 archives in a store, served three ways:
    /// from the offsets recorded at dump time (no scan), from a scan when
    /// the manifest has none or misses a block, and with a wrong offset,
    /// which fails the block instead of serving another's data.
    #[test]
    fn custom_archives_are_served_from_recorded_offsets_or_a_scan() {
        use crate::rowcount::{Kind, RowCounter};
        for major in [15, 16, 18] {
            let fixture = fixture(major);
            let archive = std::fs::read(fixture.join("archive.dump")).unwrap();
            let root = tempfile::tempdir().unwrap();
            let store = Store::open(root.path(), pgsnapman_store::StoreOptions::default()).unwrap();
            let dump = Uuid::now_v7();
            let mut ingest = store.begin(dump).unwrap();
            ingest.add_file("dump", archive.as_slice()).unwrap();
            let meta = crate::runner::previous::test_meta(1, chrono::Utc::now());
            ingest.finish(meta).unwrap();
            let mut counter = RowCounter::new(Kind::Custom);
            counter.begin_file("dump");
            counter.feed(&archive);
            let offsets = counter.finish_with_toc().1.unwrap().block_offsets.unwrap();
            let expected = |name: &str| std::fs::read(fixture.join("dir").join(name)).unwrap();

            let missing = &offsets[1..];
            for (recorded, scans) in [
                (Some(&offsets[..]), false),
                (None, true),
                (Some(missing), true),
            ] {
                let (files, scanned, checked) = serve(&store, dump, recorded);
                assert_eq!(scanned, scans, "pg{major}");
                checked.unwrap();
                for (name, data) in &files {
                    assert_eq!(data, &expected(name), "pg{major} {name}");
                }
            }

            // Two blocks' offsets swapped: each FIFO ends empty and the run
            // has the error that names the block.
            let mut swapped = offsets.clone();
            let (a, b) = (swapped[0].1, swapped[1].1);
            swapped[0].1 = b;
            swapped[1].1 = a;
            let (files, scanned, checked) = serve(&store, dump, Some(&swapped));
            assert!(!scanned);
            let e = checked.unwrap_err().to_string();
            assert!(
                e.contains("the manifest places the data block of entry"),
                "{e}"
            );
            let wrong = custom::data_file(swapped[0].0);
            assert!(files[&wrong].is_empty(), "pg{major}");
        }
    }

    #[test]
    fn block_sizes_run_from_one_block_to_the_next_and_the_last_to_the_end() {
        let sizes = block_sizes(&[(3, 100), (1, 10), (2, 50)], 150);
        let expected = [("1.dat", 40), ("2.dat", 50), ("3.dat", 50)];
        assert_eq!(
            sizes,
            expected
                .map(|(f, n)| (f.to_string(), n))
                .into_iter()
                .collect()
        );
        assert!(block_sizes(&[], 150).is_empty());
    }

    /// A toc.dat past the limit is left as it is, with why; a missing one
    /// is an error that names it.
    #[test]
    fn tocs_over_the_limit_or_missing_are_left_unordered() {
        let dir = tempfile::tempdir().unwrap();
        let e = order_largest_first(dir.path(), &HashMap::new()).unwrap_err();
        assert!(e.contains("toc.dat"), "{e}");
        let toc = std::fs::File::create(dir.path().join("toc.dat")).unwrap();
        toc.set_len(MAX_ORDERED_TOC_BYTES + 1).unwrap();
        let e = order_largest_first(dir.path(), &HashMap::new()).unwrap_err();
        assert!(e.contains("more than the 67108864 renumbered"), "{e}");
    }

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
