//! Reading stored chunks: `ChunkReader` decodes one chunk (walking its delta
//! chain, every record hash-checked), `FileReader` streams one file of a dump
//! as a `std::io::Read`. A `FileReader` owns its handle on the store, so it
//! can move to the thread that feeds `pg_restore` or `psql`.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::chunk::ChunkId;
use crate::delta::MAX_DELTA_DEPTH;
use crate::error::StoreError;
use crate::index::IndexEntry;
use crate::manifest::ChunkRef;
use crate::pack::{self, ChunkKind, PackId, RecordHeader};
use crate::shared::Inner;

/// Bound on pack files a reader keeps open; why: a dump touches few packs in
/// a row (plus the packs of its bases), and file handles are a shared budget.
const READER_OPEN_PACKS: usize = 16;

/// One record of a delta chain: the chunk, where it is, and its open pack.
struct Link {
    id: ChunkId,
    entry: IndexEntry,
    path: PathBuf,
}

/// Reads chunks for one caller, keeping a few pack files open.
pub(crate) struct ChunkReader {
    inner: Arc<Inner>,
    open: HashMap<PackId, File>,
    /// The stored bytes of the record being decoded, reused from record to
    /// record (at most the largest stored record read).
    stored: Vec<u8>,
}

impl ChunkReader {
    pub(crate) fn new(inner: Arc<Inner>) -> ChunkReader {
        ChunkReader {
            inner,
            open: HashMap::new(),
            stored: Vec::new(),
        }
    }

