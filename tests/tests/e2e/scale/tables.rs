//! A database of 10,000 tables (40 hash-partitioned parents of 250
//! partitions each, half of them in an oddly named schema): dumped, restored
//! FULL into a new database, then restored DATA with `--existing truncate`
//! into that copy after its rows were changed; tables and rows match.
//!
//! Not fewer, larger parents: creating or attaching a partition rebuilds its
//! parent's partition descriptor, so set-up and pg_restore grow with the
//! square of the partitions per parent (4 × 2,500: 52 s to create and 180 s
//! to restore on a busy 2-core machine; 40 × 250: 10 s and 46 s).
use pgsnapman_tests::PgCluster;
use pgsnapman_tests::cluster::quote_ident;

use super::{restore_ok, timed};
use crate::common::*;

const PARTITIONS: usize = 250;
const ROWS: usize = 1_000;
const SCHEMAS: [&str; 2] = ["public", "Part \"s\".ü"];
const PARENTS_PER_SCHEMA: usize = 20;
/// Partitions plus their parents.
const TABLES: usize = SCHEMAS.len() * PARENTS_PER_SCHEMA * (PARTITIONS + 1);

/// Every parent as `schema.parent`, quoted.
fn parents() -> Vec<String> {
    SCHEMAS
        .iter()
        .flat_map(|s| {
            (0..PARENTS_PER_SCHEMA).map(move |p| format!("{}.parent_{p}", quote_ident(s)))
        })
        .collect()
}

/// Ordinary and partitioned tables of `db` outside the system schemas.
fn table_count(cluster: &PgCluster, db: &str) -> usize {
    cluster
        .query(
            db,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p')
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
        )
        .unwrap()
        .parse()
        .unwrap()
}

/// Per parent: rows, sum of ids, sum of values. JIT is off: compiling a
/// plan over 10,000 partitions takes minutes.
fn fingerprint(cluster: &PgCluster, db: &str) -> String {
    let parts: Vec<String> = parents()
        .iter()
        .map(|p| format!("(SELECT count(*) || '/' || sum(id) || '/' || sum(n) FROM {p})"))
        .collect();
    cluster
        .query(
            db,
            &format!("SET jit = off; SELECT {}", parts.join(" || ' ' || ")),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_partitions_restore_full_and_data_with_truncate() {
    let started = std::time::Instant::now();
    let mut stack = Stack::start("w-tables").await;
    // pg_dump locks every table in one transaction, and so does the DATA
    // restore's TRUNCATE: the default lock table (64 locks × 100
    // connections) is too small for 10,000 tables. Production servers of
    // this shape raise it too.
    stack.source.stop().unwrap();
    stack
        .source
        .options
        .settings
        .push(("max_locks_per_transaction".into(), "256".into()));
    stack.source.start_again().unwrap();
    let db = "parts";
    stack.source.create_database(db).unwrap();
    let mut setup = format!("CREATE SCHEMA {};\n", quote_ident(SCHEMAS[1]));
    for schema in SCHEMAS {
        // One DO block (one transaction) per schema.
        let schema = quote_ident(schema).replace('\'', "''");
        setup.push_str(&format!(
            "DO $$ BEGIN
               FOR p IN 0..{last_parent} LOOP
                 EXECUTE format('CREATE TABLE %s.parent_%s (id bigint NOT NULL, n int) PARTITION BY HASH (id)', '{schema}', p);
                 FOR i IN 0..{last} LOOP
                   EXECUTE format('CREATE TABLE %s.part_%s_%s PARTITION OF %s.parent_%s FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER %s)',
                                  '{schema}', p, i, '{schema}', p, i);
                 END LOOP;
                 EXECUTE format('INSERT INTO %s.parent_%s SELECT g, mod(g, 7) FROM generate_series(1, {ROWS}) g', '{schema}', p);
               END LOOP;
             END $$;\n",
            last_parent = PARENTS_PER_SCHEMA - 1,
            last = PARTITIONS - 1,
        ));
    }
    timed("create 10,000 partitions", || {
        stack.source.script(db, &setup).unwrap()
    });
    assert_eq!(table_count(&stack.source, db), TABLES);
    let source_rows = fingerprint(&stack.source, db);

    let src = add_instance(&stack.cli, "src", stack.source.port, "w-tables", None);
    let job = add_job(&stack.cli, src, db);
    let dump = timed("dump 10,000 tables", || dump_and_show(&stack.cli, job));
    let dump = id_of(&dump);

    // FULL into a new database.
    let copy = "parts copy";
    restore_ok(&stack.cli, dump, src, copy, &[]);
    assert_eq!(table_count(&stack.source, copy), TABLES);
    assert_eq!(fingerprint(&stack.source, copy), source_rows);

    // DATA with TRUNCATE into that copy of the schema, after changing it.
    let parents = parents();
    let (first, odd, last) = (&parents[0], &parents[21], &parents[39]);
    stack
        .source
        .script(
            copy,
            &format!(
                "DELETE FROM {first} WHERE id % 3 = 0;
                 UPDATE {odd} SET n = n + 1;
                 INSERT INTO {last} SELECT g, 1 FROM generate_series({ROWS} + 1, {ROWS} + 500) g;"
            ),
        )
        .unwrap();
    assert_ne!(fingerprint(&stack.source, copy), source_rows);
    restore_ok(
        &stack.cli,
        dump,
        src,
        copy,
        &["--restore-type", "data", "--existing", "truncate"],
    );
    assert_eq!(fingerprint(&stack.source, copy), source_rows);
    assert_eq!(table_count(&stack.source, copy), TABLES);
    stack.stop_clean(&[]).await;
    super::took("tables: the whole test", started);
}
