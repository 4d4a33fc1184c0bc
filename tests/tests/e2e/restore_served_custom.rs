//! Custom-format dumps restored with `--jobs` without spooling (issue 15
//! item 3): the worker serves the archive as a directory archive (toc.dat
//! rewritten from its TOC, each data block a FIFO fed from its offset in
//! the store). Odd identifiers and an empty table come back intact; large
//! objects fall back to spooling; a store error fails the run before the
//! rename and leaves no database.
use pgsnapman_tests::{PgCluster, Pgsnap};

use crate::common::*;

/// Tables of the odd database, as SQL identifiers (the 63-byte name is the
/// longest PostgreSQL keeps).
const ODD_TABLES: [&str; 4] = [
    "\"sp ace.ü\".\"we\"\"ird 'x'\"",
    "public.\"t_abcdefghijklmnopqrstuvwxyz_abcdefghijklmnopqrstuvwxyz_0123456\"",
    "public.\"ünï cödé\"",
    "public.empty_one",
];

/// A digest of every large object of the `docs` table.
const BLOBS: &str = "SELECT string_agg(id || ':' || md5(lo_get(body)), ',' ORDER BY id) FROM docs";

/// Row count and a digest of every row of `table` in `db`.
fn fingerprint(cluster: &PgCluster, db: &str, table: &str) -> String {
    cluster
        .query(
            db,
            &format!(
                "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM {table} t"
            ),
        )
        .unwrap()
}

/// A job dumping `db` in the custom format; the dump's id.
fn custom_dump(cli: &Pgsnap, inst: i64, db: &str) -> i64 {
    let job = add_yearly_job(cli, inst, &["--database", db, "--format", "custom"]);
    id_of(&dump_and_show(cli, job))
}