    /// The raw bytes of `id`, decoded through its delta chain and checked
    /// against `id`'s hash. `None` if the index has no entry for `id`. On a
    /// mismatch the chain is decoded again with every record hash-checked, so
    /// the error names the damaged record (which may be a base).
    pub(crate) fn read(&mut self, id: ChunkId) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(chain) = self.resolve(id)? else {
            return Ok(None);
        };
        match self.decode_chain(&chain, false) {
            Ok(raw) => Ok(Some(raw)),
            Err(err) if chain.len() > 1 => {
                // Name the first damaged record of the chain (root first).
                self.decode_chain(&chain, true)?;
                Err(err)
            }
            Err(err) => Err(err),
        }
    }

    /// Decodes a chain (from `id` to its FULL root) starting at the root;
    /// hashes every record with `check_each`, else only the last.
    fn decode_chain(&mut self, chain: &[Link], check_each: bool) -> Result<Vec<u8>, StoreError> {
        let mut buf = std::mem::take(&mut self.stored);
        let decoded = self.decode_chain_with(chain, check_each, &mut buf);
        self.stored = buf;
        decoded
    }

    fn decode_chain_with(
        &self,
        chain: &[Link],
        check_each: bool,
        buf: &mut Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        let mut raw: Option<Vec<u8>> = None;
        for (i, link) in chain.iter().enumerate().rev() {
            let header = link.entry.record_header(link.id);
            let stored = self.read_stored(link, &header, buf)?;
            let (path, offset) = (&link.path, link.entry.offset);
            let decoded = pack::decode_unchecked(&header, &stored, raw.as_deref(), path, offset)?;
            if check_each || i == 0 {
                pack::check_hash(&header, &decoded, self.inner.naming(), path, offset)?;
            }
            raw = Some(decoded);
        }
        raw.ok_or_else(|| StoreError::Invalid {
            what: "reader state",
            detail: "empty delta chain".to_string(),
        })
    }

    /// Decodes a record whose stored bytes the caller has already read,
    /// reading its base first if it is a delta.
    pub(crate) fn decode(
        &mut self,
        header: &RecordHeader,
        stored: &[u8],
        path: &Path,
        offset: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let base = match header.kind {
            ChunkKind::Full => None,
            ChunkKind::Delta => {
                Some(
                    self.read(header.base)?
                        .ok_or_else(|| StoreError::CorruptChunk {
                            chunk: header.chunk,
                            path: path.to_path_buf(),
                            offset,
                            detail: format!(
                                "its base chunk {} is missing from the index",
                                header.base
                            ),
                        })?,
                )
            }
        };
        let opened = self.open_sealed(header, stored, path, offset)?;
        let naming = self.inner.naming();
        pack::decode_chunk(header, &opened, base.as_deref(), naming, path, offset)
    }

    /// A record's compressed bytes: its stored bytes, decrypted in an
    /// encrypted store (a failure names the chunk, pack and key id).
    fn open_sealed<'a>(
        &self,
        header: &RecordHeader,
        stored: &'a [u8],
        path: &Path,
        offset: u64,
    ) -> Result<std::borrow::Cow<'a, [u8]>, StoreError> {
        match &self.inner.crypto {
            None => Ok(std::borrow::Cow::Borrowed(stored)),
            Some(c) => c
                .open_record(header, stored)
                .map(std::borrow::Cow::Owned)
                .map_err(|detail| StoreError::CorruptChunk {
                    chunk: header.chunk,
                    path: path.to_path_buf(),
                    offset,
                    detail,
                }),
        }
    }

    /// A record's compressed bytes, read into `buf` (and decrypted into a
    /// new buffer in an encrypted store).
    fn read_stored<'b>(
        &self,
        link: &Link,
        header: &RecordHeader,
        buf: &'b mut Vec<u8>,
    ) -> Result<std::borrow::Cow<'b, [u8]>, StoreError> {
        let file = self
            .open
            .get(&link.entry.pack)
            .ok_or_else(|| StoreError::Invalid {
                what: "reader state",
                detail: format!("pack {} not open", link.entry.pack),
            })?;
        pack::read_record_into(file, &link.path, link.entry.offset, header, buf)?;
        self.open_sealed(header, buf, &link.path, link.entry.offset)
    }

    /// Looks up `id` and the bases of its delta chain and opens their packs,
    /// all under one hold of the gc read lock: gc cannot
    /// delete a pack in between. After that the open handles keep reading
    /// even if a later gc unlinks the files (packs are immutable).
    fn resolve(&mut self, id: ChunkId) -> Result<Option<Vec<Link>>, StoreError> {
        let inner = Arc::clone(&self.inner);
        let _gc = inner.gc_read();
        if self.open.len() + usize::from(MAX_DELTA_DEPTH) + 1 > READER_OPEN_PACKS {
            self.open.clear();
        }
        let mut chain: Vec<Link> = Vec::with_capacity(2);
        let mut next = id;
        loop {
            let Some(entry) = inner.index.get(&next)? else {
                let Some(top) = chain.last() else {
                    return Ok(None);
                };
                return Err(self.broken(
                    top,
                    format!("its base chunk {next} is missing from the index"),
                ));
            };
            let path = inner.pack_path(entry.pack);
            if let Entry::Vacant(slot) = self.open.entry(entry.pack) {
                slot.insert(
                    inner
                        .open_pack(entry.pack)
                        .map_err(|e| StoreError::CorruptChunk {
                            chunk: next,
                            path: path.clone(),
                            offset: entry.offset,
                            detail: format!("cannot open pack: {e}"),
                        })?,
                );
            }
            chain.push(Link {
                id: next,
                entry,
                path,
            });
            match entry.delta_base() {
                None => return Ok(Some(chain)),
                Some(_) if chain.len() > usize::from(MAX_DELTA_DEPTH) => {
                    return Err(self.broken(
                        &chain[0],
                        format!("delta chain longer than {MAX_DELTA_DEPTH} records"),
                    ));
                }
                Some(base) => next = base,
            }
        }
    }

    fn broken(&self, link: &Link, detail: String) -> StoreError {
        StoreError::CorruptChunk {
            chunk: link.id,
            path: link.path.clone(),
            offset: link.entry.offset,
            detail,
        }
    }
}

/// One stored file of a dump, its chunk list read from the manifest once:
/// readers of it for any number of threads, without reading the manifest
/// again (`Store::stored_files`: a restore serving thousands of data files
/// reads the manifest once, not once a file).
#[derive(Clone)]
pub struct StoredFile {
    inner: Arc<Inner>,
    dump: Uuid,
    name: Arc<str>,
    chunks: Arc<[ChunkRef]>,
    /// Chunks its readers decoded last, shared (`sharing_decoded`).
    recent: Option<Arc<Mutex<Recent>>>,
}

