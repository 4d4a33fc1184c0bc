//! `FileReader`: one file of a dump as a `std::io::Read` stream, chunk by
//! chunk, every chunk hash-checked on the way. Owns its handle on the store,
//! so it can move to the thread that feeds `pg_restore` or `psql`.

use std::io::Read;
use std::sync::Arc;

use uuid::Uuid;

use crate::error::StoreError;
use crate::manifest::ChunkRef;
use crate::store::{ChunkReader, Inner};

/// Streams the chunks of one file in order. Memory: one raw chunk at a time
/// (at most the store's max chunk size) plus the chunk list.
pub struct FileReader {
    dump: Uuid,
    name: String,
    chunks: Vec<ChunkRef>,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    chunk_reader: ChunkReader,
    done: u64,
    size: u64,
}

impl FileReader {
    pub(crate) fn new(inner: Arc<Inner>, dump: Uuid, name: &str, chunks: Vec<ChunkRef>) -> Self {
        let size = chunks.iter().map(|c| u64::from(c.len)).sum();
        FileReader {
            chunk_reader: ChunkReader::new(inner),
            dump,
            name: name.to_string(),
            chunks,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            done: 0,
            size,
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

    /// Loads the next chunk into `buf`; false at the end of the file.
    fn fill(&mut self) -> Result<bool, StoreError> {
        let Some(c) = self.chunks.get(self.next).copied() else {
            return Ok(false);
        };
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
        self.next += 1;
        self.buf = raw;
        self.pos = 0;
        Ok(true)
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
