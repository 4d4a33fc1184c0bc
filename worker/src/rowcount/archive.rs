//! A streaming reader of pg_dump's archive format (pg_backup_archiver.c,
//! pg_backup_custom.c): the header, the table of contents and, in a
//! custom-format stream, the data blocks, whose COPY text it counts. It also
//! reads a directory dump's `toc.dat` (same header and TOC, no data).
//! Fed in pieces split anywhere; holds only the TOC's table names.
use std::collections::HashMap;

use super::copy::CopyRows;

/// Oldest archive version read: 1.12 (PostgreSQL 9.0).
const OLDEST: u32 = version(1, 12, 0);
/// Newest archive version read: 1.16 (PostgreSQL 17 and 18).
const NEWEST: u32 = version(1, 16, 0);
/// Longest TOC string kept (a name, a type); the others are skipped unread.
const MAX_KEPT_STRING: u64 = 64 * 1024;
/// The format byte of a custom archive, and of a directory dump's toc.dat
/// (3 as pg_dump 15 writes it; 5 is `archDirectory` of pg_backup.h, also
/// accepted).
const FORMAT_CUSTOM: u8 = 1;
const FORMAT_DIRECTORY: [u8; 2] = [3, 5];
/// Most data-block offsets recorded for a custom archive (beyond, none
/// are): a restore serves at most this many blocks through named pipes
/// (`restore::served::SERVE_MAX_FILES`), and the list goes into the
/// dump's manifest.
pub const MAX_BLOCK_OFFSETS: usize = 2048;
/// Data block types (pg_backup_archiver.h).
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

const fn version(major: u8, minor: u8, rev: u8) -> u32 {
    ((major as u32) << 16) | ((minor as u32) << 8) | rev as u32
}

fn version_text(v: u32) -> String {
    format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}

/// An archive int: a sign byte, then its magnitude, least significant byte
/// first (`b` holds the sign byte and `int_size` bytes). Also used by the
/// restore's custom-to-directory rewrite (`restore/custom.rs`).
pub(crate) fn decode_int(b: &[u8]) -> i64 {
    let mut v: i64 = 0;
    for (i, byte) in b[1..].iter().enumerate() {
        v |= i64::from(*byte) << (8 * i);
    }
    if b[0] != 0 { -v } else { v }
}

/// What an archive holds: its TABLE DATA entries and, for a custom
/// archive, the rows of each data block, both by dump id.
pub type Read = (HashMap<i64, TableData>, HashMap<i64, u64>);

/// What is being read: a custom-format archive, or a directory dump's toc.dat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    Custom,
    DirectoryToc,
}

/// One TABLE DATA entry of the TOC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableData {
    pub schema: String,
    pub table: String,
    /// The data is COPY text (pg_dump without --inserts).
    pub copy: bool,
    /// Directory format: the file holding the data (e.g. `3345.dat`).
    pub file: String,
}

/// A string of a TOC entry that is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Skip,
    Tag,
    Desc,
    CopyStmt,
    Namespace,
    FileName,
}

/// One field of a TOC entry, in archive order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    DumpId,
    Int,
    Str(Slot),
    /// The dependency list: strings up to a NULL one.
    Deps,
    /// Custom format: a flag byte and an offset.
    Offset,
}

/// Where to go once a string's body has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    HeadStrings(u8),
    Entry(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Magic, version, int size, offset size, format: 11 bytes.
    Head,
    Compression,
    HeadTime(u8),
    HeadStrings(u8),
    TocCount,
    Entry(usize),
    /// A string's body: `left` bytes, kept in `slot` (or skipped).
    StrBody {
        left: u64,
        slot: Slot,
        after: After,
    },
    OffsetBytes(After),
    BlockType,
    BlockId {
        blobs: bool,
    },
    ChunkLen,
    Data(u64),
    BlobOid,
    BlobChunkLen,
    BlobSkip(u64),
    /// The end of what is read (a toc.dat's TOC is complete).
    Done,
    Failed,
}

