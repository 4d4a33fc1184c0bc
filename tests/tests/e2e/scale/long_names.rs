//! Every name at PostgreSQL's 63-byte limit, with quotes, spaces, dots and
//! 3-byte characters: database, schema, table, column and role, an instance
//! name and a job's database given through `pgsnap`. Dumped, listed, and
//! restored with every policy that derives a name (temporary database,
//! RENAME's backup, DROP's transient name, a schema's backup): derived names
//! stay within 63 bytes, whole characters, and never collide.
use pgsnapman_tests::PgCluster;
use pgsnapman_tests::cluster::quote_ident;

use super::{database_names, restore_ok};
use crate::common::*;

/// `prefix` filled up with '€' (3 bytes) and then 'x' to exactly 63 bytes.
fn at_limit(prefix: &str) -> String {
    let mut s = prefix.to_string();
    while s.len() + '€'.len_utf8() <= 63 {
        s.push('€');
    }
    while s.len() < 63 {
        s.push('x');
    }
    assert_eq!(s.len(), 63, "{s}");
    s
}

/// Rows and the sum of the 63-byte column of the 63-byte table.
fn rows(cluster: &PgCluster, db: &str, schema: &str, table: &str, column: &str) -> String {
    cluster
        .query(
            db,
            &format!(
                "SELECT count(*) || '/' || sum({}) FROM {}.{}",
                quote_ident(column),
                quote_ident(schema),
                quote_ident(table)
            ),
        )
        .unwrap()
}

/// Databases whose names contain `pgsnapman`.
fn derived_databases(cluster: &PgCluster) -> Vec<String> {
    database_names(cluster)
        .into_iter()
        .filter(|d| d.contains("pgsnapman"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_at_the_63_byte_limit_dump_list_and_restore() {
    let started = std::time::Instant::now();
    let stack = Stack::start("w-names").await;
    let other = PgCluster::start(PG_MAJOR).unwrap();
    let db = at_limit("Db \"q\" .x ");
    let schema = at_limit("Sch \"s\".ma ");
    let table = at_limit("Tab le.\"t\" ");
    let column = at_limit("col \"c\". ");
    let role = at_limit("Rôle \"r\". ");
    let instance = at_limit("inst \"i\". ");
    let (d, s, t, c, r) = (
        quote_ident(&db),
        quote_ident(&schema),
        quote_ident(&table),
        quote_ident(&column),
        quote_ident(&role),
    );
    let src = &stack.source;
    src.script(
        "postgres",
        &format!("CREATE ROLE {r}; CREATE DATABASE {d} OWNER {r};"),
    )
    .unwrap();
    src.script(
        &db,
        &format!(
            "CREATE SCHEMA {s} AUTHORIZATION {r};
             CREATE TABLE {s}.{t} ({c} int PRIMARY KEY, note text);
             ALTER TABLE {s}.{t} OWNER TO {r};
             INSERT INTO {s}.{t} SELECT g, 'row ' || g FROM generate_series(1, 100) g;
             ALTER ROLE {r} IN DATABASE {d} SET work_mem = '5MB';"
        ),
    )
    .unwrap();
    let original = rows(src, &db, &schema, &table, &column);
    assert_eq!(original, "100/5050");

    // The instance and the job's database through pgsnap; the catalog lists
    // the dump under the whole name.
    let inst = add_instance(&stack.cli, &instance, src.port, "w-names", None);
    let shown = stack
        .cli
        .json(&["instance", "show", &inst.to_string()])
        .unwrap();
    assert_eq!(shown["name"], instance.as_str());
    let job = add_job(&stack.cli, inst, &db);
    let dump = dump_and_show(&stack.cli, job);
    assert_eq!(dump["database"], db.as_str());
    assert_eq!(dump["restore_metadata"]["owner"], role.as_str());
    let listed = catalog_of_job(&stack.cli, job);
    assert_eq!(listed[0]["database"], db.as_str(), "{listed:?}");
    let dump = id_of(&dump);
    let check = |cluster: &PgCluster, target: &str| {
        assert_eq!(rows(cluster, target, &schema, &table, &column), original);
    };

    // A missing target of 63 bytes: restored under a derived temporary name,
    // then renamed. Two targets that differ only in their last byte.
    let a = at_limit("Tgt \"a\". .");
    assert!(a.ends_with("xx"), "{a}");
    let b = format!("{}y", &a[..62]);
    assert_ne!(a, b);
    for target in [&a, &b] {
        restore_ok(&stack.cli, dump, inst, target, &[]);
        check(src, target);
    }
    assert!(
        derived_databases(src).is_empty(),
        "{:?}",
        database_names(src)
    );

    // RENAME, twice each: the previous database is kept under a backup name
    // of at most 63 bytes, one per target.
    let marker = |target: &str, n: i32| {
        src.query(target, &format!("INSERT INTO {s}.{t} ({c}) VALUES ({n})"))
            .unwrap();
    };
    for (target, n) in [(&a, -1), (&b, -2)] {
        marker(target, n);
        restore_ok(&stack.cli, dump, inst, target, &["--existing", "rename"]);
        check(src, target);
    }
    let backups = derived_databases(src);
    assert_eq!(backups.len(), 2, "one backup per target: {backups:?}");
    let mut held: Vec<String> = backups
        .iter()
        .map(|backup| {
            assert!(
                backup.len() <= 63 && backup.contains("pgsnapman_bak"),
                "{backup}"
            );
            rows(src, backup, &schema, &table, &column)
        })
        .collect();
    held.sort();
    assert_eq!(
        held,
        ["101/5048", "101/5049"],
        "the previous databases of {backups:?}"
    );

    // DROP and DROP_BEFORE: no transient database is left.
    for existing in ["drop", "drop-before"] {
        marker(&a, -3);
        restore_ok(&stack.cli, dump, inst, &a, &["--existing", existing]);
        check(src, &a);
        assert_eq!(derived_databases(src), backups, "after {existing}");
    }

    // RENAME of the 63-byte schema inside the existing database.
    marker(&a, -4);
    restore_ok(
        &stack.cli,
        dump,
        inst,
        &a,
        &["--schema", &schema, "--existing", "rename"],
    );
    check(src, &a);
    let schemas = src
        .query(
            &a,
            "SELECT string_agg(nspname, '|') FROM pg_namespace WHERE nspname LIKE '%pgsnapman_bak'",
        )
        .unwrap();
    assert!(
        !schemas.is_empty() && !schemas.contains('|') && schemas.len() <= 63,
        "one schema backup: {schemas:?}"
    );
    assert_eq!(rows(src, &a, &schemas, &table, &column), "101/5046");

    // DATA with TRUNCATE of the 63-byte table.
    marker(&a, -5);
    restore_ok(
        &stack.cli,
        dump,
        inst,
        &a,
        &["--restore-type", "data", "--existing", "truncate"],
    );
    check(src, &a);

    // Onto another cluster: the 63-byte role is created and owns the table,
    // under a database name of 21 three-byte characters.
    let euros = "€".repeat(21);
    let other_inst = add_instance(&stack.cli, "other", other.port, "w-names", None);
    restore_ok(&stack.cli, dump, other_inst, &euros, &[]);
    check(&other, &euros);
    let owner = other
        .query(
            &euros,
            &format!(
                "SELECT tableowner FROM pg_tables WHERE schemaname = '{}'",
                schema.replace('\'', "''")
            ),
        )
        .unwrap();
    assert_eq!(owner, role);
    stack.stop_clean(&[]).await;
    super::took("long names: the whole test", started);
}
