//! Every existing-database policy on a real target: RENAME keeps the old
//! database under the documented name (replacing an older backup), DROP
//! leaves none, DROP_BEFORE ends the sessions on the target, LEAVE aborts
//! and changes nothing, TRUNCATE replaces the data of the dumped tables in
//! one transaction. The dump is a directory-format one restored with -j 2.
use pgsnapman_proto::v1::{
    DumpFormat, DumpType, ExistingDatabase as E, RestoreStatus, RestoreType as T,
};
use pgsnapman_tests::PgCluster;

use super::*;

const DB: &str = "pol db";

fn source(pg: &PgCluster) {
    pg.create_database(DB).unwrap();
    pg.script(
        DB,
        "CREATE TABLE parent (id int PRIMARY KEY, v text);
         CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES parent, w text);
         INSERT INTO parent SELECT g, md5(g::text) FROM generate_series(1, 5000) g;
         INSERT INTO child SELECT g, g, 'w' || g FROM generate_series(1, 5000) g;",
    )
    .unwrap();
}

/// Marks the target's current database so the test can tell it apart.
fn mark(pg: &PgCluster, db: &str, marker: &str) {
    pg.query(db, &format!("CREATE TABLE \"{marker}\" (x int)"))
        .unwrap();
}

fn has_table(pg: &PgCluster, db: &str, table: &str) -> bool {
    pg.query(
        db,
        &format!("SELECT to_regclass('public.\"{table}\"') IS NOT NULL"),
    )
    .unwrap()
        == "t"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_existing_database_policy() {
    let src = PgCluster::start(15).unwrap();
    let dst = PgCluster::start(15).unwrap();
    source(&src);
    let env = env().await;
    let d = dump(&env, &src, DB, DumpType::Full, DumpFormat::Directory, 2).await;
    let parallel = |t: RestoreTarget| RestoreTarget {
        parallel_jobs: 2,
        ..t
    };
    let want = checksums(&src, DB);
    let backup = format!("{DB}_pgsnapman_bak");

    // Missing target: created (LEAVE does not apply).
    let r = restore(
        &env,
        &spec(&d, &dst, parallel(with(to(DB), T::Full, E::Leave))),
    )
    .await;
    r.expect(RestoreStatus::Succeeded);
    assert!(r.logged("running pg_restore -j 2"), "{:?}", r.log);
    assert_eq!(checksums(&dst, DB), want);

    // LEAVE with the target there: aborted, nothing changed.
    mark(&dst, DB, "leave marker");
    let r = restore(&env, &spec(&d, &dst, with(to(DB), T::Full, E::Leave))).await;
    r.expect(RestoreStatus::Aborted);
    assert!(has_table(&dst, DB, "leave marker"));
    assert_no_temporary_databases(&dst);

    // RENAME: the old one becomes the backup.
    let r = restore(
        &env,
        &spec(&d, &dst, parallel(with(to(DB), T::Full, E::Rename))),
    )
    .await;
    r.expect(RestoreStatus::Succeeded);
    assert!(!has_table(&dst, DB, "leave marker"));
    assert!(has_table(&dst, &backup, "leave marker"));
    assert_eq!(checksums(&dst, DB), want);
    // ... and again: the older backup is replaced.
    mark(&dst, DB, "second marker");
    let r = restore(&env, &spec(&d, &dst, with(to(DB), T::Full, E::Rename))).await;
    r.expect(RestoreStatus::Succeeded);
    assert!(r.logged("dropped the older backup"));
    assert!(has_table(&dst, &backup, "second marker"));
    assert!(!has_table(&dst, &backup, "leave marker"));
    assert_eq!(pgsnapman_databases(&dst), vec![backup.clone()]);

    // DROP: no database is left behind; the backup is not touched. A
    // session on the target is ended for the swap.
    mark(&dst, DB, "drop marker");
    let mut session = Session::open(&dst, DB);
    session.send("SELECT 1;");
    wait_for(
        &dst,
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{DB}'"),
        "a session on the target",
    )
    .await;
    let r = restore(&env, &spec(&d, &dst, with(to(DB), T::Full, E::Drop))).await;
    r.expect(RestoreStatus::Succeeded);
    assert!(r.logged("ended 1 session"), "{:?}", r.log);
    assert!(!has_table(&dst, DB, "drop marker"));
    assert_eq!(pgsnapman_databases(&dst), vec![backup.clone()]);
    assert_eq!(checksums(&dst, DB), want);
    drop(session);

    // DROP_BEFORE: dropped first (its sessions ended), then restored.
    mark(&dst, DB, "drop before marker");
    let _session = Session::open(&dst, DB);
    let r = restore(
        &env,
        &spec(&d, &dst, with(to(DB), T::Schema, E::DropBefore)),
    )
    .await;
    r.expect(RestoreStatus::Succeeded);
    assert!(r.logged("DROP_BEFORE: dropped database"));
    assert!(!has_table(&dst, DB, "drop before marker"));
    assert_eq!(
        dst.query(DB, "SELECT count(*) FROM parent").unwrap(),
        "0",
        "a SCHEMA restore loads no data"
    );

    // TRUNCATE: the dumped tables' data is replaced (both tables, in one
    // TRUNCATE despite the foreign key), the rest is kept.
    dst.script(
        DB,
        "INSERT INTO parent VALUES (-1, 'stale'); INSERT INTO child VALUES (-1, -1, 'stale');
         CREATE TABLE extra (x int); INSERT INTO extra VALUES (42);",
    )
    .unwrap();
    let r = restore(&env, &spec(&d, &dst, with(to(DB), T::Data, E::Truncate))).await;
    r.expect(RestoreStatus::Succeeded);
    assert!(r.logged("truncating the 2 dumped table(s)"), "{:?}", r.log);
    let mut got = checksums(&dst, DB);
    assert_eq!(
        got.remove("public.extra").as_deref(),
        Some("1:69894749bd53558ee86159de2c6bbf7b")
    );
    assert_eq!(got, want);
    assert!(
        loose_files(env.dir.path()).is_empty(),
        "{:?}",
        loose_files(env.dir.path())
    );
}
