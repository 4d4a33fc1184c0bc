//! A database whose tables are hard to count rows of (row counts at dump
//! time, issue 14): bytea, jsonb, text with newlines, tabs, backslashes and
//! `\.`, an empty and a zero-column table, a partitioned table, odd names.
//! Shared by the worker's tests and the e2e scenarios.
use anyhow::{Context, Result};

use crate::PgCluster;

/// 63 bytes, the longest identifier PostgreSQL keeps.
pub const LONG_NAME: &str = "t23456789012345678901234567890123456789012345678901234567890123";

/// Creates the tables in `db`.
pub fn create(pg: &PgCluster, db: &str) -> Result<()> {
    let sql = format!(
        r#"
CREATE SCHEMA "Sch.ema ""x""";
CREATE TABLE public.bin (id int, b bytea);
INSERT INTO public.bin SELECT i, decode(repeat(md5(i::text), 40) || '0a0d09005c2e', 'hex')
  FROM generate_series(1, 3000) i;
CREATE TABLE public.docs (id int, j jsonb);
INSERT INTO public.docs SELECT i, jsonb_build_object('k', E'line\none\ttab \\.', 'n', i)
  FROM generate_series(1, 2500) i;
CREATE TABLE public.texts (t text);
INSERT INTO public.texts VALUES (E'a\nb\tc'), (E'\\.'), (''), (E'\r\n'), (E'\\'), (NULL), (E'x\n\\.\ny');
INSERT INTO public.texts SELECT repeat(E'long\n', 2000) FROM generate_series(1, 50);
CREATE TABLE public.empty (a int);
CREATE TABLE public.nocols ();
INSERT INTO public.nocols SELECT FROM generate_series(1, 4);
CREATE TABLE public.parted (id int, v text) PARTITION BY RANGE (id);
CREATE TABLE public.parted_a PARTITION OF public.parted FOR VALUES FROM (0) TO (1000);
CREATE TABLE public.parted_b PARTITION OF public.parted FOR VALUES FROM (1000) TO (5000);
INSERT INTO public.parted SELECT i, i::text FROM generate_series(0, 4321) i;
CREATE TABLE "Sch.ema ""x"""."we.ird ""q"" tbl" (v text);
INSERT INTO "Sch.ema ""x"""."we.ird ""q"" tbl" SELECT 'x' FROM generate_series(1, 17);
CREATE TABLE public."sp ace" (v int);
INSERT INTO public."sp ace" VALUES (1), (2);
CREATE TABLE public."ünï cödé ✓" (v int);
INSERT INTO public."ünï cödé ✓" VALUES (1), (2), (3);
CREATE TABLE public."{LONG_NAME}" (v int);
INSERT INTO public."{LONG_NAME}" SELECT generate_series(1, 63);
"#
    );
    pg.script(db, &sql).context("create the row-count tables")
}

/// Every table with data in `db` and its `count(*)`, sorted by schema and
/// table (partitioned parents have no rows of their own: their partitions
/// are listed).
pub fn counts(pg: &PgCluster, db: &str) -> Result<Vec<(String, String, u64)>> {
    let out = pg.query(
        db,
        "SELECT n.nspname || '|' || c.relname FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         ORDER BY n.nspname COLLATE \"C\", c.relname COLLATE \"C\"",
    )?;
    let mut rows = Vec::new();
    for line in out.lines() {
        let (schema, table) = line.split_once('|').context("schema|table")?;
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let n: u64 = pg
            .query(
                db,
                &format!("SELECT count(*) FROM ONLY {}.{}", q(schema), q(table)),
            )?
            .parse()?;
        rows.push((schema.to_string(), table.to_string(), n));
    }
    Ok(rows)
}
