//! Row counts at dump time: reads a dump's bytes as they stream into the
//! store and counts the rows of every table's data, with no query on the
//! source (docs/verification.md). Never fails a dump: a dump it cannot read
//! gets "counts unavailable" and the reason.
mod archive;
mod copy;
mod plain;

use std::collections::HashMap;
use std::io::Read;

use pgsnapman_store::TableRows;

use self::archive::{ArchiveRows, Container};
pub(crate) use self::archive::{MAX_BLOCK_OFFSETS, decode_int};
use self::copy::CopyRows;
use self::plain::PlainRows;

/// What the counter reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// pg_dump --format=custom, one stream.
    Custom,
    /// pg_dump --format=directory: toc.dat and one NNNN.dat per table.
    Directory,
    /// pg_dump --format=plain.
    Plain,
    /// pg_dumpall: a plain script, one `\connect` per database.
    Cluster,
    /// A format whose rows are not counted; the reason.
    Unsupported(&'static str),
}

/// The counts of a dump, or why there are none.
pub type Counted = Result<Vec<TableRows>, String>;

enum File {
    None,
    Archive(Box<ArchiveRows>),
    Plain(Box<PlainRows>),
    Data(String, CopyRows),
    Toc(Box<ArchiveRows>),
}

/// Counts the rows of one dump, fed file by file.
pub struct RowCounter {
    kind: Kind,
    file: File,
    /// Directory format: rows per data file.
    data_files: HashMap<String, u64>,
    toc: Option<HashMap<i64, archive::TableData>>,
    result: Option<Counted>,
    error: Option<String>,
    /// Custom format: the length of the archive's header and table of
    /// contents and where its data blocks start, once its file has ended.
    archive: Option<ArchiveMap>,
}

/// What the counter learnt of a custom archive it read whole without error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveMap {
    /// The length of the header and table of contents.
    pub toc_bytes: u64,
    /// Where each data block's header starts, by dump id, in archive order;
    /// `None` past `MAX_BLOCK_OFFSETS` blocks.
    pub block_offsets: Option<Vec<(i64, u64)>>,
}

impl RowCounter {
    pub fn new(kind: Kind) -> Self {
        RowCounter {
            kind,
            file: File::None,
            data_files: HashMap::new(),
            toc: None,
            result: None,
            archive: None,
            error: match kind {
                Kind::Unsupported(why) => Some(why.to_string()),
                _ => None,
            },
        }
    }

    /// Starts the next file of the dump (its bytes come through `feed`).
    pub fn begin_file(&mut self, name: &str) {
        self.end_file();
        self.file = match self.kind {
            Kind::Custom => File::Archive(Box::new(ArchiveRows::new(Container::Custom))),
            Kind::Plain => File::Plain(Box::new(PlainRows::new(false))),
            Kind::Cluster => File::Plain(Box::new(PlainRows::new(true))),
            Kind::Directory if name == "toc.dat" => {
                File::Toc(Box::new(ArchiveRows::new(Container::DirectoryToc)))
            }
            Kind::Directory if is_data_file(name) => File::Data(name.to_string(), CopyRows::new()),
            Kind::Directory | Kind::Unsupported(_) => File::None,
        };
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        match &mut self.file {
            File::None => {}
            File::Archive(a) | File::Toc(a) => a.feed(bytes),
            File::Plain(p) => p.feed(bytes),
            File::Data(_, c) => {
                c.feed(bytes);
            }
        }
    }

    /// Ends the current file.
    pub fn end_file(&mut self) {
        let counted: Option<Counted> = match std::mem::replace(&mut self.file, File::None) {
            File::None => None,
            File::Archive(mut a) => {
                self.archive = a.toc_end().map(|toc_bytes| ArchiveMap {
                    toc_bytes,
                    block_offsets: a.take_block_offsets(),
                });
                Some(
                    a.finish()
                        .and_then(|(tables, rows)| custom_rows(tables, &rows)),
                )
            }
            File::Plain(p) => Some(p.finish()),
            File::Data(name, c) => {
                self.data_files.insert(name, c.rows());
                None
            }
            File::Toc(a) => {
                match a.finish() {
                    Ok((tables, _)) => self.toc = Some(tables),
                    Err(e) => self.fail(e),
                }
                None
            }
        };
        match counted {
            Some(Ok(v)) => self.result = Some(Ok(v)),
            Some(Err(e)) => self.fail(e),
            None => {}
        }
    }