/// Reads an archive as it streams past.
pub struct ArchiveRows {
    container: Container,
    state: State,
    /// Bytes of the item being read (at most one int, offset or header).
    tok: Vec<u8>,
    version: u32,
    int_size: usize,
    off_size: usize,
    entry_plan: Vec<Field>,
    toc_left: i64,
    entry: TableData,
    entry_id: i64,
    entry_desc: String,
    kept: Vec<u8>,
    /// TABLE DATA entries by dump id.
    tables: HashMap<i64, TableData>,
    /// Custom format: rows per data block, by dump id.
    counted: HashMap<i64, u64>,
    current: Option<(i64, CopyRows)>,
    error: Option<String>,
    /// Bytes fed so far.
    fed: u64,
    /// Custom format: where the table of contents ends (the first data
    /// block's offset), once read.
    toc_end: Option<u64>,
    /// Custom format: the offset of the block header being read.
    block_at: u64,
    /// Custom format: where each data block's header starts, by dump id, in
    /// archive order; `None` once there are more than `MAX_BLOCK_OFFSETS`.
    block_offsets: Option<Vec<(i64, u64)>>,
}

impl ArchiveRows {
    pub fn new(container: Container) -> Self {
        ArchiveRows {
            container,
            state: State::Head,
            tok: Vec::with_capacity(16),
            version: 0,
            int_size: 0,
            off_size: 0,
            entry_plan: Vec::new(),
            toc_left: 0,
            entry: TableData::default(),
            entry_id: 0,
            entry_desc: String::new(),
            kept: Vec::new(),
            tables: HashMap::new(),
            counted: HashMap::new(),
            current: None,
            error: None,
            fed: 0,
            toc_end: None,
            block_at: 0,
            block_offsets: Some(Vec::new()),
        }
    }

    /// Custom format: where each data block's header starts, by dump id, in
    /// archive order (`None` past `MAX_BLOCK_OFFSETS` blocks), taken out.
    /// Complete only when `finish` succeeds.
    pub fn take_block_offsets(&mut self) -> Option<Vec<(i64, u64)>> {
        self.block_offsets.take()
    }

    /// Custom format: the length of the header and table of contents, once
    /// read (what `pg_restore --list` reads of the archive).
    pub fn toc_end(&self) -> Option<u64> {
        self.toc_end
    }

    fn fail(&mut self, why: String) {
        if self.error.is_none() {
            self.error = Some(why);
        }
        self.state = State::Failed;
    }

    /// Moves bytes of `input` into `tok` until it holds `n`; true when it does.
    fn fill(&mut self, input: &mut &[u8], n: usize) -> bool {
        let want = n - self.tok.len().min(n);
        let take = want.min(input.len());
        self.tok.extend_from_slice(&input[..take]);
        *input = &input[take..];
        self.tok.len() >= n
    }

    /// Reads an archive int (a sign byte, then `int_size` bytes, least
    /// significant first); `None` until it is complete.
    fn int(&mut self, input: &mut &[u8]) -> Option<i64> {
        if !self.fill(input, 1 + self.int_size) {
            return None;
        }
        let v = decode_int(&self.tok);
        self.tok.clear();
        Some(v)
    }

    fn byte(&mut self, input: &mut &[u8]) -> Option<u8> {
        if !self.fill(input, 1) {
            return None;
        }
        let b = self.tok[0];
        self.tok.clear();
        Some(b)
    }

