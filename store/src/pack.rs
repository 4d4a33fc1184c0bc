//! Pack files: the on-disk container of compressed chunk records (layout in
//! docs/store.md). Owns writing, sealing, reading one record and scanning a
//! whole pack. Knows nothing about the index or manifests.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::chunk::{CHUNK_ID_LEN, ChunkId, Naming};
use crate::crash::{self, CrashPoint};
use crate::error::StoreError;
use crate::{delta, durable};

/// First 8 bytes of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"PGSNPACK";
/// Layout in docs/store.md. Bump on any incompatible change and keep a reader
/// or an upgrade for the old version. Version 2 (the layout of 1) may hold
/// DELTA records; version 1 packs hold FULL records only and keep reading
/// (golden store tests/fixtures/store-v1).
pub const PACK_FORMAT_VERSION: u16 = 2;
/// The oldest pack version this build reads.
pub const PACK_FORMAT_VERSION_MIN: u16 = 1;
/// First 4 bytes of every chunk record.
pub const RECORD_MAGIC: &[u8; 4] = b"CHNK";
/// First 4 bytes of the trailer that ends a sealed pack.
pub const TRAILER_MAGIC: &[u8; 4] = b"PEND";
/// magic 8 | version u16 | pack id 16
pub const HEADER_LEN: u64 = 8 + 2 + 16;
/// magic 4 | chunk id 32 | kind 1 | base id 32 | raw_len 4 | stored_len 4
pub const RECORD_HEADER_LEN: usize = 4 + CHUNK_ID_LEN + 1 + CHUNK_ID_LEN + 4 + 4;
/// magic 4 | record count u32 | BLAKE3 of every preceding byte 32
pub const TRAILER_LEN: u64 = 4 + 4 + 32;

const SEALED_SUFFIX: &str = ".pack";
const OPEN_SUFFIX: &str = ".pack.open";

/// Identity of a pack: a UUIDv7, so names sort roughly by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub Uuid);

impl PackId {
    /// A fresh id.
    pub fn new() -> PackId {
        PackId(Uuid::now_v7())
    }

    /// `<32 hex digits>.pack`
    pub fn sealed_name(&self) -> String {
        format!("{}{SEALED_SUFFIX}", self.0.simple())
    }

    fn open_name(&self) -> String {
        format!("{}{OPEN_SUFFIX}", self.0.simple())
    }

    /// Parses a sealed pack's file name; `None` for anything else (including
    /// `.pack.open` files).
    pub fn from_sealed_name(name: &str) -> Option<PackId> {
        let stem = name.strip_suffix(SEALED_SUFFIX)?;
        Uuid::try_parse(stem).ok().map(PackId)
    }

    /// True for the name of a pack that was being written (not sealed).
    pub fn is_open_name(name: &str) -> bool {
        name.ends_with(OPEN_SUFFIX)
    }
}

impl Default for PackId {
    fn default() -> Self {
        PackId::new()
    }
}

impl std::fmt::Display for PackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

/// How a record's stored bytes encode the raw chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkKind {
    /// zstd frame of the raw bytes.
    Full,
    /// zstd frame of the raw bytes compressed with the raw bytes of the
    /// chunk named by `base` as prefix (see `delta.rs`). Pack version ≥ 2.
    Delta,
}

impl ChunkKind {
    pub fn to_byte(self) -> u8 {
        match self {
            ChunkKind::Full => 0,
            ChunkKind::Delta => 1,
        }
    }

    pub fn from_byte(b: u8) -> Option<ChunkKind> {
        match b {
            0 => Some(ChunkKind::Full),
            1 => Some(ChunkKind::Delta),
            _ => None,
        }
    }
}

/// The fixed-size header in front of every record's stored bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub chunk: ChunkId,
    pub kind: ChunkKind,
    /// `ChunkId::ZERO` for FULL records.
    pub base: ChunkId,
    pub raw_len: u32,
    pub stored_len: u32,
}

