//! Role handling off: no role is created, no owner or privilege restored;
//! the database and everything in it belong to the owner the target names,
//! and the database takes connections — from a custom archive restored with
//! -j (spooled) and from a plain dump (owners and grants filtered out).
use pgsnapman_proto::v1::{DumpFormat, DumpType, RestoreStatus};
use pgsnapman_tests::PgCluster;

use super::*;

const DB: &str = "ro db";

fn owners(pg: &PgCluster, db: &str) -> String {
    pg.query(
        db,
        "SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ',') FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'Other Schema')",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_off_gives_everything_to_the_named_owner() {
    let src = PgCluster::start(15).unwrap();
    let dst = PgCluster::start(15).unwrap();
    src.script(
        "postgres",
        "CREATE ROLE \"src owner\"; CREATE ROLE \"src reader\"; CREATE DATABASE \"ro db\" OWNER \"src owner\";
         REVOKE CONNECT ON DATABASE \"ro db\" FROM PUBLIC; ALTER DATABASE \"ro db\" SET work_mem = '7MB';",
    )
    .unwrap();
    src.script(
        DB,
        "CREATE SCHEMA \"Other Schema\" AUTHORIZATION \"src owner\";
         CREATE TABLE \"Other Schema\".t (id int PRIMARY KEY);
         INSERT INTO \"Other Schema\".t SELECT generate_series(1, 3000);
         CREATE TABLE public.u AS SELECT g AS id, 'x' || g AS v FROM generate_series(1, 3000) g;
         ALTER TABLE public.u OWNER TO \"src owner\";
         GRANT SELECT ON public.u TO \"src reader\";
         CREATE TABLE public.words (w text);
         INSERT INTO public.words VALUES ('GRANT SELECT ON u TO x;'), ('ALTER TABLE u OWNER TO x;');",
    )
    .unwrap();
    dst.query("postgres", "CREATE ROLE \"New Owner\" LOGIN")
        .unwrap();
    let env = env().await;
    let custom = dump(&env, &src, DB, DumpType::Full, DumpFormat::Custom, 0).await;
    let plain = dump(&env, &src, DB, DumpType::Full, DumpFormat::Plain, 0).await;
    let off = |db: &str| RestoreTarget {
        roles: false,
        owner: "New Owner".into(),
        parallel_jobs: 2,
        ..to(db)
    };
    let no_roles = "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'src %'";

    for (d, db) in [(&custom, "from custom"), (&plain, "from plain")] {
        let r = restore(&env, &spec(d, &dst, off(db))).await;
        r.expect(RestoreStatus::Succeeded);
        if d.format == DumpFormat::Custom as i32 {
            assert!(r.logged("running pg_restore -j 2"), "{:?}", r.log);
        } else {
            assert!(
                r.logged("owner or privilege statement(s) left out"),
                "{:?}",
                r.log
            );
        }
        assert_eq!(dst.query("postgres", no_roles).unwrap(), "0");
        assert_eq!(
            dst.query(
                "postgres",
                &format!("SELECT pg_get_userbyid(datdba) || ':' || datallowconn FROM pg_database WHERE datname = '{db}'")
            )
            .unwrap(),
            "New Owner:true"
        );
        assert_eq!(owners(&dst, db), "New Owner");
        assert_eq!(checksums(&dst, db), checksums(&src, DB));
        // The named owner can connect (no ACL was copied).
        let out = output_ok(
            std::process::Command::new(dst.bindir.join("psql"))
                .args(["-X", "-A", "-t", "-U", "New Owner", "-h"])
                .arg(dst.socket_dir())
                .args(["-p", &dst.port.to_string(), "-d"])
                .arg(pgsnapman_tests::cluster::conninfo_dbname(db))
                .args(["-c", "SHOW work_mem"]),
        );
        assert_eq!(out.trim(), "7MB");
    }
    // The custom archive was spooled for -j and the spool is empty again.
    assert!(loose_files(env.dir.path()).is_empty());

    // An owner that does not exist: refused before anything happens.
    let r = restore(
        &env,
        &spec(
            &custom,
            &dst,
            RestoreTarget {
                owner: "nobody".into(),
                ..off("x")
            },
        ),
    )
    .await;
    let f = r.expect(RestoreStatus::Aborted);
    assert!(f.error.contains("\"nobody\""), "{}", f.error);
    assert_no_temporary_databases(&dst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_superuser_restores_with_roles_off() {
    let src = PgCluster::start(15).unwrap();
    let dst = PgCluster::start(15).unwrap();
    src.create_database("ns db").unwrap();
    src.script(
        "ns db",
        "CREATE EXTENSION citext;
         CREATE TABLE t (id int PRIMARY KEY, name citext);
         INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, 2000) g;",
    )
    .unwrap();
    // Least privilege on the target: may create databases, nothing more.
    dst.query("postgres", "CREATE ROLE restorer LOGIN CREATEDB")
        .unwrap();
    let env = env().await;
    let d = dump(&env, &src, "ns db", DumpType::Full, DumpFormat::Custom, 0).await;
    let mut s = spec(
        &d,
        &dst,
        RestoreTarget {
            roles: false,
            ..to("ns db")
        },
    );
    if let Some(i) = s.target_instance.as_mut() {
        i.user = "restorer".into();
    }
    // New, then over its own earlier copy (RENAME).
    for round in 0..2 {
        s.run_id += 1000 + round;
        let r = restore(&env, &s).await;
        r.expect(RestoreStatus::Succeeded);
        assert!(r.logged("connected as \"restorer\")"), "{:?}", r.log);
    }
    assert_eq!(checksums(&dst, "ns db"), checksums(&src, "ns db"));
    assert_eq!(
        dst.query(
            "postgres",
            "SELECT string_agg(pg_get_userbyid(datdba), ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'ns db%'"
        )
        .unwrap(),
        "restorer,restorer"
    );
    assert_eq!(
        pgsnapman_databases(&dst),
        vec!["ns db_pgsnapman_bak".to_string()]
    );
}
