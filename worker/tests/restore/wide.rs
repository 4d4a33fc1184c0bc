//! Production shapes: a DATA restore with the TRUNCATE policy into a
//! database of 2,500 tables, whose table list (read from the target as one
//! JSON document) is far beyond the 64 KiB query output used to be cut at.
use pgsnapman_proto::v1::{
    DumpFormat, DumpType, ExistingDatabase as E, RestoreStatus, RestoreType as T,
};
use pgsnapman_tests::PgCluster;

use super::*;

const DB: &str = "wide";
const TABLES: u32 = 2500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_restore_into_2500_tables() {
    let src = PgCluster::start(15).unwrap();
    let dst = PgCluster::start(15).unwrap();
    src.create_database(DB).unwrap();
    src.script(
        DB,
        &format!(
            "DO $$ BEGIN
               FOR i IN 1..{TABLES} LOOP
                 EXECUTE format('CREATE TABLE %I (id int)', 'tenant_table_with_a_long_name_' || i);
                 EXECUTE format('INSERT INTO %I VALUES (%s)', 'tenant_table_with_a_long_name_' || i, i);
               END LOOP;
             END $$;"
        ),
    )
    .unwrap();
    let env = env().await;
    let d = dump(&env, &src, DB, DumpType::Full, DumpFormat::Custom, 0).await;
    restore(&env, &spec(&d, &dst, with(to(DB), T::Full, E::Leave)))
        .await
        .expect(RestoreStatus::Succeeded);
    dst.query(
        DB,
        "INSERT INTO tenant_table_with_a_long_name_7 VALUES (-1)",
    )
    .unwrap();

    let r = restore(&env, &spec(&d, &dst, with(to(DB), T::Data, E::Truncate))).await;
    r.expect(RestoreStatus::Succeeded);
    assert!(
        r.logged(&format!("truncating the {TABLES} dumped table(s)")),
        "{:?}",
        r.log
    );
    assert_eq!(
        dst.query(
            DB,
            "SELECT string_agg(id::text, ',') FROM tenant_table_with_a_long_name_7"
        )
        .unwrap(),
        "7"
    );
    let sum = "SELECT count(*) FROM pg_class WHERE relname LIKE 'tenant_table_with_a_long_name_%'";
    assert_eq!(dst.query(DB, sum).unwrap(), TABLES.to_string());
}