impl RecordHeader {
    pub fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[0..4].copy_from_slice(RECORD_MAGIC);
        b[4..36].copy_from_slice(&self.chunk.0);
        b[36] = self.kind.to_byte();
        b[37..69].copy_from_slice(&self.base.0);
        b[69..73].copy_from_slice(&self.raw_len.to_le_bytes());
        b[73..77].copy_from_slice(&self.stored_len.to_le_bytes());
        b
    }

    /// Decodes a header; the error string says which field is wrong.
    pub fn decode(b: &[u8; RECORD_HEADER_LEN]) -> Result<RecordHeader, String> {
        if &b[0..4] != RECORD_MAGIC {
            return Err(format!("bad record magic {:02x?}", &b[0..4]));
        }
        let kind =
            ChunkKind::from_byte(b[36]).ok_or_else(|| format!("unknown record kind {}", b[36]))?;
        let mut chunk = [0u8; CHUNK_ID_LEN];
        chunk.copy_from_slice(&b[4..36]);
        let mut base = [0u8; CHUNK_ID_LEN];
        base.copy_from_slice(&b[37..69]);
        let no_base = base == [0u8; CHUNK_ID_LEN];
        if kind == ChunkKind::Full && !no_base {
            return Err("full record names a base chunk".to_string());
        }
        if kind == ChunkKind::Delta && (no_base || base == chunk) {
            return Err("delta record without a usable base chunk".to_string());
        }
        let mut u = [0u8; 4];
        u.copy_from_slice(&b[69..73]);
        let raw_len = u32::from_le_bytes(u);
        u.copy_from_slice(&b[73..77]);
        let stored_len = u32::from_le_bytes(u);
        Ok(RecordHeader {
            chunk: ChunkId(chunk),
            kind,
            base: ChunkId(base),
            raw_len,
            stored_len,
        })
    }

    /// Bytes the whole record occupies in the pack.
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.stored_len)
    }
}

/// Appends records to `<id>.pack.open`; `seal` makes it `<id>.pack`.
/// Dropping an unsealed writer deletes the `.open` file (best effort; `Store::open`
/// removes any that survive a crash).
pub struct PackWriter {
    id: PackId,
    dir: PathBuf,
    file: Option<BufWriter<File>>,
    hasher: blake3::Hasher,
    len: u64,
    records: u32,
    /// Bytes of the file whose write-back to disk was started (`kick`).
    written_back: u64,
}

/// Bytes of a pack written before its write-back to disk is started; why:
/// without it the page cache holds a whole pack (64 MiB) dirty until `seal`
/// fsyncs it, and that fsync (0.15–0.36 s for 64 MiB here) stops the writer
/// and, at the end of a dump, delays "stored" (docs/benchmarks.md, eighth
/// session). Started every 8 MiB, the disk writes while the dump runs and
/// the final fsync finds little left. Durability is unchanged: `seal` still
/// fsyncs before the rename.
const WRITE_BACK_BYTES: u64 = 8 << 20;

/// A pack that is durable under its final name.
#[derive(Clone, Copy, Debug)]
pub struct SealedPack {
    pub id: PackId,
    pub bytes: u64,
}

impl PackWriter {
    /// Creates `<dir>/<id>.pack.open` and writes the header.
    pub fn create(dir: &Path) -> Result<PackWriter, StoreError> {
        let id = PackId::new();
        let path = dir.join(id.open_name());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(StoreError::io(format!("create pack {}", path.display())))?;
        let mut w = PackWriter {
            id,
            dir: dir.to_path_buf(),
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            hasher: blake3::Hasher::new(),
            len: 0,
            records: 0,
            written_back: 0,
        };
        let mut header = [0u8; HEADER_LEN as usize];
        header[0..8].copy_from_slice(PACK_MAGIC);
        header[8..10].copy_from_slice(&PACK_FORMAT_VERSION.to_le_bytes());
        header[10..26].copy_from_slice(id.0.as_bytes());
        w.write_all(&header)?;
        Ok(w)
    }

