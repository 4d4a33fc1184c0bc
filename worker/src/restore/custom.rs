//! A custom-format archive (pg_backup_custom.c) seen as a directory-format
//! one (pg_backup_directory.c), so that pg_restore -j can read it from the
//! store without a spooled copy: its header and TOC rewritten as `toc.dat`,
//! and the framing of its data blocks (where each starts, the length-prefixed
//! chunks in it). Pure byte work: no store, no files, no threads.
use std::io::{ErrorKind, Read, Write};

use crate::rowcount::decode_int;

/// Oldest archive version served: 1.12 (PostgreSQL 9.0 to 10).
const OLDEST: (u8, u8) = (1, 12);
/// Newest archive version served: 1.16 (PostgreSQL 17 and 18).
const NEWEST: (u8, u8) = (1, 16);
/// The format byte of a custom archive.
const FORMAT_CUSTOM: u8 = 1;
/// The format byte pg_dump 15, 16 and 18 write into a directory dump's
/// toc.dat (checked against their output).
pub(super) const FORMAT_DIRECTORY: u8 = 3;
/// Custom format's extra TOC: the flag of an entry without data
/// (K_OFFSET_NO_DATA); 1 and 2 (offset not set, set) have a data block.
const OFFSET_NO_DATA: u8 = 3;
/// Data block types (pg_backup_archiver.h).
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
/// Longest entry description kept (`TABLE DATA`, `BLOBS`); longer ones are
/// copied without being looked at.
const MAX_DESC: u64 = 256;

/// Why a custom archive is not served (it is spooled instead), or what
/// stopped reading it.
#[derive(Debug)]
pub enum Refusal {
    /// A shape this worker does not serve; the restore spools the archive.
    Unserved(String),
    /// The archive could not be read or the toc.dat not written.
    Io(std::io::Error),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unserved(why) => write!(f, "{why}"),
            Refusal::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<std::io::Error> for Refusal {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == ErrorKind::UnexpectedEof {
            return Refusal::Io(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "the archive ends inside its table of contents",
            ));
        }
        Refusal::Io(e)
    }
}

fn unserved<T>(why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Unserved(why.into()))
}

/// What the rewrite learnt of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of an archive int after its sign byte.
    pub int_size: usize,
    /// Where the header and TOC end: the first data block.
    pub toc_end: u64,
    /// Dump ids of the entries that have a data block, in TOC order; each
    /// is `<id>.dat` in the directory archive.
    pub data: Vec<i64>,
}

/// The data file name of entry `id` in a directory archive.
pub fn data_file(id: i64) -> String {
    format!("{id}.dat")
}

/// Reads a custom archive's header and TOC from `input` and writes them to
/// `out` as a directory archive's toc.dat: the same bytes but the format
/// byte, and each entry's data offset replaced by its data file's name
/// (`<id>.dat`, or empty for an entry without data). Refuses compressed
/// archives, large objects and versions outside 1.12 to 1.16.
pub fn rewrite_toc(input: impl Read, out: impl Write) -> Result<Layout, Refusal> {
    let mut c = Copier {
        input,
        out,
        pos: 0,
        int_size: 4,
    };
    let mut head = [0u8; 11];
    c.read(&mut head)?;
    let (version, int_size) =
        check_head(&head, FORMAT_CUSTOM, "custom").map_err(Refusal::Unserved)?;
    c.int_size = int_size;
    let off_size = usize::from(head[9]);
    head[10] = FORMAT_DIRECTORY;
    c.write(&head)?;
    let (compression, count) = header_fields(&mut c, version)?;
    if compression != 0 {
        return unserved(format!(
            "the archive is compressed (method or level {compression})"
        ));
    }
    if count < 0 {
        return unserved(format!("a negative TOC entry count ({count})"));
    }
    let mut data = Vec::new();
    for _ in 0..count {
        let EntryFields { id, desc, .. } = entry_fields(&mut c, version)?;
        // The custom format's extra TOC: a flag byte and an offset.
        let mut flag = [0u8; 1];
        c.read(&mut flag)?;
        let mut offset = [0u8; 16];
        c.read(&mut offset[..off_size])?;
        if desc.as_deref() == Some(b"BLOBS".as_slice()) {
            return unserved("the archive holds large objects");
        }
        if flag[0] == OFFSET_NO_DATA {
            c.write_str(b"")?;
        } else {
            c.write_str(data_file(id).as_bytes())?;
            data.push(id);
        }
    }
    c.out.flush()?;
    Ok(Layout {
        int_size: c.int_size,
        toc_end: c.pos,
        data,
    })
}

