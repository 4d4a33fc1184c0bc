//! Megabyte-sized values: a 1 MiB `COMMENT ON DATABASE`, and 1 MiB setting
//! values (`ALTER DATABASE … SET`, `ALTER ROLE … SET`, `ALTER ROLE … IN
//! DATABASE … SET`, a custom placeholder setting) survive a dump and a
//! restore onto another cluster, byte for byte.
use pgsnapman_tests::PgCluster;

use super::{restore_ok, timed};
use crate::common::*;

const MIB: usize = 1 << 20;
/// 16 bytes: a quote, a backslash and multibyte characters.
const PATTERN: &str = "it''s é\\€ ok..";
const DB: &str = "big";
const ROLE: &str = "big owner";

/// The database and a role owning it, with a 1 MiB comment and three 1 MiB
/// settings (each value starts with its own prefix).
fn create_big_values(cluster: &PgCluster) {
    let sql = format!(
        "CREATE ROLE \"{ROLE}\";
         CREATE DATABASE {DB} OWNER \"{ROLE}\";
         DO $$ DECLARE v text := repeat('{PATTERN}', {n}); BEGIN
           EXECUTE format('COMMENT ON DATABASE {DB} IS %L', 'comment ' || v);
           EXECUTE format('ALTER DATABASE {DB} SET myapp.big = %L', 'db ' || v);
           EXECUTE format('ALTER ROLE \"{ROLE}\" SET myapp.big = %L', 'role ' || v);
           EXECUTE format('ALTER ROLE \"{ROLE}\" IN DATABASE {DB} SET myapp.big = %L', 'role in db ' || v);
         END $$;",
        n = MIB / 16
    );
    timed("create 1 MiB comment and settings", || {
        cluster.script("postgres", &sql).unwrap()
    });
    cluster
        .script(
            DB,
            &format!("CREATE TABLE t (id int); ALTER TABLE t OWNER TO \"{ROLE}\";"),
        )
        .unwrap();
}

/// `role@database=md5/bytes` of every setting of the role or the database.
fn settings(cluster: &PgCluster) -> String {
    cluster
        .query(
            "postgres",
            &format!(
                "SELECT string_agg(coalesce(r.rolname, '-') || '@' || coalesce(d.datname, '-') || '='
                                   || md5(array_to_string(s.setconfig, '|')) || '/'
                                   || octet_length(array_to_string(s.setconfig, '|')), ' ' ORDER BY 1)
                   FROM pg_db_role_setting s
                   LEFT JOIN pg_roles r ON r.oid = s.setrole
                   LEFT JOIN pg_database d ON d.oid = s.setdatabase
                  WHERE r.rolname = '{ROLE}' OR d.datname = '{DB}'"
            ),
        )
        .unwrap()
}

/// `md5/bytes` of the database's comment.
fn comment(cluster: &PgCluster) -> String {
    cluster
        .query(
            "postgres",
            &format!(
                "SELECT coalesce(md5(c) || '/' || octet_length(c), 'none')
                   FROM (SELECT shobj_description(oid, 'pg_database') AS c
                           FROM pg_database WHERE datname = '{DB}') x"
            ),
        )
        .unwrap()
}

/// Starts a stack with the big values on its source, dumps them (the dump
/// must succeed) and returns the stack, the target cluster, the catalog
/// row and the target instance's id.
async fn dumped(worker: &str) -> (Stack, PgCluster, serde_json::Value, i64) {
    let stack = Stack::start(worker).await;
    let target = PgCluster::start(PG_MAJOR).unwrap();
    create_big_values(&stack.source);
    let src = add_instance(&stack.cli, "src", stack.source.port, worker, None);
    let dst = add_instance(&stack.cli, "dst", target.port, worker, None);
    let job = add_job(&stack.cli, src, DB);
    let dump = timed("dump", || dump_and_show(&stack.cli, job));
    (stack, target, dump, dst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabyte_settings_survive_dump_and_restore() {
    let (stack, target, dump, dst) = dumped("w-bigset").await;
    let source = settings(&stack.source);
    assert_eq!(source.split(' ').count(), 3, "{source}");
    assert!(
        source.contains(&format!("/{}", MIB + "role in db ".len())),
        "{source}"
    );

    // The restore metadata carries them whole.
    let m = &dump["restore_metadata"];
    let setting = |role: serde_json::Value| {
        m["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "myapp.big" && s["role"] == role)
            .unwrap_or_else(|| panic!("myapp.big for {role} missing"))["value"]
            .as_str()
            .unwrap()
            .len()
    };
    assert_eq!(setting(serde_json::Value::Null), MIB + "db ".len());
    assert_eq!(setting(ROLE.into()), MIB + "role in db ".len());
    let role = m["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == ROLE)
        .expect("the owner in the metadata");
    assert!(
        role["sql"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().len() > MIB
                && s.as_str().unwrap().contains("SET myapp.big")),
        "the role's 1 MiB setting is not among its statements"
    );

    restore_ok(&stack.cli, id_of(&dump), dst, DB, &[]);
    assert_eq!(settings(&target), source);
    stack.stop_clean(&[]).await;
}

/// Needs branch `misc` (COMMENT ON DATABASE in the restore metadata).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_database_comment_survives_dump_and_restore() {
    let (stack, target, dump, dst) = dumped("w-bigcomment").await;
    let source = comment(&stack.source);
    assert_eq!(
        source.split('/').nth(1),
        Some(&*(MIB + "comment ".len()).to_string())
    );
    restore_ok(&stack.cli, id_of(&dump), dst, DB, &[]);
    assert_eq!(comment(&target), source);
    stack.stop_clean(&[]).await;
}
