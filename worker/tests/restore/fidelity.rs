//! A database with everything that usually breaks a restore elsewhere,
//! restored to another server under another (odd) name: the schema, the
//! data, the database's own properties and the roles come out the same.
use pgsnapman_proto::v1::{DumpFormat, DumpType, RestoreStatus};
use pgsnapman_tests::PgCluster;

use super::*;

pub const SOURCE_DB: &str = "Src \"DB\" ü.1";
const TARGET_DB: &str = "Restored 'DB' ü";

/// Roles and a database owned by one of them with ACL, settings, several
/// schemas, odd identifiers, a materialized view, a partitioned table,
/// extensions from contrib, default privileges, a function and sequences.
pub fn rich_source(pg: &PgCluster) {
    pg.script(
        "postgres",
        r#"
CREATE ROLE "Owner ""O"" ü" LOGIN CREATEDB;
CREATE ROLE "odd role.x" NOLOGIN;
CREATE ROLE readers NOLOGIN;
CREATE ROLE "app user" LOGIN CONNECTION LIMIT 5;
GRANT readers TO "app user";
GRANT "odd role.x" TO "app user" WITH ADMIN OPTION;
CREATE DATABASE "Src ""DB"" ü.1" OWNER "Owner ""O"" ü";
REVOKE ALL ON DATABASE "Src ""DB"" ü.1" FROM PUBLIC;
GRANT CONNECT ON DATABASE "Src ""DB"" ü.1" TO readers;
GRANT CONNECT, TEMPORARY ON DATABASE "Src ""DB"" ü.1" TO "app user" WITH GRANT OPTION;
ALTER DATABASE "Src ""DB"" ü.1" SET work_mem = '12MB';
ALTER DATABASE "Src ""DB"" ü.1" SET search_path = "Sch 1", public;
ALTER ROLE "app user" IN DATABASE "Src ""DB"" ü.1" SET statement_timeout = '5min';
ALTER DATABASE "Src ""DB"" ü.1" CONNECTION LIMIT 50;
"#,
    )
    .unwrap();
    pg.script(
        SOURCE_DB,
        r#"
CREATE EXTENSION citext;
CREATE EXTENSION pg_trgm;
CREATE SCHEMA "Sch 1" AUTHORIZATION "odd role.x";
CREATE SCHEMA "sch.2";
COMMENT ON SCHEMA "sch.2" IS 'second; with ''quotes''';
CREATE TABLE "Sch 1"."Tab ""x""" (id serial PRIMARY KEY, name citext NOT NULL, note text);
INSERT INTO "Sch 1"."Tab ""x""" (name, note)
    SELECT 'Name ' || g, md5(g::text) || E'\ttab; GRANT x TO y;' FROM generate_series(1, 3000) g;
CREATE INDEX "trgm idx" ON "Sch 1"."Tab ""x""" USING gin (note gin_trgm_ops);
ALTER TABLE "Sch 1"."Tab ""x""" OWNER TO "odd role.x";
CREATE TABLE "sch.2".measure (id int, at date NOT NULL, v numeric) PARTITION BY RANGE (at);
CREATE TABLE "sch.2"."measure 2024" PARTITION OF "sch.2".measure FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE "sch.2"."measure 2025" PARTITION OF "sch.2".measure FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO "sch.2".measure SELECT g, date '2024-01-01' + (g % 700), g * 1.5 FROM generate_series(1, 2000) g;
ALTER TABLE "sch.2".measure OWNER TO "app user";
CREATE MATERIALIZED VIEW "sch.2"."mv ü" AS SELECT date_trunc('month', at) AS m, sum(v) AS total FROM "sch.2".measure GROUP BY 1;
CREATE FUNCTION "Sch 1"."f;x"(a int) RETURNS text LANGUAGE plpgsql AS $fn$
BEGIN
  -- a body with ; and ' and a statement-looking line:
  RETURN 'x;' || a::text || '''';
END
$fn$;
GRANT SELECT ON ALL TABLES IN SCHEMA "Sch 1" TO readers;
GRANT USAGE ON SCHEMA "Sch 1" TO readers;
ALTER DEFAULT PRIVILEGES FOR ROLE "Owner ""O"" ü" GRANT SELECT ON TABLES TO readers;
CREATE TABLE public.plain (k text PRIMARY KEY, v jsonb);
INSERT INTO public.plain VALUES ('a', '{"x": 1}'), ('b;c', '[1, "\"q"]');
"#,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rich_database_restores_identically_on_another_server() {
    let source = PgCluster::start(15).unwrap();
    let target = PgCluster::start(15).unwrap();
    rich_source(&source);
    let env = env().await;
    let dumped = dump(
        &env,
        &source,
        SOURCE_DB,
        DumpType::Full,
        DumpFormat::Custom,
        0,
    )
    .await;

    let r = restore(&env, &spec(&dumped, &target, to(TARGET_DB))).await;
    let f = r.expect(RestoreStatus::Succeeded);
    // Login roles were created without a password: a warning.
    assert!(f.warnings >= 1, "{:?}", r.log);
    assert!(r.logged("created the roles the dump needs"));
    assert_eq!(r.progress.0, r.progress.1, "every byte was fed");
    assert_eq!(f.bytes_total, dumped.dump_bytes);
    assert_eq!(f.bytes_done, dumped.dump_bytes);

    assert_eq!(
        normalized_schema(&source, SOURCE_DB),
        normalized_schema(&target, TARGET_DB)
    );
    let sums = checksums(&source, SOURCE_DB);
    assert!(sums.len() >= 6, "{sums:?}");
    assert_eq!(sums, checksums(&target, TARGET_DB));
    assert_eq!(
        database_properties(&source, SOURCE_DB),
        database_properties(&target, TARGET_DB)
    );
    // The roles came with their attributes and memberships.
    let roles = "SELECT string_agg(format('%s:%s:%s:%s', rolname, rolcanlogin, rolcreatedb, rolconnlimit), ',' ORDER BY rolname) \
                 FROM pg_roles WHERE rolname IN ('Owner \"O\" ü', 'odd role.x', 'readers', 'app user')";
    assert_eq!(
        source.query("postgres", roles).unwrap(),
        target.query("postgres", roles).unwrap()
    );
    let members = "SELECT string_agg(format('%s>%s:%s', pg_get_userbyid(member), pg_get_userbyid(roleid), admin_option), ',' ORDER BY pg_get_userbyid(member), pg_get_userbyid(roleid)) \
                   FROM pg_auth_members WHERE pg_get_userbyid(member) = 'app user'";
    assert_eq!(
        source.query("postgres", members).unwrap(),
        target.query("postgres", members).unwrap()
    );
    // The settings came with the database through the rename (they are
    // keyed by its OID), and it takes connections.
    assert_eq!(target.query(TARGET_DB, "SHOW work_mem").unwrap(), "12MB");
    assert_no_temporary_databases(&target);
    assert!(
        loose_files(env.dir.path()).is_empty(),
        "{:?}",
        loose_files(env.dir.path())
    );
    eprintln!("full-fidelity restore: {:.1} s", r.secs);

    // The same database as a plain dump, through psql: the same result.
    let plain = dump(
        &env,
        &source,
        SOURCE_DB,
        DumpType::Full,
        DumpFormat::Plain,
        0,
    )
    .await;
    let r = restore(&env, &spec(&plain, &target, to("plain copy"))).await;
    r.expect(RestoreStatus::Succeeded);
    assert_eq!(
        normalized_schema(&source, SOURCE_DB),
        normalized_schema(&target, "plain copy")
    );
    assert_eq!(sums, checksums(&target, "plain copy"));
    assert_eq!(
        database_properties(&source, SOURCE_DB),
        database_properties(&target, "plain copy")
    );
    assert_no_temporary_databases(&target);
    assert!(loose_files(env.dir.path()).is_empty());
}