/// Checks an archive's first 11 bytes: the magic, a version served (1.12
/// to 1.16), int and offset sizes, and the format byte `format` (called
/// `name`). Its version and int size, or why not.
pub(super) fn check_head(
    head: &[u8; 11],
    format: u8,
    name: &str,
) -> Result<((u8, u8), usize), String> {
    if &head[..5] != b"PGDMP" {
        return Err("not a pg_dump archive (no PGDMP magic)".into());
    }
    let version = (head[5], head[6]);
    if !(OLDEST..=NEWEST).contains(&version) {
        return Err(format!(
            "archive version {}.{} is not one served ({}.{} to {}.{})",
            head[5], head[6], OLDEST.0, OLDEST.1, NEWEST.0, NEWEST.1
        ));
    }
    let int_size = usize::from(head[8]);
    if !(1..=8).contains(&int_size) || !(1..=16).contains(&head[9]) {
        return Err(format!(
            "integer size {} or offset size {} is not served",
            head[8], head[9]
        ));
    }
    if head[10] != format {
        return Err(format!("format {} is not the {name} format", head[10]));
    }
    Ok((version, int_size))
}

/// Reads the rest of an archive's header after its first 11 bytes: the
/// compression (a byte from 1.15, an int before), the creation time (7
/// ints), the database name, server and pg_dump versions, and the TOC's
/// entry count. The compression and the count.
pub(super) fn header_fields(f: &mut impl Fields, version: (u8, u8)) -> Result<(i64, i64), Refusal> {
    let compression = if version >= (1, 15) {
        i64::from(f.byte()?)
    } else {
        f.int()?
    };
    for _ in 0..7 {
        f.int()?;
    }
    for _ in 0..3 {
        f.string(0)?;
    }
    Ok((compression, f.int()?))
}

/// An archive int as pg_dump writes one: a sign byte, then the magnitude
/// in `int_size` bytes, least significant first (`decode_int` reads it).
pub(super) fn put_int(out: &mut Vec<u8>, int_size: usize, v: i64) {
    out.push(u8::from(v < 0));
    let m = v.unsigned_abs();
    for i in 0..int_size {
        out.push(u8::try_from((m >> (8 * i)) & 0xff).unwrap_or(0));
    }
}

/// Reads an archive's fields as pg_backup_archiver.c writes them.
pub(super) trait Fields {
    /// One byte.
    fn byte(&mut self) -> Result<u8, Refusal>;
    /// An int.
    fn int(&mut self) -> Result<i64, Refusal>;
    /// A string: `None` for a NULL one; its bytes when at most `keep` long,
    /// else empty.
    fn string(&mut self, keep: u64) -> Result<Option<Vec<u8>>, Refusal>;
    /// Bytes read so far.
    fn pos(&self) -> u64;
}

/// Longest dependency string kept (a dump id in decimal).
const MAX_DEP: u64 = 32;

/// One TOC entry's fields, up to its format's extra field.
pub(super) struct EntryFields {
    pub id: i64,
    /// Where the id's int is.
    pub id_at: std::ops::Range<u64>,
    /// The description, when at most `MAX_DESC` long (`TABLE DATA`, `BLOBS`).
    pub desc: Option<Vec<u8>>,
    pub section: i64,
    /// Each dependency string (its length int included) and the dump id it
    /// names, if it is one.
    pub deps: Vec<(std::ops::Range<u64>, Option<i64>)>,
}