    pub fn id(&self) -> PackId {
        self.id
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True before the first byte is written (never, after `create`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of records appended.
    pub fn records(&self) -> u32 {
        self.records
    }

    fn open_path(&self) -> PathBuf {
        self.dir.join(self.id.open_name())
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.open_path();
        let file = self.file.as_mut().ok_or_else(|| StoreError::Invalid {
            what: "pack writer state",
            detail: format!("pack {} is already sealed", path.display()),
        })?;
        file.write_all(bytes)
            .map_err(StoreError::io(format!("write pack {}", path.display())))?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Appends one record; returns the offset of its header.
    pub fn append(&mut self, header: &RecordHeader, stored: &[u8]) -> Result<u64, StoreError> {
        debug_assert_eq!(stored.len(), header.stored_len as usize);
        let offset = self.len;
        self.write_all(&header.encode())?;
        self.write_all(stored)?;
        self.records += 1;
        crash::at(CrashPoint::PackAppend);
        self.kick_write_back();
        Ok(offset)
    }

    /// Starts writing to disk what the file holds beyond `written_back`
    /// once that is `WRITE_BACK_BYTES`, without waiting for it: no
    /// durability promise, only earlier I/O. Linux starts the write-back of
    /// a range given `POSIX_FADV_DONTNEED` (and drops only pages already
    /// clean); PostgreSQL's `pg_flush_data` uses it the same way where
    /// `sync_file_range`, which nix and rustix do not offer, is missing.
    /// A failure is ignored: `seal`'s fsync reports any real write error.
    fn kick_write_back(&mut self) {
        let Some(file) = self.file.as_ref() else {
            return;
        };
        let in_file = self.len - file.buffer().len() as u64;
        if in_file - self.written_back < WRITE_BACK_BYTES {
            return;
        }
        let (Ok(from), Ok(len)) = (
            i64::try_from(self.written_back),
            i64::try_from(in_file - self.written_back),
        ) else {
            return;
        };
        let started = nix::fcntl::posix_fadvise(
            file.get_ref().as_raw_fd(),
            from,
            len,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
        if let Err(e) = started {
            tracing::debug!(pack_id = %self.id, "cannot start the pack's write-back: {e}");
        }
        self.written_back = in_file;
    }

    /// Writes the trailer, fsyncs, renames `.open` → `.pack` and fsyncs the
    /// directory. After this returns the pack survives a crash.
    pub fn seal(mut self) -> Result<SealedPack, StoreError> {
        let mut trailer = [0u8; TRAILER_LEN as usize];
        trailer[0..4].copy_from_slice(TRAILER_MAGIC);
        trailer[4..8].copy_from_slice(&self.records.to_le_bytes());
        let hash = self.hasher.finalize();
        trailer[8..40].copy_from_slice(hash.as_bytes());
        self.write_all(&trailer)?;
        let open_path = self.open_path();
        let sealed_path = self.dir.join(self.id.sealed_name());
        let writer = self.file.take().ok_or_else(|| StoreError::Invalid {
            what: "pack writer state",
            detail: format!("pack {} is already sealed", open_path.display()),
        })?;
        let sealed = (|| {
            let file = writer.into_inner().map_err(|e| StoreError::Io {
                context: format!("flush pack {}", open_path.display()),
                error: e.into_error(),
            })?;
            file.sync_all().map_err(StoreError::io(format!(
                "fsync pack {}",
                open_path.display()
            )))?;
            drop(file);
            crash::at(CrashPoint::PackFsync);
            fs::rename(&open_path, &sealed_path).map_err(StoreError::io(format!(
                "rename {} to {}",
                open_path.display(),
                sealed_path.display()
            )))?;
            crash::at(CrashPoint::PackRename);
            durable::fsync_dir(&self.dir)?;
            crash::at(CrashPoint::PackDirFsync);
            Ok(())
        })();
        if let Err(err) = sealed {
            // The writer is gone, so Drop cannot clean up: a full disk must
            // not leave the unsealed file behind. (A pack renamed but not
            // fsync'd in its directory is left for gc: no index entry names it.)
            if let Err(e) = fs::remove_file(&open_path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %open_path.display(), error = %e, "could not remove unsealed pack");
            }
            return Err(err);
        }
        Ok(SealedPack {
            id: self.id,
            bytes: self.len,
        })
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let path = self.open_path();
            if let Err(err) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %err, "could not remove unsealed pack");
            }
        }
    }
}

/// Reads one record's stored bytes at `offset` of an open pack file and checks
/// that its header matches what the index promised.
pub fn read_record(
    file: &File,
    path: &Path,
    offset: u64,
    expected: &RecordHeader,
) -> Result<Vec<u8>, StoreError> {
    let mut stored = Vec::new();
    read_record_into(file, path, offset, expected, &mut stored)?;
    Ok(stored)
}

