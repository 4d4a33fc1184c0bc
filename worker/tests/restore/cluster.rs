//! pg_dumpall scripts through psql with ON_ERROR_STOP: a GLOBALS dump on
//! an empty cluster recreates the roles with their attributes and
//! memberships (the `CREATE ROLE` of the role the dump ran as is left out,
//! and the restoring role is not altered); a CLUSTER dump then adds the
//! databases; a second run fails clearly because they exist.
use pgsnapman_proto::v1::{DumpFormat, DumpType, RestoreStatus};
use pgsnapman_tests::PgCluster;

use super::*;

const ROLES: &str = "SELECT string_agg(format('%s:%s:%s:%s', rolname, rolcanlogin, rolcreatedb, rolconnlimit), ',' ORDER BY rolname) \
                     FROM pg_roles WHERE rolname !~ '^pg_'";
const MEMBERS: &str = "SELECT string_agg(format('%s>%s:%s', pg_get_userbyid(member), pg_get_userbyid(roleid), admin_option), ',' ORDER BY pg_get_userbyid(member), pg_get_userbyid(roleid)) \
                       FROM pg_auth_members WHERE pg_get_userbyid(roleid) !~ '^pg_'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globals_and_cluster_dumps_restore_onto_an_empty_cluster() {
    let src = PgCluster::start(15).unwrap();
    let dst = PgCluster::start(15).unwrap();
    src.script(
        "postgres",
        r#"
CREATE ROLE "Odd ""Role"" ü" LOGIN CREATEDB CONNECTION LIMIT 3;
CREATE ROLE team NOLOGIN;
CREATE ROLE "member.one" LOGIN;
GRANT team TO "member.one";
GRANT team TO "Odd ""Role"" ü" WITH ADMIN OPTION;
CREATE DATABASE "c db" OWNER "Odd ""Role"" ü";
"#,
    )
    .unwrap();
    src.script(
        "c db",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 500) g;",
    )
    .unwrap();
    let env = env().await;
    let globals = dump(&env, &src, "", DumpType::Globals, DumpFormat::Plain, 0).await;
    let r = restore(&env, &spec(&globals, &dst, to(""))).await;
    r.expect(RestoreStatus::Succeeded);
    assert_eq!(
        src.query("postgres", ROLES).unwrap(),
        dst.query("postgres", ROLES).unwrap()
    );
    assert_eq!(
        src.query("postgres", MEMBERS).unwrap(),
        dst.query("postgres", MEMBERS).unwrap()
    );
    assert!(
        r.logged("CREATE ROLE left out for roles the target has: postgres"),
        "{:?}",
        r.log
    );
    assert!(r.logged("ALTER ROLE … WITH of \"postgres\""), "{:?}", r.log);

    // A whole cluster: the databases come too (roles exist by now).
    let cluster = dump(&env, &src, "", DumpType::Cluster, DumpFormat::Plain, 0).await;
    let r = restore(&env, &spec(&cluster, &dst, to(""))).await;
    r.expect(RestoreStatus::Succeeded);
    assert_eq!(checksums(&dst, "c db"), checksums(&src, "c db"));
    assert_eq!(
        dst.query(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'c db'"
        )
        .unwrap(),
        "Odd \"Role\" ü"
    );
    // Again: the database exists, psql stops at that error, and says so.
    let r = restore(&env, &spec(&cluster, &dst, to(""))).await;
    let f = r.expect(RestoreStatus::Failed);
    assert!(f.error.contains("already exists"), "{}", f.error);
    assert!(f.error.contains("not atomic"), "{}", f.error);
    assert!(loose_files(env.dir.path()).is_empty());
}