    /// Feeds the next bytes of the archive.
    pub fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            let before = input.len();
            self.step(&mut input);
            self.fed += (before - input.len()) as u64;
            if self.state == State::BlockType && self.tok.is_empty() {
                self.toc_end.get_or_insert(self.fed);
                self.block_at = self.fed;
            }
            if matches!(self.state, State::Done | State::Failed) {
                return;
            }
        }
    }

    /// Advances by at most one item, consuming what it can of `input`.
    fn step(&mut self, input: &mut &[u8]) {
        match self.state {
            State::Head => {
                if self.fill(input, 11) {
                    self.head();
                }
            }
            State::Compression => {
                let compression = if self.version >= version(1, 15, 0) {
                    self.byte(input).map(i64::from)
                } else {
                    self.int(input)
                };
                match compression {
                    None => {}
                    Some(0) => self.state = State::HeadTime(7),
                    Some(c) => self.fail(format!(
                        "the archive is compressed (method or level {c}); rows are counted in uncompressed (-Z0) archives only"
                    )),
                }
            }
            State::HeadTime(left) => {
                if self.int(input).is_some() {
                    self.state = if left > 1 {
                        State::HeadTime(left - 1)
                    } else {
                        State::HeadStrings(3)
                    };
                }
            }
            State::HeadStrings(0) => self.state = State::TocCount,
            State::HeadStrings(left) => {
                if let Some(len) = self.int(input) {
                    self.string(len, Slot::Skip, After::HeadStrings(left - 1));
                }
            }
            State::TocCount => {
                if let Some(n) = self.int(input) {
                    if n < 0 {
                        return self.fail(format!("a negative TOC entry count ({n})"));
                    }
                    self.toc_left = n;
                    self.next_entry();
                }
            }
            State::Entry(i) => self.entry_field(input, i),
            State::StrBody { left, slot, after } => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                if slot != Slot::Skip {
                    self.kept.extend_from_slice(&input[..take]);
                }
                *input = &input[take..];
                let left = left - take as u64;
                if left > 0 {
                    self.state = State::StrBody { left, slot, after };
                } else {
                    self.keep(slot);
                    self.resume(after);
                }
            }
            State::OffsetBytes(after) => {
                if self.fill(input, 1 + self.off_size) {
                    self.tok.clear();
                    self.resume(after);
                }
            }
            State::BlockType => {
                if let Some(b) = self.byte(input) {
                    match b {
                        BLK_DATA => self.state = State::BlockId { blobs: false },
                        BLK_BLOBS => self.state = State::BlockId { blobs: true },
                        other => self.fail(format!("an unknown data block type {other}")),
                    }
                }
            }
            State::BlockId { blobs } => {
                if let Some(id) = self.int(input) {
                    if blobs {
                        self.state = State::BlobOid;
                    } else {
                        if self.counted.contains_key(&id) {
                            return self.fail(format!("two data blocks for entry {id}"));
                        }
                        self.current = Some((id, CopyRows::new()));
                        self.state = State::ChunkLen;
                        let at = self.block_at;
                        if let Some(offsets) = self.block_offsets.as_mut() {
                            if offsets.len() < MAX_BLOCK_OFFSETS {
                                offsets.push((id, at));
                            } else {
                                self.block_offsets = None;
                            }
                        }
                    }
                }
            }
            State::ChunkLen => match self.int(input) {
                None => {}
                Some(0) => {
                    if let Some((id, rows)) = self.current.take() {
                        self.counted.insert(id, rows.rows());
                    }
                    self.state = State::BlockType;
                }
                Some(n) if n < 0 => self.fail(format!("a negative data chunk length ({n})")),
                Some(n) => self.state = State::Data(n.unsigned_abs()),
            },
            State::Data(left) => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                if let Some((_, rows)) = self.current.as_mut() {
                    rows.feed(&input[..take]);
                }
                *input = &input[take..];
                let left = left - take as u64;
                self.state = if left > 0 {
                    State::Data(left)
                } else {
                    State::ChunkLen
                };
            }
            State::BlobOid => match self.int(input) {
                None => {}
                Some(0) => self.state = State::BlockType,
                Some(_) => self.state = State::BlobChunkLen,
            },
            State::BlobChunkLen => match self.int(input) {
                None => {}
                Some(0) => self.state = State::BlobOid,
                Some(n) if n < 0 => self.fail(format!("a negative data chunk length ({n})")),
                Some(n) => self.state = State::BlobSkip(n.unsigned_abs()),
            },
            State::BlobSkip(left) => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                *input = &input[take..];
                let left = left - take as u64;
                self.state = if left > 0 {
                    State::BlobSkip(left)
                } else {
                    State::BlobChunkLen
                };
            }
            State::Done | State::Failed => *input = &[],
        }
    }

    /// Checks the fixed part of the header and plans the TOC entries.
    fn head(&mut self) {
        let t = std::mem::take(&mut self.tok);
        if &t[..5] != b"PGDMP" {
            return self.fail("not a pg_dump archive (no PGDMP magic)".to_string());
        }
        self.version = version(t[5], t[6], t[7]);
        if !(OLDEST..=NEWEST).contains(&self.version) {
            return self.fail(format!(
                "archive version {} is not one this worker reads ({} to {})",
                version_text(self.version),
                version_text(OLDEST),
                version_text(NEWEST)
            ));
        }
        self.int_size = usize::from(t[8]);
        self.off_size = usize::from(t[9]);
        if !(1..=8).contains(&self.int_size) || !(1..=16).contains(&self.off_size) {
            return self.fail(format!(
                "unsupported integer size {} or offset size {}",
                t[8], t[9]
            ));
        }
        let known = match self.container {
            Container::Custom => t[10] == FORMAT_CUSTOM,
            Container::DirectoryToc => FORMAT_DIRECTORY.contains(&t[10]),
        };
        if !known {
            return self.fail(format!(
                "archive format {} is not a {:?} archive",
                t[10], self.container
            ));
        }
        let mut plan = vec![
            Field::DumpId,
            Field::Int,             // hadDumper
            Field::Str(Slot::Skip), // table oid
            Field::Str(Slot::Skip), // oid
            Field::Str(Slot::Tag),
            Field::Str(Slot::Desc),
            Field::Int,             // section
            Field::Str(Slot::Skip), // defn
            Field::Str(Slot::Skip), // dropStmt
            Field::Str(Slot::CopyStmt),
            Field::Str(Slot::Namespace),
            Field::Str(Slot::Skip), // tablespace
        ];
        if self.version >= version(1, 14, 0) {
            plan.push(Field::Str(Slot::Skip)); // tableam
        }
        if self.version >= version(1, 16, 0) {
            plan.push(Field::Int); // relkind
        }
        plan.push(Field::Str(Slot::Skip)); // owner
        plan.push(Field::Str(Slot::Skip)); // "false" (WITH OIDS)
        plan.push(Field::Deps);
        plan.push(match self.container {
            Container::Custom => Field::Offset,
            Container::DirectoryToc => Field::Str(Slot::FileName),
        });
        self.entry_plan = plan;
        self.state = State::Compression;
    }

    /// Starts a string of length `len` (-1: NULL) kept in `slot`.
    fn string(&mut self, len: i64, slot: Slot, after: After) {
        self.kept.clear();
        if len <= 0 {
            self.keep(slot);
            return self.resume(after);
        }
        let left = len.unsigned_abs();
        if slot != Slot::Skip && left > MAX_KEPT_STRING {
            return self.fail(format!(
                "a TOC name of {left} bytes (more than {MAX_KEPT_STRING})"
            ));
        }
        self.state = State::StrBody { left, slot, after };
    }

    /// Stores a complete kept string.
    fn keep(&mut self, slot: Slot) {
        let text = || String::from_utf8_lossy(&self.kept).into_owned();
        match slot {
            Slot::Skip => {}
            Slot::Tag => self.entry.table = text(),
            Slot::Desc => self.entry_desc = text(),
            Slot::CopyStmt => self.entry.copy = !self.kept.is_empty(),
            Slot::Namespace => self.entry.schema = text(),
            Slot::FileName => self.entry.file = text(),
        }
        self.kept.clear();
    }

    fn resume(&mut self, after: After) {
        self.state = match after {
            After::HeadStrings(left) => State::HeadStrings(left),
            After::Entry(i) => return self.goto_field(i),
        };
    }

    /// Goes to field `i` of the entry; past the last one, ends the entry at
    /// once (the input may end right here, as a toc.dat does).
    fn goto_field(&mut self, i: usize) {
        if i < self.entry_plan.len() {
            self.state = State::Entry(i);
        } else {
            self.end_entry();
        }
    }

    fn entry_field(&mut self, input: &mut &[u8], i: usize) {
        let Some(&field) = self.entry_plan.get(i) else {
            return self.end_entry();
        };
        match field {
            Field::DumpId => {
                if let Some(id) = self.int(input) {
                    self.entry_id = id;
                    self.goto_field(i + 1);
                }
            }
            Field::Int => {
                if self.int(input).is_some() {
                    self.goto_field(i + 1);
                }
            }
            Field::Str(slot) => {
                if let Some(len) = self.int(input) {
                    self.string(len, slot, After::Entry(i + 1));
                }
            }
            Field::Deps => {
                if let Some(len) = self.int(input) {
                    if len < 0 {
                        self.goto_field(i + 1);
                    } else {
                        self.string(len, Slot::Skip, After::Entry(i));
                    }
                }
            }
            Field::Offset => self.state = State::OffsetBytes(After::Entry(i + 1)),
        }
    }

    fn end_entry(&mut self) {
        let entry = std::mem::take(&mut self.entry);
        if self.entry_desc == "TABLE DATA" {
            self.tables.insert(self.entry_id, entry);
        }
        self.entry_desc.clear();
        self.toc_left -= 1;
        self.next_entry();
    }

    fn next_entry(&mut self) {
        self.state = if self.toc_left > 0 {
            State::Entry(0)
        } else {
            match self.container {
                Container::Custom => State::BlockType,
                Container::DirectoryToc => State::Done,
            }
        };
    }

    /// The TABLE DATA entries and, for a custom archive, their rows; or why
    /// the archive could not be read.
    pub fn finish(self) -> Result<Read, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let complete = match self.container {
            Container::Custom => self.state == State::BlockType && self.tok.is_empty(),
            Container::DirectoryToc => self.state == State::Done,
        };
        if !complete {
            return Err("the archive ends before its end".to_string());
        }
        Ok((self.tables, self.counted))
    }
}
