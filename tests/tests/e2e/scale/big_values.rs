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

/// `role@database=md5/bytes` of every setting of the role or the database,
/// one a line.
fn settings(cluster: &PgCluster) -> String {
    cluster
        .query(
            "postgres",
            &format!(
                "SELECT string_agg(line, E'\\n' ORDER BY line COLLATE \"C\")
                   FROM (SELECT coalesce(r.rolname, '-') || '@' || coalesce(d.datname, '-') || '='
                                || md5(array_to_string(s.setconfig, '|')) || '/'
                                || octet_length(array_to_string(s.setconfig, '|')) AS line
                           FROM pg_db_role_setting s
                           LEFT JOIN pg_roles r ON r.oid = s.setrole
                           LEFT JOIN pg_database d ON d.oid = s.setdatabase
                          WHERE r.rolname = '{ROLE}' OR d.datname = '{DB}') x"
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
/// must succeed) and returns the stack and the catalog row.
async fn dumped(worker: &str) -> (Stack, serde_json::Value) {
    let stack = Stack::start(worker).await;
    create_big_values(&stack.source);
    let src = add_instance(&stack.cli, "src", stack.source.port, worker, None);
    let job = add_job(&stack.cli, src, DB);
    let dump = timed("dump", || dump_and_show(&stack.cli, job));
    (stack, dump)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabyte_settings_are_captured_whole() {
    let (stack, dump) = dumped("w-bigset").await;
    let source = settings(&stack.source);
    assert_eq!(source.lines().count(), 3, "{source}");
    assert!(
        source.contains(&format!("/{}", "myapp.big=role in db ".len() + MIB)),
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
        role["sql"].as_array().unwrap().iter().any(|s| {
            let s = s.as_str().unwrap();
            s.len() > MIB && s.contains("SET myapp.big")
        }),
        "the role's 1 MiB setting is not among its statements"
    );
    stack.stop_clean(&[]).await;
}

/// The settings and the comment come back on another cluster (1 MiB
/// statements are more than one argument of psql's command line may hold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabyte_settings_and_comment_survive_a_restore() {
    let (stack, dump) = dumped("w-bigrestore").await;
    let target = PgCluster::start(PG_MAJOR).unwrap();
    let dst = add_instance(&stack.cli, "dst", target.port, "w-bigrestore", None);
    let (settings_before, comment_before) = (settings(&stack.source), comment(&stack.source));
    assert_eq!(
        comment_before.split('/').nth(1),
        Some(&*(MIB + "comment ".len()).to_string())
    );
    restore_ok(&stack.cli, id_of(&dump), dst, DB, &[]);
    assert_eq!(settings(&target), settings_before);
    assert_eq!(comment(&target), comment_before);
    stack.stop_clean(&[]).await;
}
