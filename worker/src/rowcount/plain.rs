//! Counts the rows of a plain-format script (pg_dump, or pg_dumpall with one
//! `\connect` per database): the lines of each `COPY … FROM stdin;` block
//! that pg_dump's "Data for Name: …; Type: TABLE DATA" header announces.
//! Keeps only the start of a line; long lines stream past.
use pgsnapman_store::TableRows;

use super::copy::CopyRows;

/// Bytes of a line kept to recognise it.
const PREFIX: usize = 24;
/// Longest statement line kept whole (a COPY with 1600 quoted 63-byte
/// column names is about 210 KB).
const MAX_LINE: usize = 1024 * 1024;

/// Lines kept whole (the rest are recognised by their prefix only).
const KEPT: [&[u8]; 3] = [b"COPY ", b"\\connect ", b"-- Data for Name: "];

enum Mode {
    Line,
    Copy(CopyRows, TableRows),
}

pub struct PlainRows {
    cluster: bool,
    database: String,
    line: Vec<u8>,
    /// The line is longer than what `line` holds.
    cut: bool,
    mode: Mode,
    /// The last header announced table data.
    data_header: bool,
    counts: Vec<TableRows>,
    error: Option<String>,
}

impl PlainRows {
    /// `cluster`: a pg_dumpall script (tables are named with their database).
    pub fn new(cluster: bool) -> Self {
        PlainRows {
            cluster,
            database: String::new(),
            line: Vec::new(),
            cut: false,
            mode: Mode::Line,
            data_header: false,
            counts: Vec::new(),
            error: None,
        }
    }

    pub fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() && self.error.is_none() {
            if let Mode::Copy(rows, _) = &mut self.mode {
                let used = rows.feed(input);
                input = &input[used..];
                if rows.ended() {
                    let Mode::Copy(rows, mut table) = std::mem::replace(&mut self.mode, Mode::Line)
                    else {
                        unreachable!("matched above");
                    };
                    table.rows = rows.rows();
                    self.counts.push(table);
                }
                continue;
            }
            let (part, newline) = match memchr::memchr(b'\n', input) {
                Some(i) => (&input[..i], true),
                None => (input, false),
            };
            input = &input[part.len() + usize::from(newline)..];
            // The first PREFIX bytes, then the rest only for a kept line
            // (PREFIX is longer than every kept prefix).
            let first = PREFIX.saturating_sub(self.line.len()).min(part.len());
            self.line.extend_from_slice(&part[..first]);
            let rest = &part[first..];
            if !rest.is_empty() {
                let room = if KEPT.iter().any(|k| self.line.starts_with(k)) {
                    MAX_LINE
                } else {
                    PREFIX
                };
                let take = room.saturating_sub(self.line.len()).min(rest.len());
                self.line.extend_from_slice(&rest[..take]);
                self.cut |= take < rest.len();
            }
            if newline {
                self.end_line();
                self.line.clear();
                self.cut = false;
            }
        }
    }

    fn end_line(&mut self) {
        let line = &self.line;
        let whole = !self.cut;
        if line.starts_with(b"-- Data for Name: ") {
            self.data_header = whole && contains(line, b"; Type: TABLE DATA; ");
        } else if line.starts_with(b"-- Name: ") {
            self.data_header = false;
        } else if line.starts_with(b"\\connect ") && self.cluster {
            match connect_database(&String::from_utf8_lossy(line)) {
                Some(db) => self.database = db,
                None => self.error = Some(format!("cannot read {:?}", cut_text(line))),
            }
        } else if line.starts_with(b"COPY ") && self.data_header {
            self.data_header = false;
            let text = String::from_utf8_lossy(line);
            match copy_table(&text) {
                Some((schema, table)) if whole => {
                    let t = TableRows {
                        database: if self.cluster {
                            self.database.clone()
                        } else {
                            String::new()
                        },
                        schema,
                        table,
                        rows: 0,
                    };
                    self.mode = Mode::Copy(CopyRows::new(), t);
                }
                _ => self.error = Some(format!("cannot read {:?}", cut_text(line))),
            }
        } else if line.starts_with(b"INSERT INTO ") && self.data_header {
            self.error = Some(
                "the table data is INSERT statements (--inserts): rows are counted in COPY data only"
                    .to_string(),
            );
        }
    }

    pub fn finish(self) -> Result<Vec<TableRows>, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if let Mode::Copy(_, t) = self.mode {
            return Err(format!(
                "the script ends inside the data of {}.{}",
                t.schema, t.table
            ));
        }
        Ok(self.counts)
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The first 80 characters of a line, for an error.
fn cut_text(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.into_owned(),
    }
}