/// `read_record` into `stored`, a buffer the caller reuses: its length
/// becomes the record's stored length, and only bytes it did not have
/// before are zeroed first.
pub fn read_record_into(
    file: &File,
    path: &Path,
    offset: u64,
    expected: &RecordHeader,
    stored: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let mut hb = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut hb, offset)
        .map_err(|e| StoreError::CorruptChunk {
            chunk: expected.chunk,
            path: path.to_path_buf(),
            offset,
            detail: format!("cannot read record header: {e}"),
        })?;
    let found = RecordHeader::decode(&hb).map_err(|detail| StoreError::CorruptChunk {
        chunk: expected.chunk,
        path: path.to_path_buf(),
        offset,
        detail,
    })?;
    if found != *expected {
        return Err(StoreError::CorruptChunk {
            chunk: expected.chunk,
            path: path.to_path_buf(),
            offset,
            detail: format!(
                "record header is for chunk {} ({} raw / {} stored bytes), index expects {} / {}",
                found.chunk, found.raw_len, found.stored_len, expected.raw_len, expected.stored_len
            ),
        });
    }
    stored.resize(expected.stored_len as usize, 0);
    file.read_exact_at(stored, offset + RECORD_HEADER_LEN as u64)
        .map_err(|e| StoreError::CorruptChunk {
            chunk: expected.chunk,
            path: path.to_path_buf(),
            offset,
            detail: format!("cannot read {} stored bytes: {e}", expected.stored_len),
        })
}

/// Turns a record's stored (compressed, decrypted) bytes back into the raw
/// chunk and checks its id under the store's `naming`. A DELTA record needs
/// the raw bytes of its base (`base_raw`); a FULL record ignores it.
pub fn decode_chunk(
    header: &RecordHeader,
    stored: &[u8],
    base_raw: Option<&[u8]>,
    naming: Naming,
    path: &Path,
    offset: u64,
) -> Result<Vec<u8>, StoreError> {
    let raw = decode_unchecked(header, stored, base_raw, path, offset)?;
    check_hash(header, &raw, naming, path, offset)?;
    Ok(raw)
}

/// `decode_chunk` without the hash check, for the inner records of a delta
/// chain: the hash of the chain's last record covers every record before it
/// (a wrong base decodes to wrong bytes), so readers hash once per chunk and
/// walk the chain again with `decode_chunk` only to name a damaged record.
pub fn decode_unchecked(
    header: &RecordHeader,
    stored: &[u8],
    base_raw: Option<&[u8]>,
    path: &Path,
    offset: u64,
) -> Result<Vec<u8>, StoreError> {
    let corrupt = |detail: String| StoreError::CorruptChunk {
        chunk: header.chunk,
        path: path.to_path_buf(),
        offset,
        detail,
    };
    let raw = match (header.kind, base_raw) {
        (ChunkKind::Full, _) => {
            delta::decompress(stored, header.raw_len as usize).map_err(corrupt)?
        }
        (ChunkKind::Delta, Some(base)) => delta::decode(stored, base, header.raw_len as usize)
            .map_err(|e| corrupt(format!("delta against base {}: {e}", header.base)))?,
        (ChunkKind::Delta, None) => {
            return Err(corrupt(format!(
                "delta record without its base {} to decode against",
                header.base
            )));
        }
    };
    if raw.len() != header.raw_len as usize {
        return Err(corrupt(format!(
            "decompressed to {} bytes, expected {}",
            raw.len(),
            header.raw_len
        )));
    }
    Ok(raw)
}

/// Checks that `raw` hashes to the record's chunk id (under `naming`).
pub fn check_hash(
    header: &RecordHeader,
    raw: &[u8],
    naming: Naming,
    path: &Path,
    offset: u64,
) -> Result<(), StoreError> {
    let actual = naming.id(raw);
    if actual != header.chunk {
        return Err(StoreError::CorruptChunk {
            chunk: header.chunk,
            path: path.to_path_buf(),
            offset,
            detail: format!("content hashes to {actual}"),
        });
    }
    Ok(())
}

/// What a full scan of a pack found.
#[derive(Clone, Copy, Debug)]
pub struct PackSummary {
    pub id: PackId,
    pub records: u32,
    pub bytes: u64,
}

/// Reads a sealed pack from start to end: header, every record (passed to
/// `visit` with its offset and stored bytes) and the trailer, whose count and
/// BLAKE3 must match. Returns `CorruptPack` or `FormatVersion` on damage.
pub fn scan_pack(
    path: &Path,
    visit: impl FnMut(u64, &RecordHeader, &[u8]) -> Result<(), StoreError>,
) -> Result<PackSummary, StoreError> {
    let file = File::open(path).map_err(StoreError::io(format!("open pack {}", path.display())))?;
    scan_pack_file(&file, path, visit)
}

