//! Archives written here byte for byte as pg_dump 15 to 18 write them
//! (versions 1.14 to 1.16), read whole and split at every point.
use super::*;

struct Writer {
    minor: u8,
    out: Vec<u8>,
}

impl Writer {
    fn new(minor: u8, format: u8) -> Self {
        let mut w = Writer {
            minor,
            out: Vec::new(),
        };
        w.out.extend_from_slice(b"PGDMP");
        w.out.extend_from_slice(&[1, minor, 0, 4, 8, format]);
        if minor >= 15 {
            w.out.push(0); // compression algorithm: none
        } else {
            w.int(0); // compression level
        }
        for v in [1, 2, 3, 4, 5, 126, 0] {
            w.int(v);
        }
        w.str(Some("db"));
        w.str(Some("15.1"));
        w.str(Some("15.1"));
        w
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

    fn toc(&mut self, entries: &[(i64, &str, &str, &str, bool)], directory: bool) {
        self.int(entries.len() as i64);
        for (id, desc, schema, tag, copy) in entries {
            self.int(*id);
            self.int(1);
            self.str(Some("1259"));
            self.str(Some("16384"));
            self.str(Some(tag));
            self.str(Some(desc));
            self.int(2);
            self.str(Some(&"CREATE TABLE x (a int);\n".repeat(50)));
            self.str(Some(""));
            let stmt = format!("COPY {schema}.{tag} (a) FROM stdin;\n");
            self.str(Some(if *copy { &stmt } else { "" }));
            self.str(if schema.is_empty() {
                None
            } else {
                Some(schema)
            });
            self.str(Some(""));
            if self.minor >= 14 {
                self.str(Some("heap"));
            }
            if self.minor >= 16 {
                self.int(i64::from(b'r'));
            }
            self.str(Some("postgres"));
            self.str(Some("false"));
            self.str(Some("7"));
            self.str(Some("8"));
            self.str(None);
            if directory {
                self.str(Some(&format!("{id}.dat")));
            } else {
                self.out.push(1); // K_OFFSET_POS_NOT_SET
                self.out.extend_from_slice(&[0; 8]);
            }
        }
    }

    fn data(&mut self, id: i64, chunks: &[&[u8]]) {
        self.out.push(1);
        self.int(id);
        for c in chunks {
            self.int(c.len() as i64);
            self.out.extend_from_slice(c);
        }
        self.int(0);
    }

    fn blobs(&mut self, id: i64) {
        self.out.push(3);
        self.int(id);
        self.int(16500);
        self.int(5);
        self.out.extend_from_slice(b"\n\n\\.\n");
        self.int(0);
        self.int(0);
    }
}

const ENTRIES: [(i64, &str, &str, &str, bool); 5] = [
    (3, "TABLE", "public", "t", false),
    (10, "TABLE DATA", "public", "t", true),
    (11, "TABLE DATA", "s p", "we.ird \"q\" ü", true),
    (12, "TABLE DATA", "public", "empty", true),
    (13, "BLOBS", "", "BLOBS", false),
];

fn custom_archive(minor: u8) -> Vec<u8> {
    let mut w = Writer::new(minor, 1);
    w.toc(&ENTRIES, false);
    // A row split across chunks, and the end marker of pg_dump < 18.
    w.data(10, &[b"1\tx\\ny\n2\t", b"z\n", b"\n\\.\n\n\n"]);
    w.blobs(13);
    w.data(11, &[b"\\\\.\n", b"a\tb\n"]);
    w.data(12, &[]);
    w.out
}

fn expected() -> Vec<TableRows> {
    let t = |schema: &str, table: &str, rows: u64| TableRows {
        database: String::new(),
        schema: schema.into(),
        table: table.into(),
        rows,
    };
    vec![
        t("public", "empty", 0),
        t("public", "t", 3),
        t("s p", "we.ird \"q\" ü", 2),
    ]
}

fn count(kind: Kind, files: &[(&str, &[&[u8]])]) -> Counted {
    let mut c = RowCounter::new(kind);
    for (name, pieces) in files {
        c.begin_file(name);
        for p in *pieces {
            c.feed(p);
        }
    }
    c.finish()
}

#[test]
fn custom_archives_of_every_version() {
    for minor in [12, 14, 15, 16] {
        let a = custom_archive(minor);
        assert_eq!(
            count(Kind::Custom, &[("dump", &[&a])]),
            Ok(expected()),
            "1.{minor}"
        );
    }
}

#[test]
fn the_table_of_contents_ends_where_the_first_data_block_starts() {
    for minor in [12, 14, 15, 16] {
        let mut w = Writer::new(minor, 1);
        w.toc(&ENTRIES, false);
        let toc_len = w.out.len() as u64;
        let a = custom_archive(minor);
        for split in [1, toc_len as usize, a.len() - 1] {
            let mut c = RowCounter::new(Kind::Custom);
            c.begin_file("dump");
            c.feed(&a[..split]);
            c.feed(&a[split..]);
            let (rows, map) = c.finish_with_toc();
            assert_eq!(rows, Ok(expected()), "1.{minor}");
            let map = map.unwrap();
            assert_eq!(map.toc_bytes, toc_len, "1.{minor} split at {split}");
            // Each data block's header: the first right after the TOC, each
            // a data block type byte (1), in archive order.
            let blocks = map.block_offsets.unwrap();
            assert!(!blocks.is_empty());
            assert_eq!(blocks[0].1, toc_len, "1.{minor}");
            assert!(blocks.windows(2).all(|w| w[0].1 < w[1].1), "{blocks:?}");
            for (_, at) in &blocks {
                assert_eq!(a[*at as usize], 1, "1.{minor} at {at}");
            }
        }
        // Cut short: no length, since the archive was not read whole.
        let mut c = RowCounter::new(Kind::Custom);
        c.begin_file("dump");
        c.feed(&a[..a.len() - 3]);
        assert_eq!(c.finish_with_toc().1, None, "1.{minor}");
    }
}

#[test]
fn custom_archive_split_anywhere() {
    for minor in [14, 16] {
        let a = custom_archive(minor);
        for i in 0..=a.len() {
            let got = count(Kind::Custom, &[("dump", &[&a[..i], &a[i..]])]);
            assert_eq!(got, Ok(expected()), "1.{minor} split at {i}");
        }
        for step in [1, 3, 7] {
            let pieces: Vec<&[u8]> = a.chunks(step).collect();
            assert_eq!(count(Kind::Custom, &[("dump", &pieces)]), Ok(expected()));
        }
    }
}

#[test]
fn directory_dumps_map_files_through_the_toc() {
    for minor in [14, 15, 16] {
        let mut w = Writer::new(minor, 3);
        w.toc(&ENTRIES, true);
        let toc = w.out;
        let files: [(&str, &[&[u8]]); 5] = [
            ("10.dat", &[b"1\tx\\ny\n2\t", b"z\n\n\\.\n\n\n"]),
            ("11.dat", &[b"\\\\.\na\tb\n"]),
            ("12.dat", &[b"\\.\n\n\n"]),
            ("blobs.toc", &[b"16500 blob_16500.dat\n"]),
            ("toc.dat", &[&toc[..40], &toc[40..]]),
        ];
        assert_eq!(count(Kind::Directory, &files), Ok(expected()), "1.{minor}");
        // A table's data file missing: no counts, and why.
        let err = count(Kind::Directory, &[files[0], files[1], files[4]]).unwrap_err();
        assert!(err.contains("\"12.dat\""), "{err}");
    }
}

#[test]
fn unreadable_archives_say_why() {
    let mut a = custom_archive(16);
    a[6] = 17; // archive version 1.17
    let err = count(Kind::Custom, &[("dump", &[&a])]).unwrap_err();
    assert!(err.contains("version 1.17.0"), "{err}");
    let a = custom_archive(16);
    let err = count(Kind::Custom, &[("dump", &[&a[..a.len() - 3]])]).unwrap_err();
    assert!(err.contains("ends before"), "{err}");
    let mut w = Writer::new(16, 1);
    w.out[11] = 1; // gzip
    let err = count(Kind::Custom, &[("dump", &[&w.out])]).unwrap_err();
    assert!(err.contains("compressed"), "{err}");
    let mut w = Writer::new(16, 1);
    w.toc(&[(10, "TABLE DATA", "public", "t", false)], false);
    w.data(10, &[b"INSERT INTO public.t VALUES (1);\n"]);
    let err = count(Kind::Custom, &[("dump", &[&w.out])]).unwrap_err();
    assert!(err.contains("--inserts"), "{err}");
    let err = count(
        Kind::Custom,
        &[("dump", &[b"PGDMX\x01\x0e\x00\x04\x08\x01"])],
    )
    .unwrap_err();
    assert!(err.contains("magic"), "{err}");
    assert!(count(Kind::Unsupported("tar"), &[]).is_err());
}

#[test]
fn data_file_names() {
    assert!(is_data_file("3345.dat"));
    assert!(!is_data_file(".dat"));
    assert!(!is_data_file("blob_3.dat"));
    assert!(!is_data_file("3345.dat.gz"));
}

/// 10,000 tables with 63-byte names: every one counted, and the list fits
/// a DumpFinished event with room to spare.
#[test]
fn ten_thousand_tables() {
    let names: Vec<String> = (0..10_000).map(|i| format!("{i:0>63}")).collect();
    let entries: Vec<(i64, &str, &str, &str, bool)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i as i64 + 10, "TABLE DATA", "public", n.as_str(), true))
        .collect();
    let mut w = Writer::new(16, 1);
    w.toc(&entries, false);
    for (i, _) in names.iter().enumerate() {
        // pg_dump never writes a zero-length chunk (_CustomWriteFunc).
        let data = b"1\n".repeat(i % 7);
        let chunks: &[&[u8]] = if data.is_empty() { &[] } else { &[&data] };
        w.data(i as i64 + 10, chunks);
    }
    let rows = count(Kind::Custom, &[("dump", &[&w.out])]).unwrap();
    assert_eq!(rows.len(), 10_000);
    // Block offsets are recorded for at most MAX_BLOCK_OFFSETS blocks: none
    // here, and all of the first MAX_BLOCK_OFFSETS of them alone.
    let offsets = |archive: &[u8]| {
        let mut c = RowCounter::new(Kind::Custom);
        c.begin_file("dump");
        c.feed(archive);
        c.finish_with_toc().1.unwrap().block_offsets
    };
    assert_eq!(offsets(&w.out), None);
    let mut few = Writer::new(16, 1);
    few.toc(&entries[..crate::rowcount::MAX_BLOCK_OFFSETS], false);
    for (i, _) in entries[..crate::rowcount::MAX_BLOCK_OFFSETS]
        .iter()
        .enumerate()
    {
        few.data(i as i64 + 10, &[b"1\n"]);
    }
    assert_eq!(
        offsets(&few.out).map(|o| o.len()),
        Some(crate::rowcount::MAX_BLOCK_OFFSETS)
    );
    assert!(
        rows.iter()
            .all(|t| t.rows == t.table.parse::<u64>().unwrap() % 7)
    );
    let event = pgsnapman_proto::v1::DumpFinished {
        table_rows: rows.into_iter().map(to_proto).collect(),
        ..Default::default()
    };
    use prost::Message;
    assert!(event.encoded_len() < crate::outbox::MAX_EVENT_BYTES / 4);
}