/// Reads a TOC entry of an archive of `version` (1.12 to 1.16) up to its
/// format's extra field (pg_backup_archiver.c's ReadToc).
pub(super) fn entry_fields(f: &mut impl Fields, version: (u8, u8)) -> Result<EntryFields, Refusal> {
    let start = f.pos();
    let id = f.int()?;
    let id_at = start..f.pos();
    f.int()?; // hadDumper
    f.string(0)?; // table oid
    f.string(0)?; // oid
    f.string(0)?; // tag
    let desc = f.string(MAX_DESC)?;
    let section = f.int()?;
    for _ in 0..5 {
        f.string(0)?; // defn, dropStmt, copyStmt, namespace, tablespace
    }
    if version >= (1, 14) {
        f.string(0)?; // tableam
    }
    if version >= (1, 16) {
        f.int()?; // relkind
    }
    f.string(0)?; // owner
    f.string(0)?; // "false" (WITH OIDS)
    let mut deps = Vec::new();
    loop {
        let at = f.pos();
        let Some(dep) = f.string(MAX_DEP)? else {
            break;
        };
        let named = std::str::from_utf8(&dep).ok().and_then(|d| d.parse().ok());
        deps.push((at..f.pos(), named));
    }
    Ok(EntryFields {
        id,
        id_at,
        desc,
        section,
        deps,
    })
}

/// Copies the header and TOC through, field by field.
struct Copier<R, W> {
    input: R,
    out: W,
    /// Bytes read so far.
    pos: u64,
    int_size: usize,
}

impl<R: Read, W: Write> Copier<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> Result<(), Refusal> {
        self.input.read_exact(buf)?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), Refusal> {
        Ok(self.out.write_all(buf)?)
    }

    /// Writes a string as pg_dump does (its length as an int, then it).
    fn write_str(&mut self, s: &[u8]) -> Result<(), Refusal> {
        let mut b = Vec::with_capacity(9 + s.len());
        put_int(
            &mut b,
            self.int_size,
            i64::try_from(s.len()).unwrap_or(i64::MAX),
        );
        b.extend_from_slice(s);
        self.write(&b)
    }
}

impl<R: Read, W: Write> Fields for Copier<R, W> {
    /// Copies a byte through and returns it.
    fn byte(&mut self) -> Result<u8, Refusal> {
        let mut b = [0u8; 1];
        self.read(&mut b)?;
        self.write(&b)?;
        Ok(b[0])
    }

    /// Copies an int through and returns it.
    fn int(&mut self) -> Result<i64, Refusal> {
        let mut b = [0u8; 9];
        let n = 1 + self.int_size;
        self.read(&mut b[..n])?;
        self.write(&b[..n])?;
        Ok(decode_int(&b[..n]))
    }

    /// Copies a string through.
    fn string(&mut self, keep: u64) -> Result<Option<Vec<u8>>, Refusal> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let len = len.unsigned_abs();
        let mut kept = Vec::new();
        let mut left = len;
        let mut buf = [0u8; 8192];
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            self.read(&mut buf[..n])?;
            self.write(&buf[..n])?;
            if len <= keep {
                kept.extend_from_slice(&buf[..n]);
            }
            left -= n as u64;
        }
        Ok(Some(kept))
    }

    fn pos(&self) -> u64 {
        self.pos
    }
}

/// What a piece of the data blocks held.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A data block of entry `id` starts; its chunks begin at `chunks_at`.
    Start { id: i64, chunks_at: u64 },
    /// Data of the current block, de-framed.
    Data(&'a [u8]),
    /// The current block ended (its zero-length chunk).
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    BlockType,
    BlockId,
    ChunkLen,
    Data(u64),
    Failed,
}

/// Follows the data blocks after the TOC (a type byte, a dump id, chunks
/// of an int length and that many bytes, a zero length) as they stream
/// past in pieces split anywhere.
pub struct Blocks {
    state: State,
    int_size: usize,
    tok: Vec<u8>,
    /// Offset in the archive of the next byte fed.
    pos: u64,
    id: i64,
}

impl Blocks {
    /// Reading from `toc_end`, where the first block starts.
    pub fn at_first_block(int_size: usize, toc_end: u64) -> Blocks {
        Blocks {
            state: State::BlockType,
            int_size,
            tok: Vec::with_capacity(9),
            pos: toc_end,
            id: 0,
        }
    }

    /// Reading the chunks of one block, from `chunks_at` (a `Start`'s).
    pub fn at_chunks(int_size: usize, chunks_at: u64) -> Blocks {
        Blocks {
            state: State::ChunkLen,
            ..Blocks::at_first_block(int_size, chunks_at)
        }
    }

    /// Between blocks (all that was fed is whole blocks).
    pub fn between_blocks(&self) -> bool {
        self.state == State::BlockType && self.tok.is_empty()
    }