fn databases(cluster: &PgCluster) -> String {
    cluster
        .query(
            "postgres",
            "SELECT string_agg(datname, ',') FROM pg_database",
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_dumps_restore_with_jobs_through_named_pipes_and_large_objects_spool() {
    let mut stack = Stack::start("w-cserved").await;
    let db = "odd";
    stack.source.create_database(db).unwrap();
    fill_mixed(&stack.source, db, "t", 3, 4_000, 64);
    stack
        .source
        .script(
            db,
            "CREATE SCHEMA \"sp ace.ü\";
             CREATE TABLE \"sp ace.ü\".\"we\"\"ird 'x'\" (id serial PRIMARY KEY, t text);
             INSERT INTO \"sp ace.ü\".\"we\"\"ird 'x'\" (t)
               SELECT 'row ' || g || E'\\ttab\\\\back\\nline' FROM generate_series(1, 500) g;
             CREATE TABLE \"t_abcdefghijklmnopqrstuvwxyz_abcdefghijklmnopqrstuvwxyz_0123456\" (a int);
             INSERT INTO \"t_abcdefghijklmnopqrstuvwxyz_abcdefghijklmnopqrstuvwxyz_0123456\"
               SELECT generate_series(1, 300);
             CREATE TABLE \"ünï cödé\" (k text PRIMARY KEY, v jsonb);
             INSERT INTO \"ünï cödé\" SELECT 'ключ ' || g, jsonb_build_object('n', g) FROM generate_series(1, 200) g;
             CREATE TABLE empty_one (a int);",
        )
        .unwrap();
    // The largest table, created last, has the highest dump id.
    fill_mixed(&stack.source, db, "zz", 1, 40_000, 64);
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-cserved", None);
    let dump = custom_dump(&stack.cli, inst, db);
    let spool = stack.worker.data_dir.join("spool");
    // Three mixed tables, the four odd ones and the largest.
    let blocks = 8;

    let log = restore_succeeds(&stack.cli, dump, inst, "copy_j2", &["--jobs", "2"]);
    assert!(
        log.contains(&format!(
            "serving the custom archive's {blocks} data blocks to pg_restore -j"
        )),
        "{log}"
    );
    // The dump recorded where its blocks start: no scan of the archive.
    assert!(log.contains("block offsets from the manifest"), "{log}");
    assert!(
        log.contains(&format!("served {blocks} of {blocks} data files")),
        "{log}"
    );
    assert!(!log.contains("spooling the archive"), "{log}");
    // Sized by the recorded offsets and renumbered, the largest block is
    // loaded first or second (two jobs), not last as in dump-id order.
    assert!(
        log.contains("ordered the data files largest first for pg_restore -j"),
        "{log}"
    );
    let mut with_rows = vec!["t0", "t1", "t2", "zz0"];
    with_rows.extend(ODD_TABLES.iter().filter(|t| !t.contains("empty")));
    let rank = load_rank(&stack.source, "copy_j2", &with_rows, "zz0");
    assert!(rank <= 2, "zz0 loaded at place {rank} of {with_rows:?}");
    let mixed: Vec<String> = (0..3)
        .map(|i| format!("t{i}"))
        .chain(["zz0".into()])
        .collect();
    for table in ODD_TABLES
        .iter()
        .copied()
        .chain(mixed.iter().map(String::as_str))
    {
        assert_eq!(
            fingerprint(&stack.source, "copy_j2", table),
            fingerprint(&stack.source, db, table),
            "table {table}"
        );
    }
    assert_eq!(fingerprint(&stack.source, "copy_j2", "empty_one"), "0:");
    // Indexes, sequences and constraints came with it (post-data).
    let serial = "SELECT nextval(pg_get_serial_sequence('\"sp ace.ü\".\"we\"\"ird ''x''\"', 'id'))";
    assert_eq!(stack.source.query("copy_j2", serial).unwrap(), "501");
    assert!(files_with_suffix(&spool, "").is_empty(), "spool not empty");

    // Large objects: not served, spooled, restored all the same.
    let lo = "lo";
    stack.source.create_database(lo).unwrap();
    stack
        .source
        .script(
            lo,
            "CREATE TABLE docs (id int, body oid);
             INSERT INTO docs SELECT g, lo_from_bytea(0, convert_to(repeat('blob ' || g, 100), 'UTF8'))
               FROM generate_series(1, 5) g;",
        )
        .unwrap();
    let lo_dump = custom_dump(&stack.cli, inst, lo);
    let log = restore_succeeds(&stack.cli, lo_dump, inst, "lo_copy", &["--jobs", "2"]);
    assert!(
        log.contains("not served to pg_restore -j through named pipes (the archive holds large objects): spooling it"),
        "{log}"
    );
    assert!(log.contains("spooling the archive"), "{log}");
    assert_eq!(
        stack.source.query("lo_copy", BLOBS).unwrap(),
        stack.source.query(lo, BLOBS).unwrap()
    );

    stack.worker.process.stop_clean().await;
    stack.coordinator.process.stop_clean().await;
    stack.worker.process.assert_no_unexpected_errors(&[]);
    stack.coordinator.process.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_error_while_serving_a_custom_archive_fails_the_run_and_leaves_no_database() {
    let mut stack = Stack::start("w-cserved-bad").await;
    let db = "big";
    stack.source.create_database(db).unwrap();
    fill_mixed(&stack.source, db, "t", 4, 10_000, 512);
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-cserved-bad", None);
    let dump = custom_dump(&stack.cli, inst, db);

    // Damage the stored data far from the archive's start (its TOC): a
    // byte three quarters into every pack file.
    let packs = files_with_suffix(&stack.worker.data_dir.join("packs"), ".pack");
    assert!(!packs.is_empty());
    for pack in &packs {
        let mut bytes = std::fs::read(pack).unwrap();
        let at = bytes.len() * 3 / 4;
        bytes[at] ^= 0x5a;
        std::fs::write(pack, bytes).unwrap();
    }

    let run = restore_now(&stack.cli, dump, inst, "copy_bad", &["--jobs", "2"]);
    assert!(!run.success(), "{run:?}");
    let (status, log) = newest_run(&stack.cli);
    assert_eq!(status, "FAILED", "{log}");
    assert!(
        log.contains("serving the custom archive's 4 data blocks"),
        "{log}"
    );
    let dbs = databases(&stack.source);
    assert!(!dbs.contains("copy_bad"), "{dbs}");
    assert!(files_with_suffix(&stack.worker.data_dir.join("spool"), "").is_empty());

    stack.worker.process.stop_clean().await;
    stack.coordinator.process.stop_clean().await;
    stack.coordinator.process.assert_no_unexpected_errors(&[]);
    stack.worker.process.assert_no_unexpected_errors(&[
        "pg_restore",
        "restore",
        "corrupt",
        "chunk",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_archive_with_more_data_blocks_than_served_is_spooled() {
    let mut stack = Stack::start("w-cserved-many").await;
    let db = "many";
    stack.source.create_database(db).unwrap();
    // 2049 tables with a row each: one data block more than served.
    stack
        .source
        .script(
            db,
            "DO $$ BEGIN FOR i IN 1..2049 LOOP
               EXECUTE format('CREATE TABLE t%s (a int); INSERT INTO t%s VALUES (%s)', i, i, i);
             END LOOP; END $$;",
        )
        .unwrap();
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-cserved-many", None);
    let dump = custom_dump(&stack.cli, inst, db);
    let log = restore_succeeds(&stack.cli, dump, inst, "many_copy", &["--jobs", "2"]);
    assert!(
        log.contains("(the archive has 2049 data blocks, more than the 2048 served): spooling it"),
        "{log}"
    );
    assert!(log.contains("spooling the archive"), "{log}");
    let tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'";
    assert_eq!(stack.source.query("many_copy", tables).unwrap(), "2049");
    let rows = "SELECT (SELECT a FROM t1) + (SELECT a FROM t1000) + (SELECT a FROM t2049)";
    assert_eq!(stack.source.query("many_copy", rows).unwrap(), "3050");

    stack.worker.process.stop_clean().await;
    stack.coordinator.process.stop_clean().await;
    stack.worker.process.assert_no_unexpected_errors(&[]);
    stack.coordinator.process.assert_no_unexpected_errors(&[]);
}

/// The most data blocks served: 2048 small tables whose blocks share the
/// archive's chunks (many blocks to a chunk, a block across a chunk's
/// end), each served from its recorded offset and read only up to the
/// next block's (`FileReader::stop_at`), two at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_archive_of_the_most_small_tables_served_is_served() {
    let mut stack = Stack::start("w-cserved-most").await;
    let db = "most";
    stack.source.create_database(db).unwrap();
    stack
        .source
        .script(
            db,
            "DO $$ BEGIN FOR i IN 1..2048 LOOP
               EXECUTE format('CREATE TABLE t%s (a int, b text); \
                 INSERT INTO t%s SELECT %s * 100 + g, repeat(md5((%s * 100 + g)::text), g %% 7) \
                 FROM generate_series(1, 1 + %s %% 40) g', i, i, i, i, i);
             END LOOP; END $$;",
        )
        .unwrap();
    let sums = "SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT (xpath('/row/s/text()', \
        query_to_xml(format('SELECT count(*) || '':'' || sum(a) || '':'' || \
        md5(string_agg(b, '''' ORDER BY a)) s FROM %I', tablename), false, true, '')))[1]::text x \
        FROM pg_tables WHERE schemaname = 'public') q";
    let want = stack.source.query(db, sums).unwrap();
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-cserved-most", None);
    let dump = custom_dump(&stack.cli, inst, db);
    let log = restore_succeeds(&stack.cli, dump, inst, "most_copy", &["--jobs", "2"]);
    assert!(!log.contains("spooling"), "{log}");
    assert!(log.contains("running pg_restore -j 2"), "{log}");
    assert_eq!(stack.source.query("most_copy", sums).unwrap(), want);

    stack.worker.process.stop_clean().await;
    stack.coordinator.process.stop_clean().await;
    stack.worker.process.assert_no_unexpected_errors(&[]);
    stack.coordinator.process.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_default_jobs_serves_restores_that_do_not_say_and_streams_the_unserved() {
    const ENV: &[(&str, &str)] = &[("PGSNAPMAN_RESTORE__DEFAULT_JOBS", "2")];
    let mut stack = Stack::start_with("w-cdefault", ENV, None).await;
    let db = "shop";
    stack.source.create_database(db).unwrap();
    fill_mixed(&stack.source, db, "t", 3, 2_000, 64);
    stack
        .source
        .script(
            db,
            "CREATE TABLE docs (id int, body oid);
             INSERT INTO docs SELECT g, lo_from_bytea(0, convert_to('blob ' || g, 'UTF8'))
               FROM generate_series(1, 3) g;",
        )
        .unwrap();
    stack.source.create_database("plain_tables").unwrap();
    fill_mixed(&stack.source, "plain_tables", "t", 2, 2_000, 64);
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-cdefault", None);
    let served = custom_dump(&stack.cli, inst, "plain_tables");
    let with_blobs = custom_dump(&stack.cli, inst, db);

    // No --jobs: the worker's default, served.
    let log = restore_succeeds(&stack.cli, served, inst, "copy_default", &[]);
    assert!(
        log.contains("serving the custom archive's 2 data blocks"),
        "{log}"
    );
    assert!(log.contains("running pg_restore -j 2"), "{log}");
    for t in ["t0", "t1"] {
        assert_eq!(
            fingerprint(&stack.source, "copy_default", t),
            fingerprint(&stack.source, "plain_tables", t)
        );
    }

    // --jobs 1 says: one job, streamed.
    let log = restore_succeeds(&stack.cli, served, inst, "copy_one", &["--jobs", "1"]);
    assert!(!log.contains("serving"), "{log}");
    assert!(!log.contains("spooling"), "{log}");
    assert!(log.contains("running pg_restore\n"), "{log}");

    // Large objects under the default: streamed to one job, not spooled.
    let log = restore_succeeds(&stack.cli, with_blobs, inst, "copy_blobs", &[]);
    assert!(
        log.contains("(the archive holds large objects): streaming it to one job"),
        "{log}"
    );
    assert!(!log.contains("spooling"), "{log}");
    assert!(!log.contains("running pg_restore -j"), "{log}");
    assert_eq!(
        stack.source.query("copy_blobs", BLOBS).unwrap(),
        stack.source.query(db, BLOBS).unwrap()
    );
    assert_eq!(
        fingerprint(&stack.source, "copy_blobs", "t2"),
        fingerprint(&stack.source, db, "t2")
    );

    stack.worker.process.stop_clean().await;
    stack.coordinator.process.stop_clean().await;
    stack.worker.process.assert_no_unexpected_errors(&[]);
    stack.coordinator.process.assert_no_unexpected_errors(&[]);
}