    fn fail(&mut self, e: String) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// The rows of every table, sorted by database, schema and table; and,
    /// when the dump is a custom archive read whole without error, the
    /// length of its header and table of contents and where its data
    /// blocks start.
    pub fn finish_with_toc(mut self) -> (Counted, Option<ArchiveMap>) {
        self.end_file();
        let map = self.archive.take();
        let counted = self.finish();
        let map = if counted.is_ok() { map } else { None };
        (counted, map)
    }

    /// The rows of every table, sorted by database, schema and table.
    pub fn finish(mut self) -> Counted {
        self.end_file();
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut rows = match self.kind {
            Kind::Directory => {
                let Some(toc) = self.toc else {
                    return Err("the dump has no toc.dat".to_string());
                };
                directory_rows(toc, &self.data_files)?
            }
            _ => match self.result {
                Some(r) => r?,
                None => return Err("the dump has no data stream".to_string()),
            },
        };
        rows.sort_by(|a, b| {
            (&a.database, &a.schema, &a.table).cmp(&(&b.database, &b.schema, &b.table))
        });
        Ok(rows)
    }
}

/// `NNNN.dat`: a table's data in a directory dump.
fn is_data_file(name: &str) -> bool {
    name.strip_suffix(".dat")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn table_rows(t: archive::TableData, rows: u64) -> Result<TableRows, String> {
    if !t.copy {
        return Err(format!(
            "the data of {}.{} is not COPY text (--inserts?): rows are counted in COPY data only",
            t.schema, t.table
        ));
    }
    Ok(TableRows {
        database: String::new(),
        schema: t.schema,
        table: t.table,
        rows,
    })
}

fn custom_rows(tables: HashMap<i64, archive::TableData>, rows: &HashMap<i64, u64>) -> Counted {
    tables
        .into_iter()
        .map(|(id, t)| match rows.get(&id) {
            Some(n) => table_rows(t, *n),
            None => Err(format!(
                "the archive has no data block for {}.{} (entry {id})",
                t.schema, t.table
            )),
        })
        .collect()
}

fn directory_rows(
    tables: HashMap<i64, archive::TableData>,
    files: &HashMap<String, u64>,
) -> Counted {
    tables
        .into_values()
        .map(|t| match files.get(&t.file) {
            Some(n) => table_rows(t.clone(), *n),
            None => Err(format!(
                "the dump has no data file {:?} for {}.{}",
                t.file, t.schema, t.table
            )),
        })
        .collect()
}

/// The counts a manifest keeps, as `DumpFinished.table_rows` carries them
/// (empty when none were counted).
pub fn of_manifest(
    meta: &pgsnapman_store::ManifestMeta,
) -> Vec<pgsnapman_proto::v1::TableRowCount> {
    meta.table_rows
        .iter()
        .flatten()
        .cloned()
        .map(to_proto)
        .collect()
}

/// One table's count as `DumpFinished.table_rows` carries it.
pub fn to_proto(t: TableRows) -> pgsnapman_proto::v1::TableRowCount {
    pgsnapman_proto::v1::TableRowCount {
        schema: t.schema,
        table: t.table,
        rows: t.rows,
        database: t.database,
    }
}

/// A reader that shows every byte it reads to a [`RowCounter`].
pub struct Tee<'a, R> {
    inner: R,
    counter: &'a mut RowCounter,
}

impl<'a, R: Read> Tee<'a, R> {
    /// Reads `name`, a file of the dump, through `counter`.
    pub fn new(inner: R, name: &str, counter: &'a mut RowCounter) -> Self {
        counter.begin_file(name);
        Tee { inner, counter }
    }
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.feed(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