    /// Feeds the next bytes, calling `on` for what they hold; `on` returns
    /// false to stop (the rest of `input` is then left unread). Returns
    /// the bytes consumed.
    pub fn feed(
        &mut self,
        input: &[u8],
        on: &mut dyn FnMut(Event<'_>) -> bool,
    ) -> Result<usize, String> {
        let mut rest = input;
        while !rest.is_empty() {
            let before = rest.len();
            let event = self.step(&mut rest)?;
            self.pos += (before - rest.len()) as u64;
            let event = match event {
                // The chunks start right after the id.
                Some(Event::Start { id, .. }) => Event::Start {
                    id,
                    chunks_at: self.pos,
                },
                Some(e) => e,
                None => continue,
            };
            if !on(event) {
                break;
            }
        }
        Ok(input.len() - rest.len())
    }

    fn fail<T>(&mut self, why: String) -> Result<T, String> {
        self.state = State::Failed;
        Err(why)
    }

    /// Takes bytes into `tok` until it holds `n`; true when it does.
    fn fill(&mut self, rest: &mut &[u8], n: usize) -> bool {
        let take = (n - self.tok.len().min(n)).min(rest.len());
        self.tok.extend_from_slice(&rest[..take]);
        *rest = &rest[take..];
        self.tok.len() >= n
    }

    fn int(&mut self, rest: &mut &[u8]) -> Option<i64> {
        if !self.fill(rest, 1 + self.int_size) {
            return None;
        }
        let v = decode_int(&self.tok);
        self.tok.clear();
        Some(v)
    }

    /// Reads at most one item from `rest` (which is not empty).
    fn step<'a>(&mut self, rest: &mut &'a [u8]) -> Result<Option<Event<'a>>, String> {
        match self.state {
            State::BlockType => {
                let b = rest[0];
                *rest = &rest[1..];
                match b {
                    BLK_DATA => self.state = State::BlockId,
                    BLK_BLOBS => return self.fail("a large-object data block".to_string()),
                    other => {
                        return self.fail(format!(
                            "an unknown data block type {other} at offset {}",
                            self.pos
                        ));
                    }
                }
                Ok(None)
            }
            State::BlockId => {
                let Some(id) = self.int(rest) else {
                    return Ok(None);
                };
                self.id = id;
                self.state = State::ChunkLen;
                Ok(Some(Event::Start { id, chunks_at: 0 }))
            }
            State::ChunkLen => match self.int(rest) {
                None => Ok(None),
                Some(0) => {
                    self.state = State::BlockType;
                    Ok(Some(Event::End))
                }
                Some(n) if n < 0 => self.fail(format!(
                    "a negative data chunk length ({n}) in the block of entry {}",
                    self.id
                )),
                Some(n) => {
                    self.state = State::Data(n.unsigned_abs());
                    Ok(None)
                }
            },
            State::Data(left) => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                let (data, after) = rest.split_at(take);
                *rest = after;
                let left = left - take as u64;
                self.state = if left > 0 {
                    State::Data(left)
                } else {
                    State::ChunkLen
                };
                Ok(Some(Event::Data(data)))
            }
            State::Failed => Err("the data blocks could not be read".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    fn fixture(major: u32) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/custom/pg{major}"))
    }

    /// The data of each block, de-framed, fed in pieces of `piece` bytes;
    /// and where each block's chunks start.
    fn blocks_of(
        archive: &[u8],
        layout: &Layout,
        piece: usize,
    ) -> (BTreeMap<i64, Vec<u8>>, BTreeMap<i64, u64>) {
        let mut b = Blocks::at_first_block(layout.int_size, layout.toc_end);
        let (mut data, mut starts) = (BTreeMap::new(), BTreeMap::new());
        let mut current = None;
        for p in archive[layout.toc_end as usize..].chunks(piece) {
            let used = b
                .feed(p, &mut |e| {
                    match e {
                        Event::Start { id, chunks_at } => {
                            current = Some(id);
                            starts.insert(id, chunks_at);
                            data.insert(id, Vec::new());
                        }
                        Event::Data(d) => data
                            .get_mut(&current.unwrap())
                            .unwrap()
                            .extend_from_slice(d),
                        Event::End => current = None,
                    }
                    true
                })
                .unwrap();
            assert_eq!(used, p.len());
        }
        assert!(b.between_blocks());
        (data, starts)
    }

