//! What pg_dump leaves out of a database dump is captured with it (issue 6,
//! item 2): owner, encoding, locale, tablespace, connection limit, settings,
//! the database ACL and exactly the roles the dump references, with their
//! memberships — odd names quoted right, unrelated roles left out.
use serde_json::Value;

use pgsnapman_tests::cluster::quote_ident;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_dump_captures_what_a_restore_elsewhere_needs() {
    let stack = Stack::start("w-meta").await;
    let src = &stack.source;
    // A tablespace directory the cluster's OS user owns.
    let ts_dir = pgsnapman_tests::shared_tempdir("pgsnapman-ts-");
    if nix::unistd::geteuid().is_root() {
        let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        std::os::unix::fs::chown(ts_dir.path(), Some(pg.uid.as_raw()), Some(pg.gid.as_raw()))
            .unwrap();
    }
    let owner = "Röle \"one\".x";
    let two = "role two";
    let db = "Méta \"db\" Ü.x";
    let (o, t, d) = (quote_ident(owner), quote_ident(two), quote_ident(db));
    src.script(
        "postgres",
        &format!(
            "CREATE ROLE {o} LOGIN CONNECTION LIMIT 3;
             CREATE ROLE {t};
             CREATE ROLE reader;
             CREATE ROLE \"Parent Group\";
             CREATE ROLE grandparent;
             CREATE ROLE unrelated_role;
             GRANT grandparent TO \"Parent Group\";
             GRANT \"Parent Group\" TO {t} WITH ADMIN OPTION;
             ALTER ROLE {t} SET statement_timeout = '5min';
             CREATE TABLESPACE \"tbl space\" LOCATION '{}';
             CREATE DATABASE {d} OWNER {o} ENCODING LATIN1 LC_COLLATE 'C' LC_CTYPE 'C'
                 TEMPLATE template0 TABLESPACE \"tbl space\" CONNECTION LIMIT 7;
             ALTER DATABASE {d} SET work_mem = '8MB';
             ALTER DATABASE {d} SET search_path = \"$user\", public, \"Odd \"\"s\"\"\";
             ALTER ROLE reader IN DATABASE {d} SET work_mem = '16MB';
             REVOKE ALL ON DATABASE {d} FROM PUBLIC;
             GRANT CONNECT, TEMP ON DATABASE {d} TO {t};
             GRANT CREATE ON DATABASE {d} TO reader WITH GRANT OPTION;",
            ts_dir.path().display()
        ),
    )
    .unwrap();
    src.script(
        db,
        &format!(
            "CREATE TABLE t (id int); ALTER TABLE t OWNER TO {t}; GRANT SELECT ON t TO reader;"
        ),
    )
    .unwrap();

    let inst = add_instance(&stack.cli, "src", src.port, "w-meta", None);
    let job = add_job(&stack.cli, inst, db);
    let task = wait_task_done(&stack.cli, dump_now(&stack.cli, job)).await;
    assert_eq!(task["state"], "SUCCEEDED", "{task}");
    let dump = stack
        .cli
        .json(&[
            "catalog",
            "show",
            &task["dump_id"].as_i64().unwrap().to_string(),
        ])
        .unwrap();
    let m = &dump["restore_metadata"];
    assert_eq!(m["format_version"], 1, "{dump}");
    assert_eq!(m["database"], db);
    assert_eq!(m["owner"], owner);
    assert_eq!(m["encoding"], "LATIN1");
    assert_eq!(m["collate"], "C");
    assert_eq!(m["ctype"], "C");
    assert_eq!(m["locale_provider"], "libc");
    assert_eq!(m["tablespace"], "tbl space");
    assert_eq!(m["connection_limit"], 7);
    assert_eq!(m["acl_is_default"], false);

    // ACL: no PUBLIC entry (revoked), the grants with their grant option.
    let acl: Vec<(Value, String, bool)> = m["acl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["grantee"].clone(),
                a["privilege"].as_str().unwrap().to_string(),
                a["grantable"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(
        acl.iter().all(|(g, _, _)| !g.is_null()),
        "PUBLIC kept a privilege: {acl:?}"
    );
    for (who, what, grantable) in [
        (two, "CONNECT", false),
        (two, "TEMPORARY", false),
        ("reader", "CREATE", true),
    ] {
        assert!(
            acl.contains(&(Value::from(who), what.to_string(), grantable)),
            "{who} {what} missing: {acl:?}"
        );
    }

    // Settings: database-wide and per role in this database, list values kept.
    let settings = m["settings"].as_array().unwrap();
    let find = |role: Value, name: &str| {
        settings
            .iter()
            .find(|s| s["role"] == role && s["name"] == name)
            .unwrap_or_else(|| panic!("setting {name} for {role} missing: {settings:?}"))
            .clone()
    };
    assert_eq!(find(Value::Null, "work_mem")["value"], "8MB");
    assert_eq!(find(Value::from("reader"), "work_mem")["value"], "16MB");
    assert_eq!(
        find(Value::Null, "search_path")["sql_value"],
        "\"$user\", public, \"Odd \"\"s\"\"\""
    );

    // Roles: exactly the referenced ones and what they are members of.
    let roles = m["roles"].as_array().unwrap();
    let names: Vec<&str> = roles
        .iter()
        .filter(|r| r["predefined"] == false)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let mut expected = vec![owner, two, "reader", "Parent Group", "grandparent"];
    expected.sort_unstable();
    let mut got = names.clone();
    got.sort_unstable();
    assert_eq!(got, expected, "{roles:?}");
    assert!(!names.contains(&"unrelated_role"));
    let role = |n: &str| roles.iter().find(|r| r["name"] == n).unwrap();
    let two_sql: Vec<&str> = role(two)["sql"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(two_sql[0], "CREATE ROLE \"role two\";");
    assert!(
        two_sql
            .iter()
            .any(|s| s.contains("SET statement_timeout TO '5min'")),
        "{two_sql:?}"
    );
    assert_eq!(
        role(two)["member_of"][0]["sql"],
        "GRANT \"Parent Group\" TO \"role two\" WITH ADMIN OPTION;"
    );
    assert_eq!(role("Parent Group")["member_of"][0]["role"], "grandparent");
    assert_eq!(
        role(owner)["sql"][0],
        "CREATE ROLE \"Röle \"\"one\"\".x\";",
        "quoted as Postgres quotes it"
    );
    assert!(role(owner)["sql"][1].as_str().unwrap().contains("LOGIN"));

    // The rendered statements really run: replay them on a fresh cluster.
    let other = pgsnapman_tests::PgCluster::start(PG_MAJOR).unwrap();
    let mut script = String::new();
    for r in roles.iter().filter(|r| r["predefined"] == false) {
        for s in r["sql"].as_array().unwrap() {
            script.push_str(s.as_str().unwrap());
            script.push('\n');
        }
    }
    for r in roles {
        for g in r["member_of"].as_array().unwrap() {
            script.push_str(g["sql"].as_str().unwrap());
            script.push('\n');
        }
    }
    other.script("postgres", &script).unwrap();
    let members = other
        .query(
            "postgres",
            "SELECT string_agg(pg_get_userbyid(roleid) || '>' || pg_get_userbyid(member), ',' ORDER BY 1) FROM pg_auth_members",
        )
        .unwrap();
    assert!(members.contains("Parent Group>role two"), "{members}");
    assert!(members.contains("grandparent>Parent Group"), "{members}");
    stack.stop_clean(&[]).await;
}

/// `COMMENT ON DATABASE` is not in a database dump: it travels in the
/// restore metadata and a restore into a new database sets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_comment_survives_a_restore_into_a_new_database() {
    let stack = Stack::start("w-comment").await;
    let src = &stack.source;
    let db = "commented db";
    src.create_database(db).unwrap();
    // Quotes, a backslash, unicode, a newline, and 1 MB: more than psql's
    // captured output used to keep (64 KiB) and more than one argv entry
    // may hold (128 KiB).
    let comment = format!(
        "it's \"quoted\" \\ ünïcødé 🐘\nline two {}",
        "0123456789abcdef".repeat(65_536)
    );
    src.script(
        "postgres",
        &format!(
            "COMMENT ON DATABASE {} IS '{}'",
            quote_ident(db),
            comment.replace('\'', "''")
        ),
    )
    .unwrap();
    let inst = add_instance(&stack.cli, "src", src.port, "w-comment", None);
    let job = add_job(&stack.cli, inst, db);
    let task = wait_task_done(&stack.cli, dump_now(&stack.cli, job)).await;
    assert_eq!(task["state"], "SUCCEEDED", "{task}");
    let dump = task["dump_id"].as_i64().unwrap().to_string();
    let restored = stack
        .cli
        .run(&[
            "restore",
            "now",
            "--dump",
            &dump,
            "--to-instance",
            &inst.to_string(),
            "--to-database",
            "comment copy",
            "--wait",
        ])
        .unwrap();
    assert!(restored.success(), "{restored:?}");
    let got = src
        .query(
            "postgres",
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'comment copy'",
        )
        .unwrap();
    assert!(
        got == comment,
        "comment differs: {} bytes, expected {}",
        got.len(),
        comment.len()
    );
    stack.stop_clean(&[]).await;
}
