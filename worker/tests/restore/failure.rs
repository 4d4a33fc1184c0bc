//! Restores that fail half-way leave the target as it was: an index in a
//! tablespace the target lacks (kept with keep_tablespaces) fails a RENAME
//! restore after the data is in, and a COPY rejected by a constraint fails
//! a TRUNCATE restore after the truncation. Mapping the tablespace to one
//! the target has makes the first one work.
use std::collections::BTreeMap;

use pgsnapman_proto::v1::{
    DumpFormat, DumpType, ExistingDatabase as E, RestoreStatus, RestoreType as T,
};
use pgsnapman_tests::PgCluster;

use super::*;

const DB: &str = "fail db";

/// An empty directory the server's OS user owns, for CREATE TABLESPACE.
fn tablespace_dir() -> tempfile::TempDir {
    let dir = pgsnapman_tests::shared_tempdir("pgsnapman-ts-");
    if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
    }
    dir
}

fn tablespace_of(pg: &PgCluster, db: &str, relation: &str) -> String {
    pg.query(
        db,
        &format!(
            "SELECT coalesce(t.spcname, '-') FROM pg_class c LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace WHERE c.relname = '{relation}'"
        ),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_restores_leave_the_target_as_it_was() {
    let src = PgCluster::start(15).unwrap();
    let dst = PgCluster::start(15).unwrap();
    let src_ts = tablespace_dir();
    let dst_ts = tablespace_dir();
    src.query(
        "postgres",
        &format!(
            "CREATE TABLESPACE \"ts src\" LOCATION '{}'",
            src_ts.path().display()
        ),
    )
    .unwrap();
    src.script(
        "postgres",
        "CREATE ROLE \"tab owner\"; CREATE DATABASE \"fail db\";",
    )
    .unwrap();
    src.script(
        DB,
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;
         ALTER TABLE t OWNER TO \"tab owner\";
         CREATE INDEX \"v idx\" ON t (v) TABLESPACE \"ts src\";
         SELECT lo_from_bytea(4242, 'a large object');",
    )
    .unwrap();
    let env = env().await;
    let d = dump(&env, &src, DB, DumpType::Full, DumpFormat::Custom, 0).await;
    // The target has a database of that name with its own data.
    dst.create_database(DB).unwrap();
    dst.script(
        DB,
        "CREATE TABLE mine (x int); INSERT INTO mine VALUES (1), (2);",
    )
    .unwrap();
    let before = checksums(&dst, DB);

    // keep_tablespaces: the index cannot be created, after the data is in.
    let keep = RestoreTarget {
        keep_tablespaces: true,
        ..with(to(DB), T::Full, E::Rename)
    };
    let r = restore(&env, &spec(&d, &dst, keep)).await;
    let f = r.expect(RestoreStatus::Failed);
    assert!(
        f.error.contains("Tablespace \"ts src\" does not exist"),
        "{}",
        f.error
    );
    assert_eq!(checksums(&dst, DB), before);
    assert_no_temporary_databases(&dst);
    assert_eq!(
        dst.query(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'tab owner'"
        )
        .unwrap(),
        "0",
        "the role created for the failed restore is gone again"
    );
    assert!(r.logged("dropped database"));
    assert!(loose_files(env.dir.path()).is_empty());

    // Mapped to a tablespace the target has: it works, the index is there.
    dst.query(
        "postgres",
        &format!(
            "CREATE TABLESPACE \"ts new\" LOCATION '{}'",
            dst_ts.path().display()
        ),
    )
    .unwrap();
    let mapped = RestoreTarget {
        tablespace_map: BTreeMap::from([("ts src".to_string(), "ts new".to_string())])
            .into_iter()
            .collect(),
        ..with(to("mapped"), T::Full, E::Rename)
    };
    let r = restore(&env, &spec(&d, &dst, mapped)).await;
    r.expect(RestoreStatus::Succeeded);
    assert!(
        r.logged("1 tablespace assignment(s) rewritten"),
        "{:?}",
        r.log
    );
    assert_eq!(tablespace_of(&dst, "mapped", "v idx"), "ts new");
    assert_eq!(checksums(&dst, "mapped"), checksums(&src, DB));
    // Dropped by default: the default tablespace.
    let r = restore(
        &env,
        &spec(&d, &dst, with(to("plain ts"), T::Full, E::Rename)),
    )
    .await;
    r.expect(RestoreStatus::Succeeded);
    assert_eq!(tablespace_of(&dst, "plain ts", "v idx"), "-");

    // TRUNCATE + load in one transaction. The dump's large object exists in
    // the target: pg_restore creates it, which fails; nothing is committed.
    dst.query("mapped", "INSERT INTO t VALUES (-1, 'local')")
        .unwrap();
    let before = checksums(&dst, "mapped");
    let truncate = spec(&d, &dst, with(to("mapped"), T::Data, E::Truncate));
    let r = restore(&env, &truncate).await;
    let f = r.expect(RestoreStatus::Failed);
    assert!(f.error.contains("pg_largeobject_metadata"), "{}", f.error);
    assert_eq!(checksums(&dst, "mapped"), before);
    // Without it, a row the target rejects rolls back the truncation (and
    // the large object) too.
    dst.script(
        "mapped",
        "SELECT lo_unlink(4242);
         ALTER TABLE t ADD CONSTRAINT small CHECK (id < 900) NOT VALID;",
    )
    .unwrap();
    let r = restore(
        &env,
        &spec(&d, &dst, with(to("mapped"), T::Data, E::Truncate)),
    )
    .await;
    let f = r.expect(RestoreStatus::Failed);
    assert!(f.error.contains("violates check constraint"), "{}", f.error);
    assert_eq!(checksums(&dst, "mapped"), before);
    assert_eq!(
        dst.query("mapped", "SELECT count(*) FROM pg_largeobject_metadata")
            .unwrap(),
        "0"
    );
    // Then the load works; pg_restore's own BEGIN/COMMIT around the large
    // object is left out, so the whole load stays one transaction.
    dst.query("mapped", "ALTER TABLE t DROP CONSTRAINT small")
        .unwrap();
    let r = restore(
        &env,
        &spec(&d, &dst, with(to("mapped"), T::Data, E::Truncate)),
    )
    .await;
    r.expect(RestoreStatus::Succeeded);
    assert!(
        r.logged("BEGIN/COMMIT statement(s) of the script left out"),
        "{:?}",
        r.log
    );
    assert_eq!(checksums(&dst, "mapped"), checksums(&src, DB));
    assert_eq!(
        dst.query("mapped", "SELECT convert_from(lo_get(4242), 'UTF8')")
            .unwrap(),
        "a large object"
    );
    assert_no_temporary_databases(&dst);
    assert!(loose_files(env.dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_without_room_refuses_before_anything_changes() {
    let pg = PgCluster::start(15).unwrap();
    pg.create_database("small").unwrap();
    pg.query(
        "small",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    )
    .unwrap();
    // The worker's data directory on a 64 MiB file system: less than the
    // spool's reserve.
    let fs = pgsnapman_tests::tmpfs::Tmpfs::mount(64).unwrap();
    let dir = fs.subdir("worker").unwrap();
    let env = Env {
        runner: crate::common::runner(&dir).await,
        outbox: std::sync::Arc::new(
            pgsnapman_worker::outbox::Outbox::open(
                &pgsnapman_worker::state::State::open(&dir.join("state")).unwrap(),
            )
            .unwrap(),
        ),
        dir: tempfile::tempdir().unwrap(),
    };
    let d = dump(&env, &pg, "small", DumpType::Full, DumpFormat::Directory, 0).await;
    let r = restore(&env, &spec(&d, &pg, to("small copy"))).await;
    let f = r.expect(RestoreStatus::Aborted);
    assert!(f.error.contains("the spool has"), "{}", f.error);
    assert_no_temporary_databases(&pg);
    assert_eq!(
        pg.query(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'small copy'"
        )
        .unwrap(),
        "0"
    );
    assert!(loose_files(&dir).is_empty(), "{:?}", loose_files(&dir));
}