    /// One block read from its `Start` offset alone, as a FIFO server does.
    fn one_block(archive: &[u8], int_size: usize, at: u64, piece: usize) -> Vec<u8> {
        let mut b = Blocks::at_chunks(int_size, at);
        let mut out = Vec::new();
        let mut ended = false;
        for p in archive[at as usize..].chunks(piece) {
            b.feed(p, &mut |e| match e {
                Event::Data(d) => {
                    out.extend_from_slice(d);
                    true
                }
                _ => {
                    ended = true;
                    false
                }
            })
            .unwrap();
            if ended {
                return out;
            }
        }
        panic!("the block never ended");
    }

    /// Golden archives of pg_dump 15, 16 and 18 (versions 1.14 to 1.16) of
    /// one database, with a directory dump of it taken just after: the
    /// rewritten toc.dat is pg_dump's own but the creation time, and the
    /// de-framed blocks are its data files.
    #[test]
    fn golden_archives_become_the_directory_dumps_of_the_same_database() {
        for major in [15, 16, 18] {
            let dir = fixture(major);
            let archive = std::fs::read(dir.join("archive.dump")).unwrap();
            let expected = std::fs::read(dir.join("dir/toc.dat")).unwrap();
            let mut out = Vec::new();
            let layout = rewrite_toc(archive.as_slice(), &mut out).unwrap();
            let mut ids = layout.data.clone();
            ids.sort_unstable();
            assert_eq!(ids, vec![3362, 3363, 3364], "pg{major}");
            assert_eq!(archive[layout.toc_end as usize], BLK_DATA, "pg{major}");
            // The creation time: 7 ints after the compression field.
            let time_at = if major >= 16 { 12 } else { 16 };
            let time = time_at..time_at + 7 * (1 + layout.int_size);
            assert_eq!(out.len(), expected.len(), "pg{major}");
            assert_eq!(out[..time.start], expected[..time.start], "pg{major}");
            assert_eq!(out[time.end..], expected[time.end..], "pg{major}");
            for piece in [1, 2, 3, 5, 7, 64, 100_000] {
                let (data, starts) = blocks_of(&archive, &layout, piece);
                assert_eq!(data.len(), 3);
                for (id, bytes) in &data {
                    let file = std::fs::read(dir.join(format!("dir/{}", data_file(*id)))).unwrap();
                    assert_eq!(bytes, &file, "pg{major} block {id} in pieces of {piece}");
                    assert_eq!(
                        one_block(&archive, layout.int_size, starts[id], piece),
                        file,
                        "pg{major} block {id} alone"
                    );
                }
            }
        }
    }

    /// The offsets the row counter records as a dump streams in (fed in
    /// pieces of any size) are where each block's header starts: the scan
    /// finds its data right after, and a block read from there is pg_dump's
    /// data file.
    #[test]
    fn offsets_recorded_at_dump_time_are_the_block_headers() {
        use crate::rowcount::{Kind, RowCounter};
        for major in [15, 16, 18] {
            let dir = fixture(major);
            let archive = std::fs::read(dir.join("archive.dump")).unwrap();
            let layout = rewrite_toc(archive.as_slice(), &mut Vec::new()).unwrap();
            let (_, starts) = blocks_of(&archive, &layout, 100_000);
            for piece in [1, 7, 4096, 1 << 20] {
                let mut counter = RowCounter::new(Kind::Custom);
                counter.begin_file("dump");
                for p in archive.chunks(piece) {
                    counter.feed(p);
                }
                let (rows, map) = counter.finish_with_toc();
                assert!(rows.is_ok(), "pg{major}: {rows:?}");
                let map = map.unwrap();
                assert_eq!(map.toc_bytes, layout.toc_end, "pg{major}");
                let offsets = map.block_offsets.unwrap();
                let mut ids: Vec<i64> = offsets.iter().map(|(id, _)| *id).collect();
                ids.sort_unstable();
                assert_eq!(ids, vec![3362, 3363, 3364], "pg{major}");
                for (id, at) in offsets {
                    let header = 2 + layout.int_size as u64;
                    assert_eq!(at + header, starts[&id], "pg{major} block {id}");
                    let mut b = Blocks::at_first_block(layout.int_size, at);
                    let (mut first, mut data) = (None, Vec::new());
                    b.feed(&archive[at as usize..], &mut |e| match e {
                        Event::Start { id, .. } if first.is_none() => {
                            first = Some(id);
                            true
                        }
                        Event::Data(d) => {
                            data.extend_from_slice(d);
                            true
                        }
                        _ => false,
                    })
                    .unwrap();
                    assert_eq!(first, Some(id), "pg{major}");
                    let file = std::fs::read(dir.join(format!("dir/{}", data_file(id)))).unwrap();
                    assert_eq!(data, file, "pg{major} block {id} from its header");
                }
            }
            // Cut short: nothing recorded.
            let mut counter = RowCounter::new(Kind::Custom);
            counter.begin_file("dump");
            counter.feed(&archive[..archive.len() - 1]);
            assert_eq!(counter.finish_with_toc().1, None, "pg{major}");
        }
    }

