//! A database whose tables are granted to 2,000 roles (one per tenant, all
//! members of one group): the dump captures every role in its restore
//! metadata, and a restore onto another cluster creates them and brings
//! every grant and membership back.
use std::collections::BTreeSet;

use pgsnapman_tests::PgCluster;

use super::{restore_ok, timed};
use crate::common::*;

const ROLES: usize = 2_000;
const TABLES: usize = 40;
const GROUP: &str = "all \"tenants\"";

fn tenant(i: usize) -> String {
    format!("tenant {i:04}")
}

/// `grants:grantees:members` of the tenant tables and the group on `cluster`.
fn grant_counts(cluster: &PgCluster, db: &str) -> String {
    cluster
        .query(
            db,
            "SELECT (SELECT count(*) || ':' || count(DISTINCT a.grantee)
                       FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
                      WHERE c.relname LIKE 'shard\\_%' AND c.relkind = 'r'
                        AND a.grantee <> c.relowner)
                 || ':' ||
                   (SELECT count(*) FROM pg_auth_members
                     WHERE roleid = (SELECT oid FROM pg_roles WHERE rolname = 'all \"tenants\"'))",
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_granted_to_2000_roles_dumps_and_restores_elsewhere() {
    let started = std::time::Instant::now();
    let stack = Stack::start("w-roles").await;
    let target = PgCluster::start(PG_MAJOR).unwrap();
    let db = "tenants";
    stack.source.create_database(db).unwrap();
    // Two privileges per role, spread over 40 tables (one table granted to
    // 2,000 roles would not fit in a pg_class row).
    let setup = format!(
        "CREATE ROLE {group};
         DO $$ BEGIN
           FOR i IN 1..{ROLES} LOOP
             EXECUTE format('CREATE ROLE %I IN ROLE {group}', 'tenant ' || lpad(i::text, 4, '0'));
           END LOOP;
           FOR t IN 0..{TABLES} - 1 LOOP
             EXECUTE format('CREATE TABLE shard_%s (id int PRIMARY KEY, tenant int)', t);
             EXECUTE format('INSERT INTO shard_%s SELECT g, g FROM generate_series(1, 25) g', t);
           END LOOP;
           FOR i IN 1..{ROLES} LOOP
             EXECUTE format('GRANT SELECT, INSERT ON shard_%s TO %I', i % {TABLES},
                            'tenant ' || lpad(i::text, 4, '0'));
           END LOOP;
         END $$;",
        group = pgsnapman_tests::cluster::quote_ident(GROUP)
    );
    timed("create 2000 roles and their grants", || {
        stack.source.script(db, &setup).unwrap()
    });
    let expected = format!("{}:{ROLES}:{ROLES}", 2 * ROLES);
    assert_eq!(grant_counts(&stack.source, db), expected);

    let src = add_instance(&stack.cli, "src", stack.source.port, "w-roles", None);
    let dst = add_instance(&stack.cli, "dst", target.port, "w-roles", None);
    let job = add_job(&stack.cli, src, db);
    let dump = timed("dump", || dump_and_show(&stack.cli, job));
    assert_eq!(dump["status"], "SUCCEEDED", "{}", dump["status"]);

    // The catalog's restore metadata names every tenant and the group.
    let roles: BTreeSet<String> = dump["restore_metadata"]["roles"]
        .as_array()
        .expect("roles in the restore metadata")
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    let mut wanted: BTreeSet<String> = (1..=ROLES).map(tenant).collect();
    wanted.insert(GROUP.to_string());
    let missing: Vec<&String> = wanted.difference(&roles).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} role(s) missing from the metadata, e.g. {missing:?}",
        wanted.difference(&roles).count()
    );

    // Onto a cluster without any of them: created, with every grant.
    restore_ok(&stack.cli, id_of(&dump), dst, db, &[]);
    assert_eq!(grant_counts(&target, db), expected);
    let tenants = target
        .query(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tenant %'",
        )
        .unwrap();
    assert_eq!(tenants, ROLES.to_string());
    let rows = target.query(db, "SELECT count(*) FROM shard_7").unwrap();
    assert_eq!(rows, "25");
    stack.stop_clean(&[]).await;
    super::took("roles: the whole test", started);
}