/// Reads one SQL identifier as pg_dump writes it (quoted with `""` for a
/// quote, or bare); returns it and the rest.
fn identifier(s: &str) -> Option<(String, &str)> {
    if let Some(rest) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if rest[i + 1..].starts_with('"') {
                    out.push('"');
                    chars.next();
                } else {
                    return Some((out, &rest[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        let end = s.find(['.', ' ', '(']).unwrap_or(s.len());
        (end > 0).then(|| (s[..end].to_string(), &s[end..]))
    }
}

/// `COPY schema.table (a, b) FROM stdin;` → (schema, table).
fn copy_table(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("COPY ")?;
    if !line.ends_with(" FROM stdin;") {
        return None;
    }
    let (schema, rest) = identifier(rest)?;
    let (table, rest) = identifier(rest.strip_prefix('.')?)?;
    rest.starts_with(' ').then_some((schema, table))
}

/// The database of `\connect name`, `\connect "na""me"` or
/// `\connect -reuse-previous=on "dbname='a b'"` (pg_dumpall's forms).
fn connect_database(line: &str) -> Option<String> {
    let arg = line.strip_prefix("\\connect ")?.trim_end();
    let (arg, conninfo) = match arg.strip_prefix("-reuse-previous=on ") {
        Some(a) => (a, true),
        None => (arg, false),
    };
    let word = if arg.starts_with('"') {
        let (w, rest) = identifier(arg)?;
        if !rest.is_empty() {
            return None;
        }
        w
    } else {
        arg.to_string()
    };
    if !conninfo {
        return Some(word);
    }
    // dbname='…' with \' and \\ escaped (appendConnStrVal).
    let value = word.strip_prefix("dbname='")?.strip_suffix('\'')?;
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_pg_dump_writes_them() {
        assert_eq!(
            copy_table("COPY public.t (a, b) FROM stdin;"),
            Some(("public".into(), "t".into()))
        );
        assert_eq!(
            copy_table("COPY \"s.p ace\".\"we.ird \"\"q\"\"\" (x) FROM stdin;"),
            Some(("s.p ace".into(), "we.ird \"q\"".into()))
        );
        assert_eq!(
            copy_table("COPY public.z  FROM stdin;"),
            Some(("public".into(), "z".into()))
        );
        assert_eq!(copy_table("COPY t FROM stdin;"), None);
        assert_eq!(connect_database("\\connect plain1"), Some("plain1".into()));
        assert_eq!(
            connect_database("\\connect -reuse-previous=on \"dbname='a b\\'c\\\\'\""),
            Some("a b'c\\".into())
        );
        assert_eq!(
            connect_database("\\connect \"Wei\"\"rd\""),
            Some("Wei\"rd".into())
        );
    }

    const SCRIPT: &str = "--\n-- Name: f; Type: FUNCTION\n--\n\nCREATE FUNCTION f() AS $$\nCOPY public.x (a) FROM stdin;\n$$;\n\
        --\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: o\n--\n\n\
        COPY public.t (a, b) FROM stdin;\n1\tx\\ny\n\n\\\\.\n\\.\n\n\n\
        --\n-- Data for Name: e; Type: TABLE DATA; Schema: s; Owner: o\n--\n\n\
        COPY s.\"e f\"  FROM stdin;\n\\.\n\n\
        \\connect -reuse-previous=on \"dbname='d 2'\"\n\
        --\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: o\n--\n\n\
        COPY public.t (a) FROM stdin;\n7\n\\.\n-- PostgreSQL database dump complete\n";

    fn rows(cluster: bool, pieces: &[&[u8]]) -> Vec<TableRows> {
        let mut p = PlainRows::new(cluster);
        for piece in pieces {
            p.feed(piece);
        }
        p.finish().unwrap()
    }

    #[test]
    fn counts_copy_blocks_after_data_headers_only() {
        let got = rows(true, &[SCRIPT.as_bytes()]);
        let want = |db: &str, s: &str, t: &str, rows: u64| TableRows {
            database: db.into(),
            schema: s.into(),
            table: t.into(),
            rows,
        };
        assert_eq!(
            got,
            vec![
                want("", "public", "t", 3),
                want("", "s", "e f", 0),
                want("d 2", "public", "t", 1),
            ]
        );
        let single = rows(false, &[SCRIPT.as_bytes()]);
        assert_eq!(single[2].database, "");
    }

    #[test]
    fn split_anywhere() {
        let data = SCRIPT.as_bytes();
        let whole = rows(true, &[data]);
        for i in 0..=data.len() {
            for j in (i..=data.len()).step_by(7) {
                assert_eq!(
                    rows(true, &[&data[..i], &data[i..j], &data[j..]]),
                    whole,
                    "split at {i}, {j}"
                );
            }
        }
    }

    #[test]
    fn inserts_and_truncation_are_errors() {
        let mut p = PlainRows::new(false);
        p.feed(b"-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: o\n--\n\nINSERT INTO public.t VALUES (1);\n");
        assert!(p.finish().unwrap_err().contains("--inserts"));
        let mut p = PlainRows::new(false);
        p.feed(b"-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: o\nCOPY public.t (a) FROM stdin;\n1\n");
        assert!(p.finish().unwrap_err().contains("ends inside"));
    }
}