/// Chunks kept by `Recent`; why: the readers of a served custom archive's
/// small data blocks (two at a time under `pg_restore -j 2`, blocks of
/// similar size one after another) read a few chunks in turn, each
/// holding dozens of blocks.
const RECENT_CHUNKS: usize = 4;
/// Larger chunks are not kept, so `Recent` holds at most 8 MiB.
const RECENT_CHUNK_MAX_BYTES: usize = 2 << 20;

/// The last decoded (and hash-checked) chunks of one file, by their place
/// in it, oldest first.
#[derive(Default)]
struct Recent {
    chunks: VecDeque<(usize, Arc<Vec<u8>>)>,
}

impl Recent {
    fn get(&self, at: usize) -> Option<Arc<Vec<u8>>> {
        self.chunks
            .iter()
            .find(|(i, _)| *i == at)
            .map(|(_, raw)| Arc::clone(raw))
    }

    fn keep(&mut self, at: usize, raw: Arc<Vec<u8>>) {
        if self.chunks.iter().any(|(i, _)| *i == at) {
            return;
        }
        if self.chunks.len() == RECENT_CHUNKS {
            self.chunks.pop_front();
        }
        self.chunks.push_back((at, raw));
    }
}

impl StoredFile {
    pub(crate) fn new(inner: Arc<Inner>, dump: Uuid, name: &str, chunks: &[ChunkRef]) -> Self {
        StoredFile {
            inner,
            dump,
            name: name.into(),
            chunks: chunks.into(),
            recent: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// This file with its readers (and those of its clones) sharing the
    /// last few chunks they decoded (at most 4 of at most 2 MiB each): for
    /// many readers of small parts of the file, which would otherwise each
    /// decode and hash-check the same chunk. A chunk is copied once more
    /// when it is kept and when it is read from there.
    pub fn sharing_decoded(mut self) -> Self {
        self.recent = Some(Arc::default());
        self
    }

    /// A reader from the file's start.
    pub fn reader(&self) -> FileReader {
        let mut r = FileReader::new(
            Arc::clone(&self.inner),
            self.dump,
            &self.name,
            Arc::clone(&self.chunks),
        );
        r.recent = self.recent.clone();
        r
    }
}

/// Streams the chunks of one file in order. Memory: one raw chunk at a time
/// (at most the store's max chunk size) plus the chunk list.
pub struct FileReader {
    dump: Uuid,
    name: String,
    chunks: Arc<[ChunkRef]>,
    /// Chunks from this index on are not read (`stop_at`).
    end: usize,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    chunk_reader: ChunkReader,
    done: u64,
    size: u64,
    /// Bytes of the next chunk loaded that lie before the position sought
    /// (`seek_to`), dropped when it is decoded.
    skip: usize,
    /// Chunks shared with the other readers of the file (`StoredFile::sharing_decoded`).
    recent: Option<Arc<Mutex<Recent>>>,
}

impl FileReader {
    pub(crate) fn new(inner: Arc<Inner>, dump: Uuid, name: &str, chunks: Arc<[ChunkRef]>) -> Self {
        let size = chunks.iter().map(|c| u64::from(c.len)).sum();
        FileReader {
            chunk_reader: ChunkReader::new(inner),
            dump,
            name: name.to_string(),
            end: chunks.len(),
            chunks,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            done: 0,
            size,
            skip: 0,
            recent: None,
        }
    }

    /// Moves to byte `offset` of the file (at most its size): the next read,
    /// or the first chunk of a `read_ahead` made from it, starts there. Only
    /// the chunk holding `offset` is decoded again.
    pub fn seek_to(&mut self, offset: u64) -> Result<(), StoreError> {
        if offset > self.size {
            return Err(StoreError::Invalid {
                what: "read offset",
                detail: format!(
                    "offset {offset} is past the end of {} of dump {} ({} bytes)",
                    self.name, self.dump, self.size
                ),
            });
        }
        let (index, start) = self.chunk_holding(offset);
        self.next = index;
        // `offset - start` is below one chunk's length (a u32).
        self.skip = usize::try_from(offset - start).unwrap_or(0);
        self.buf.clear();
        self.pos = 0;
        self.done = offset;
        Ok(())
    }

    /// Decodes no chunk that starts at or after byte `offset`: the stream
    /// ends with the chunk holding byte `offset - 1`, so a reader of a part
    /// of the file (one data block of a custom archive) does not decode
    /// chunks past it, which a `read_ahead` would otherwise do, up to its
    /// depth. The stream may still go on past `offset` within that chunk.
    pub fn stop_at(&mut self, offset: u64) {
        let (index, start) = self.chunk_holding(offset);
        // The chunk holding `offset` is read too when it starts before it.
        self.end = if index < self.chunks.len() && start < offset {
            index + 1
        } else {
            index
        };
    }

    /// The place of the chunk holding byte `offset` and where that chunk
    /// starts; past the last chunk: the number of chunks and the file's
    /// size. A scan of the chunk list.
    fn chunk_holding(&self, offset: u64) -> (usize, u64) {
        let mut start = 0u64;
        for (i, c) in self.chunks.iter().enumerate() {
            let end = start + u64::from(c.len);
            if offset < end {
                return (i, start);
            }
            start = end;
        }
        (self.chunks.len(), start)
    }

    /// Bytes of the whole file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes handed out so far.
    pub fn position(&self) -> u64 {
        self.done
    }

    /// Decodes the next chunk of the file; `None` at its end (or at the
    /// chunk `stop_at` named).
    pub(crate) fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        if self.next >= self.end {
            return Ok(None);
        }
        let Some(c) = self.chunks.get(self.next).copied() else {
            return Ok(None);
        };
        let cached = |r: &Arc<Mutex<Recent>>| {
            r.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(self.next)
        };
        if let Some(raw) = self.recent.as_ref().and_then(cached) {
            self.next += 1;
            let skip = std::mem::take(&mut self.skip);
            return Ok(Some(raw.get(skip..).unwrap_or_default().to_vec()));
        }
        let raw = self
            .chunk_reader
            .read(c.id)?
            .ok_or(StoreError::MissingChunk {
                chunk: c.id,
                dump: self.dump,
            })?;
        if raw.len() != c.len as usize {
            return Err(StoreError::Invalid {
                what: "chunk length",
                detail: format!(
                    "chunk {} of {} in dump {} is {} bytes, the manifest says {}",
                    c.id,
                    self.name,
                    self.dump,
                    raw.len(),
                    c.len
                ),
            });
        }
        if let Some(recent) = &self.recent
            && raw.len() <= RECENT_CHUNK_MAX_BYTES
        {
            let kept = Arc::new(raw.clone());
            recent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .keep(self.next, kept);
        }
        self.next += 1;
        if self.skip > 0 {
            let skip = std::mem::take(&mut self.skip);
            return Ok(Some(raw[skip..].to_vec()));
        }
        Ok(Some(raw))
    }

    /// The largest chunk of the file, in bytes.
    pub(crate) fn max_chunk(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.len as usize)
            .max()
            .unwrap_or(0)
    }

    /// Loads the next chunk into `buf`; false at the end of the file.
    fn fill(&mut self) -> Result<bool, StoreError> {
        match self.next_chunk()? {
            Some(raw) => {
                self.buf = raw;
                self.pos = 0;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The same stream, decoded up to `depth` chunks ahead on a thread of
    /// its own (see `ReadAhead`).
    pub fn read_ahead(self, depth: usize) -> crate::read_ahead::ReadAhead {
        crate::read_ahead::ReadAhead::new(self, depth)
    }
}

impl Read for FileReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos >= self.buf.len() {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.done += n as u64;
        Ok(n)
    }
}

/// The store error inside an I/O error from `FileReader::read`, or the I/O
/// error itself.
pub(crate) fn store_error(e: std::io::Error) -> StoreError {
    if e.get_ref().is_some_and(|inner| inner.is::<StoreError>()) {
        if let Some(inner) = e.into_inner()
            && let Ok(se) = inner.downcast::<StoreError>()
        {
            return *se;
        }
        return StoreError::Invalid {
            what: "reader state",
            detail: "lost the error of a failed read".to_string(),
        };
    }
    StoreError::Io {
        context: "read a stored file".to_string(),
        error: e,
    }
}
