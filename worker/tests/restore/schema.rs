//! One schema from a full dump: into an existing database the schema is
//! created (pg_restore --schema does not), with its owner, comment and
//! privileges; the policy then applies to the schema. Into a missing
//! database, a new one holds just that schema.
use pgsnapman_proto::v1::{
    DumpFormat, DumpType, ExistingDatabase as E, RestoreStatus, RestoreType as T,
};
use pgsnapman_tests::PgCluster;

use super::*;

const DB: &str = "app";
const SCHEMA: &str = "Odd Schema.ü";

fn source(pg: &PgCluster) {
    pg.script(
        "postgres",
        "CREATE ROLE \"schema owner\"; CREATE ROLE reader; CREATE DATABASE app;",
    )
    .unwrap();
    pg.script(
        DB,
        r#"
CREATE SCHEMA "Odd Schema.ü" AUTHORIZATION "schema owner";
COMMENT ON SCHEMA "Odd Schema.ü" IS 'the odd one';
GRANT USAGE ON SCHEMA "Odd Schema.ü" TO reader;
CREATE TABLE "Odd Schema.ü".t (id int PRIMARY KEY, v text);
INSERT INTO "Odd Schema.ü".t SELECT g, 'v' || g FROM generate_series(1, 50000) g;
CREATE VIEW "Odd Schema.ü"."v t" AS SELECT id FROM "Odd Schema.ü".t WHERE id < 10;
CREATE TABLE public.other (x int);
INSERT INTO public.other VALUES (1);
"#,
    )
    .unwrap();
}

fn schema_facts(pg: &PgCluster, db: &str, schema: &str) -> String {
    pg.query(
        db,
        &format!(
            "SELECT concat_ws(' | ', pg_get_userbyid(n.nspowner), obj_description(n.oid, 'pg_namespace'), n.nspacl::text, \
             (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'v'))) \
             FROM pg_namespace n WHERE n.nspname = '{}'",
            schema.replace('\'', "''")
        ),
    )
    .unwrap()
}

fn rows(pg: &PgCluster, db: &str) -> String {
    pg.query(
        db,
        "SELECT count(*) || ':' || sum(id) FROM \"Odd Schema.ü\".t",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_schema_from_a_full_dump() {
    let src = PgCluster::start(15).unwrap();
    let dst = PgCluster::start(15).unwrap();
    source(&src);
    let env = env().await;
    let d = dump(&env, &src, DB, DumpType::Full, DumpFormat::Custom, 0).await;
    let one = |policy| RestoreTarget {
        schema: SCHEMA.into(),
        ..with(to(DB), T::Full, policy)
    };
    // An existing database with other content and no such schema.
    dst.create_database(DB).unwrap();
    dst.script(
        DB,
        "CREATE TABLE public.keep (k int); INSERT INTO public.keep VALUES (7);",
    )
    .unwrap();

    let r = restore(&env, &spec(&d, &dst, one(E::Leave))).await;
    r.expect(RestoreStatus::Succeeded);
    assert_eq!(
        schema_facts(&dst, DB, SCHEMA),
        schema_facts(&src, DB, SCHEMA)
    );
    assert_eq!(rows(&dst, DB), rows(&src, DB));
    assert_eq!(dst.query(DB, "SELECT k FROM public.keep").unwrap(), "7");
    assert_eq!(
        dst.query(DB, "SELECT to_regclass('public.other') IS NULL")
            .unwrap(),
        "t",
        "only the schema is restored"
    );

    // The schema exists now: LEAVE aborts, RENAME keeps it as the backup.
    dst.query(DB, "INSERT INTO \"Odd Schema.ü\".t VALUES (-5, 'local')")
        .unwrap();
    let r = restore(&env, &spec(&d, &dst, one(E::Leave))).await;
    r.expect(RestoreStatus::Aborted);
    let r = restore(&env, &spec(&d, &dst, one(E::Rename))).await;
    r.expect(RestoreStatus::Succeeded);
    assert_eq!(rows(&dst, DB), rows(&src, DB));
    let bak = format!("{SCHEMA}_pgsnapman_bak");
    assert_eq!(
        dst.query(
            DB,
            &format!("SELECT count(*) FROM \"{bak}\".t WHERE id = -5")
        )
        .unwrap(),
        "1"
    );
    // DROP replaces it without a backup of its own (the older backup stays).
    let r = restore(&env, &spec(&d, &dst, one(E::Drop))).await;
    r.expect(RestoreStatus::Succeeded);
    assert_eq!(rows(&dst, DB), rows(&src, DB));
    assert_eq!(
        schema_facts(&dst, DB, SCHEMA),
        schema_facts(&src, DB, SCHEMA)
    );

    // SCHEMA only (pg_restore reads no data from the stream): the schema
    // is replaced by an empty one.
    let schema_only = RestoreTarget {
        schema: SCHEMA.into(),
        ..with(to(DB), T::Schema, E::Drop)
    };
    let r = restore(&env, &spec(&d, &dst, schema_only)).await;
    r.expect(RestoreStatus::Succeeded);
    assert_eq!(
        schema_facts(&dst, DB, SCHEMA),
        schema_facts(&src, DB, SCHEMA)
    );
    assert_eq!(
        dst.query(DB, "SELECT count(*) FROM \"Odd Schema.ü\".t")
            .unwrap(),
        "0"
    );

    // Into a database that does not exist: a new one with only that schema.
    let r = restore(
        &env,
        &spec(
            &d,
            &dst,
            RestoreTarget {
                database: "fresh".into(),
                ..one(E::Rename)
            },
        ),
    )
    .await;
    r.expect(RestoreStatus::Succeeded);
    assert_eq!(rows(&dst, "fresh"), rows(&src, DB));
    assert_eq!(
        schema_facts(&dst, "fresh", SCHEMA),
        schema_facts(&src, DB, SCHEMA)
    );
    assert_eq!(
        dst.query("fresh", "SELECT to_regclass('public.other') IS NULL")
            .unwrap(),
        "t"
    );
    assert_no_temporary_databases(&dst);
    assert!(loose_files(env.dir.path()).is_empty());
}