    /// Writes archives as pg_dump does, custom or directory.
    struct Writer {
        out: Vec<u8>,
    }

    /// (dump id, desc, extra TOC flag of the custom format)
    type Entry = (i64, &'static str, u8);

    impl Writer {
        fn archive(minor: u8, directory: bool, compression: u8, entries: &[Entry]) -> Vec<u8> {
            let mut w = Writer {
                out: b"PGDMP".to_vec(),
            };
            let format = if directory {
                FORMAT_DIRECTORY
            } else {
                FORMAT_CUSTOM
            };
            w.out.extend_from_slice(&[1, minor, 0, 4, 8, format]);
            if minor >= 15 {
                w.out.push(compression);
            } else {
                w.int(i64::from(compression));
            }
            for v in [1, 2, 3, 4, 5, 126, 0] {
                w.int(v);
            }
            w.str(Some("db \"x\""));
            w.str(Some("15.1"));
            w.str(Some("15.1"));
            w.int(entries.len() as i64);
            for &(id, desc, flag) in entries {
                w.int(id);
                w.int(i64::from(flag != OFFSET_NO_DATA));
                w.str(Some("1259"));
                w.str(None);
                w.str(Some("täg \"q\" . x"));
                w.str(Some(desc));
                w.int(2);
                w.str(Some(&"CREATE TABLE x (a int);\n".repeat(400)));
                w.str(Some(""));
                w.str(Some("COPY x (a) FROM stdin;\n"));
                w.str(Some("sp ace"));
                w.str(None);
                if minor >= 14 {
                    w.str(Some("heap"));
                }
                if minor >= 16 {
                    w.int(i64::from(b'r'));
                }
                w.str(Some("owner"));
                w.str(Some("false"));
                for dep in 0..(id % 3) {
                    w.str(Some(&dep.to_string()));
                }
                w.str(None);
                if directory {
                    let name = if flag == OFFSET_NO_DATA {
                        String::new()
                    } else {
                        data_file(id)
                    };
                    w.str(Some(&name));
                } else {
                    w.out.push(flag);
                    let offset: u64 = if flag == 2 { 0x0102_0304_0506 } else { 0 };
                    w.out.extend_from_slice(&offset.to_le_bytes());
                }
            }
            w.out
        }

        fn int(&mut self, v: i64) {
            self.out.push(u8::from(v < 0));
            self.out
                .extend_from_slice(&u32::try_from(v.abs()).unwrap().to_le_bytes());
        }

        fn str(&mut self, s: Option<&str>) {
            match s {
                None => self.int(-1),
                Some(s) => {
                    self.int(s.len() as i64);
                    self.out.extend_from_slice(s.as_bytes());
                }
            }
        }
    }

    const ENTRIES: [Entry; 5] = [
        (10, "TABLE", OFFSET_NO_DATA),
        (3345, "TABLE DATA", 1),
        (3346, "TABLE DATA", 2),
        (20, "INDEX", OFFSET_NO_DATA),
        (3347, "TABLE DATA", 1),
    ];

    #[test]
    fn every_version_is_rewritten_byte_for_byte_as_pg_dump_writes_a_directory_toc() {
        for minor in 12..=16 {
            let custom = Writer::archive(minor, false, 0, &ENTRIES);
            let directory = Writer::archive(minor, true, 0, &ENTRIES);
            let mut out = Vec::new();
            let layout = rewrite_toc(custom.as_slice(), &mut out).unwrap();
            assert_eq!(out, directory, "1.{minor}");
            assert_eq!(layout.data, vec![3345, 3346, 3347]);
            assert_eq!(layout.toc_end, custom.len() as u64);
            assert_eq!(layout.int_size, 4);
        }
    }

    fn refused(archive: &[u8]) -> String {
        match rewrite_toc(archive, Vec::new()) {
            Err(Refusal::Unserved(why)) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn compressed_archives_large_objects_and_other_versions_are_not_served() {
        assert!(refused(&Writer::archive(14, false, 6, &ENTRIES)).contains("compressed"));
        assert!(refused(&Writer::archive(15, false, 1, &ENTRIES)).contains("compressed"));
        let blobs = [(10, "TABLE", OFFSET_NO_DATA), (11, "BLOBS", 1)];
        assert!(refused(&Writer::archive(16, false, 0, &blobs)).contains("large objects"));
        for minor in [11, 17] {
            let why = refused(&Writer::archive(minor, false, 0, &ENTRIES));
            assert!(
                why.contains(&format!("1.{minor} is not one served")),
                "{why}"
            );
        }
        let why = refused(&Writer::archive(15, true, 0, &ENTRIES));
        assert!(why.contains("not the custom format"), "{why}");
        assert!(refused(b"PGDMQ\x01\x0e\x00\x04\x08\x01").contains("magic"));
    }

    #[test]
    fn an_archive_cut_anywhere_in_its_toc_is_an_error_not_a_panic() {
        let custom = Writer::archive(16, false, 0, &ENTRIES);
        for end in 0..custom.len() {
            match rewrite_toc(&custom[..end], Vec::new()) {
                Err(Refusal::Io(e)) => {
                    assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{end}");
                    assert!(e.to_string().contains("table of contents"), "{e}");
                }
                other => panic!("cut at {end}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_block_framing_is_an_error() {
        let mut b = Blocks::at_first_block(4, 100);
        let err = b.feed(&[7], &mut |_| true).unwrap_err();
        assert!(
            err.contains("unknown data block type 7 at offset 100"),
            "{err}"
        );
        let mut b = Blocks::at_first_block(4, 0);
        let err = b.feed(&[BLK_BLOBS], &mut |_| true).unwrap_err();
        assert!(err.contains("large-object"), "{err}");
        let mut b = Blocks::at_first_block(4, 0);
        let block = [BLK_DATA, 0, 9, 0, 0, 0, 1, 5, 0, 0, 0];
        let err = b.feed(&block, &mut |_| true).unwrap_err();
        assert!(
            err.contains("negative data chunk length (-5) in the block of entry 9"),
            "{err}"
        );
        assert!(b.feed(&[0], &mut |_| true).is_err());
    }

    #[test]
    fn a_stop_leaves_the_rest_unread() {
        // Block 9: chunks "ab" and "c"; block 10: empty.
        let mut archive = vec![BLK_DATA, 0, 9, 0, 0, 0];
        archive.extend_from_slice(&[0, 2, 0, 0, 0, b'a', b'b', 0, 1, 0, 0, 0, b'c']);
        archive.extend_from_slice(&[0, 0, 0, 0, 0]);
        archive.extend_from_slice(&[BLK_DATA, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut b = Blocks::at_first_block(4, 50);
        let mut seen = Vec::new();
        let used = b
            .feed(&archive, &mut |e| {
                let stop = e == Event::End;
                seen.push(format!("{e:?}"));
                !stop
            })
            .unwrap();
        assert_eq!(used, 24);
        assert_eq!(
            seen,
            [
                "Start { id: 9, chunks_at: 56 }",
                "Data([97, 98])",
                "Data([99])",
                "End"
            ]
        );
        assert!(b.between_blocks());
        let mut seen = Vec::new();
        b.feed(&archive[used..], &mut |e| {
            seen.push(format!("{e:?}"));
            true
        })
        .unwrap();
        assert_eq!(seen, ["Start { id: 10, chunks_at: 80 }", "End"]);
    }
}
