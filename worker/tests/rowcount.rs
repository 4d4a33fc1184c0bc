//! Row counts of real archives: pg_dump (custom -Z0, directory -Z0, plain)
//! and pg_dumpall of a database with hard-to-count tables, read through the
//! worker's counter in pieces of odd sizes, equal `count(*)` on the source.
use std::io::Read;
use std::process::Command;

use pgsnapman_tests::{PgCluster, rowdata};
use pgsnapman_worker::rowcount::{Kind, RowCounter, Tee};

const MAJOR: u32 = 15;

fn pg_dump(pg: &PgCluster, args: &[&str]) -> Vec<u8> {
    let bin = pgsnapman_tests::cluster::server_bindir(MAJOR).expect("PostgreSQL 15 binaries");
    let program = if args.first() == Some(&"--all") {
        "pg_dumpall"
    } else {
        "pg_dump"
    };
    let mut cmd = Command::new(bin.join(program));
    cmd.args(["-h"])
        .arg(pg.socket_dir())
        .args(["-p", &pg.port.to_string(), "-U", "postgres"]);
    cmd.args(args.iter().filter(|a| **a != "--all"));
    let out = cmd.output().expect("run pg_dump");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Reads `data` through a counter in reads of 1, 2, … 97 bytes.
struct Jagged<'a> {
    data: &'a [u8],
    n: usize,
}

impl Read for Jagged<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.n = self.n % 97 + 1;
        let take = self.n.min(buf.len()).min(self.data.len());
        buf[..take].copy_from_slice(&self.data[..take]);
        self.data = &self.data[take..];
        Ok(take)
    }
}

fn count(kind: Kind, files: &[(&str, &[u8])]) -> Vec<(String, String, u64)> {
    let mut counter = RowCounter::new(kind);
    for (name, data) in files {
        let mut sink = Vec::new();
        Tee::new(Jagged { data, n: 0 }, name, &mut counter)
            .read_to_end(&mut sink)
            .expect("read the dump");
    }
    let rows = counter.finish().expect("counted");
    rows.into_iter()
        .map(|t| (t.schema, t.table, t.rows))
        .collect()
}

#[test]
fn every_format_counts_what_count_star_says() {
    let pg = PgCluster::start(MAJOR).unwrap();
    pg.create_database("rows").unwrap();
    rowdata::create(&pg, "rows").unwrap();
    let want = rowdata::counts(&pg, "rows").unwrap();
    assert!(want.len() >= 11, "{want:?}");

    let custom = pg_dump(&pg, &["-Fc", "-Z0", "-d", "rows"]);
    assert_eq!(count(Kind::Custom, &[("dump", &custom)]), want, "custom");

    let plain = pg_dump(&pg, &["-Fp", "-d", "rows"]);
    assert_eq!(count(Kind::Plain, &[("dump.sql", &plain)]), want, "plain");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d");
    pg_dump(
        &pg,
        &["-Fd", "-Z0", "-d", "rows", "-f", out.to_str().unwrap()],
    );
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    // The store sees toc.dat last (pg_dump writes it at the end).
    files.sort_by_key(|(n, _)| n == "toc.dat");
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    assert_eq!(count(Kind::Directory, &files), want, "directory");

    let all = pg_dump(&pg, &["--all"]);
    let mut counter = RowCounter::new(Kind::Cluster);
    counter.begin_file("dumpall.sql");
    counter.feed(&all);
    let rows: Vec<(String, String, u64)> = counter
        .finish()
        .unwrap()
        .into_iter()
        .filter(|t| t.database == "rows")
        .map(|t| (t.schema, t.table, t.rows))
        .collect();
    assert_eq!(rows, want, "pg_dumpall");
}