/// `scan_pack` of a pack file already open (`path` names it in errors).
pub fn scan_pack_file(
    file: &File,
    path: &Path,
    mut visit: impl FnMut(u64, &RecordHeader, &[u8]) -> Result<(), StoreError>,
) -> Result<PackSummary, StoreError> {
    let total = file
        .metadata()
        .map_err(StoreError::io(format!("stat pack {}", path.display())))?
        .len();
    let corrupt = |offset: u64, detail: String| StoreError::CorruptPack {
        path: path.to_path_buf(),
        offset,
        detail,
    };
    if total < HEADER_LEN + TRAILER_LEN {
        return Err(corrupt(
            0,
            format!("file is {total} bytes, too short for a pack"),
        ));
    }
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut hasher = blake3::Hasher::new();
    let mut header = [0u8; HEADER_LEN as usize];
    r.read_exact(&mut header)
        .map_err(|e| corrupt(0, format!("read header: {e}")))?;
    hasher.update(&header);
    if &header[0..8] != PACK_MAGIC {
        return Err(corrupt(0, format!("bad magic {:02x?}", &header[0..8])));
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if !(PACK_FORMAT_VERSION_MIN..=PACK_FORMAT_VERSION).contains(&version) {
        return Err(StoreError::FormatVersion {
            what: "pack",
            path: path.to_path_buf(),
            found: u64::from(version),
            expected: u64::from(PACK_FORMAT_VERSION),
        });
    }
    let mut idb = [0u8; 16];
    idb.copy_from_slice(&header[10..26]);
    let id = PackId(Uuid::from_bytes(idb));

    let trailer_at = total - TRAILER_LEN;
    let mut offset = HEADER_LEN;
    let mut records = 0u32;
    let mut stored = Vec::new();
    while offset < trailer_at {
        if trailer_at - offset < RECORD_HEADER_LEN as u64 {
            return Err(corrupt(offset, "truncated record header".to_string()));
        }
        let mut hb = [0u8; RECORD_HEADER_LEN];
        r.read_exact(&mut hb)
            .map_err(|e| corrupt(offset, format!("read record header: {e}")))?;
        hasher.update(&hb);
        let rh = RecordHeader::decode(&hb).map_err(|d| corrupt(offset, d))?;
        if version < 2 && rh.kind != ChunkKind::Full {
            return Err(corrupt(
                offset,
                format!("pack version {version} cannot hold {:?} records", rh.kind),
            ));
        }
        if rh.record_len() > trailer_at - offset {
            return Err(corrupt(
                offset,
                format!(
                    "record of chunk {} claims {} stored bytes past the end",
                    rh.chunk, rh.stored_len
                ),
            ));
        }
        stored.resize(rh.stored_len as usize, 0);
        r.read_exact(&mut stored)
            .map_err(|e| corrupt(offset, format!("read record: {e}")))?;
        hasher.update(&stored);
        visit(offset, &rh, &stored)?;
        offset += rh.record_len();
        records += 1;
    }
    let mut trailer = [0u8; TRAILER_LEN as usize];
    r.read_exact(&mut trailer)
        .map_err(|e| corrupt(trailer_at, format!("read trailer: {e}")))?;
    if &trailer[0..4] != TRAILER_MAGIC {
        return Err(corrupt(
            trailer_at,
            format!("bad trailer magic {:02x?}", &trailer[0..4]),
        ));
    }
    let count = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
    if count != records {
        return Err(corrupt(
            trailer_at,
            format!("trailer counts {count} records, found {records}"),
        ));
    }
    if hasher.finalize().as_bytes() != &trailer[8..40] {
        return Err(corrupt(trailer_at, "pack checksum mismatch".to_string()));
    }
    Ok(PackSummary {
        id,
        records,
        bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_seal_scan_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path()).unwrap();
        let raw = b"some chunk bytes some chunk bytes".to_vec();
        let stored = zstd::bulk::compress(&raw, 3).unwrap();
        let h = RecordHeader {
            chunk: ChunkId::of(&raw),
            kind: ChunkKind::Full,
            base: ChunkId::ZERO,
            raw_len: raw.len() as u32,
            stored_len: stored.len() as u32,
        };
        let off = w.append(&h, &stored).unwrap();
        assert_eq!(off, HEADER_LEN);
        let sealed = w.seal().unwrap();
        let path = dir.path().join(sealed.id.sealed_name());
        let mut seen = Vec::new();
        let summary = scan_pack(&path, |o, rh, _| {
            seen.push((o, *rh));
            Ok(())
        })
        .unwrap();
        assert_eq!(summary.records, 1);
        assert_eq!(summary.id, sealed.id);
        assert_eq!(seen, vec![(HEADER_LEN, h)]);
        let f = File::open(&path).unwrap();
        let got = read_record(&f, &path, off, &h).unwrap();
        assert_eq!(
            decode_chunk(&h, &got, None, Naming::Plain, &path, off).unwrap(),
            raw
        );
    }

    /// Golden layout of a record header (docs/store.md): changing it needs a
    /// format version bump.
    #[test]
    fn record_header_layout_is_fixed() {
        let h = RecordHeader {
            chunk: ChunkId([0x11; 32]),
            kind: ChunkKind::Full,
            base: ChunkId::ZERO,
            raw_len: 0x0102_0304,
            stored_len: 0x0A0B_0C0D,
        };
        let b = h.encode();
        assert_eq!(&b[0..4], b"CHNK");
        assert_eq!(&b[4..36], &[0x11; 32]);
        assert_eq!(b[36], 0);
        assert_eq!(&b[37..69], &[0; 32]);
        assert_eq!(&b[69..73], &[4, 3, 2, 1]);
        assert_eq!(&b[73..77], &[0x0D, 0x0C, 0x0B, 0x0A]);
        assert_eq!(RecordHeader::decode(&b), Ok(h));
        let mut bad = b;
        bad[36] = 7;
        assert!(RecordHeader::decode(&bad).is_err());
    }

    /// A DELTA record decodes against its base's raw bytes; a version 1 pack
    /// cannot hold one.
    #[test]
    fn delta_records_need_their_base_and_pack_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let base: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("{i},").into_bytes())
            .collect();
        let mut raw = base.clone();
        raw[1000..1010].copy_from_slice(b"0123456789");
        let stored = delta::encode(&raw, &base, 1).unwrap();
        let h = RecordHeader {
            chunk: ChunkId::of(&raw),
            kind: ChunkKind::Delta,
            base: ChunkId::of(&base),
            raw_len: raw.len() as u32,
            stored_len: stored.len() as u32,
        };
        let mut w = PackWriter::create(dir.path()).unwrap();
        let off = w.append(&h, &stored).unwrap();
        let sealed = w.seal().unwrap();
        let path = dir.path().join(sealed.id.sealed_name());
        scan_pack(&path, |_, rh, _| {
            assert_eq!(*rh, h);
            Ok(())
        })
        .unwrap();
        let f = File::open(&path).unwrap();
        let got = read_record(&f, &path, off, &h).unwrap();
        assert_eq!(
            decode_chunk(&h, &got, Some(&base), Naming::Plain, &path, off).unwrap(),
            raw
        );
        let err = decode_chunk(&h, &got, None, Naming::Plain, &path, off).unwrap_err();
        assert!(err.to_string().contains("without its base"), "{err}");
        let mut other = base.clone();
        other[2000] ^= 1;
        assert!(decode_chunk(&h, &got, Some(&other), Naming::Plain, &path, off).is_err());

        // The same bytes claiming version 1 (trailer checksum recomputed).
        let mut bytes = fs::read(&path).unwrap();
        bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
        let end = bytes.len() - TRAILER_LEN as usize;
        let sum = blake3::hash(&bytes[..end]);
        bytes[end + 8..].copy_from_slice(sum.as_bytes());
        fs::write(&path, &bytes).unwrap();
        let err = scan_pack(&path, |_, _, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("cannot hold Delta"), "{err}");
    }

    #[test]
    fn headers_with_inconsistent_bases_are_rejected() {
        let full_with_base = RecordHeader {
            chunk: ChunkId([1; 32]),
            kind: ChunkKind::Full,
            base: ChunkId([2; 32]),
            raw_len: 1,
            stored_len: 1,
        };
        assert!(RecordHeader::decode(&full_with_base.encode()).is_err());
        let delta_on_itself = RecordHeader {
            kind: ChunkKind::Delta,
            base: ChunkId([1; 32]),
            ..full_with_base
        };
        assert!(RecordHeader::decode(&delta_on_itself.encode()).is_err());
        let delta_without_base = RecordHeader {
            base: ChunkId::ZERO,
            ..delta_on_itself
        };
        assert!(RecordHeader::decode(&delta_without_base.encode()).is_err());
    }

    #[test]
    fn dropped_writer_removes_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let w = PackWriter::create(dir.path()).unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
