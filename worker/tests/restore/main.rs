//! The restore runner against real throwaway clusters (no coordinator):
//! dumps are taken with the real dump runner into a store, then restored
//! onto another cluster with hand-built `RestoreSpec`s, and the result is
//! compared with the source (normalised schema-only dumps, row counts and
//! per-table checksums, database properties, roles).
// Test set-up helpers outside #[test] functions unwrap too: a failure there
// is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod cancel;
mod cluster;
mod failure;
mod fidelity;
mod policies;
mod roles_off;
mod schema;
mod slots;
mod wide;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use pgsnapman_proto::v1::{
    DumpFinished, DumpFormat, DumpSpec, DumpType, ExistingDatabase, InstanceConnection,
    RestoreFinished, RestoreSpec, RestoreStatus, RestoreTarget, RestoreType, event,
};
use pgsnapman_tests::PgCluster;
use pgsnapman_tests::cluster::conninfo_dbname;
use pgsnapman_worker::outbox::Outbox;
use pgsnapman_worker::progress::TaskProgress;
use pgsnapman_worker::runner::{DumpResult, Runner};
use tokio_util::sync::CancellationToken;

/// A worker without a coordinator: runner, store, outbox.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub runner: Runner,
    pub outbox: Arc<Outbox>,
}

pub async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let runner = common::runner(dir.path()).await;
    let state = pgsnapman_worker::state::State::open(&dir.path().join("state")).unwrap();
    let outbox = Arc::new(Outbox::open(&state).unwrap());
    Env {
        dir,
        runner,
        outbox,
    }
}

pub fn instance(pg: &PgCluster) -> InstanceConnection {
    InstanceConnection {
        instance_id: i64::from(pg.port),
        name: format!("pg-{}", pg.port),
        host: "127.0.0.1".into(),
        port: u32::from(pg.port),
        user: "postgres".into(),
        password: String::new(),
        maintenance_db: "postgres".into(),
        status: 1,
        ..InstanceConnection::default()
    }
}

/// Dumps `db` of `pg` with the real dump runner; panics unless it succeeds.
pub async fn dump(
    env: &Env,
    pg: &PgCluster,
    db: &str,
    dump_type: DumpType,
    format: DumpFormat,
    parallel_jobs: u32,
) -> DumpFinished {
    dump_with(&env.runner, pg, db, dump_type, format, parallel_jobs).await
}

/// `dump` with any runner.
pub async fn dump_with(
    runner: &Runner,
    pg: &PgCluster,
    db: &str,
    dump_type: DumpType,
    format: DumpFormat,
    parallel_jobs: u32,
) -> DumpFinished {
    let spec = DumpSpec {
        job_id: 1,
        instance: Some(instance(pg)),
        database: db.into(),
        schema: String::new(),
        dump_type: dump_type as i32,
        format: format as i32,
        extra_options: vec![],
        parallel_jobs,
        pause_replay: false,
        on_demand: false,
        script: None,
    };
    match runner
        .dump(None, &spec, &CancellationToken::new(), Arc::default())
        .await
    {
        DumpResult::Finished(f) if f.succeeded => *f,
        other => panic!("dump failed: {other:?}"),
    }
}

static RUN_ID: AtomicI64 = AtomicI64::new(100);

/// A restore target with role handling on and every other setting at its
/// default.
pub fn to(database: &str) -> RestoreTarget {
    RestoreTarget {
        database: database.into(),
        roles: true,
        ..RestoreTarget::default()
    }
}

pub fn with(mut t: RestoreTarget, ty: RestoreType, policy: ExistingDatabase) -> RestoreTarget {
    t.restore_type = ty as i32;
    t.existing_database = policy as i32;
    t
}

/// A spec restoring `dump` onto `pg` as `target` says (a new run id).
pub fn spec(dump: &DumpFinished, pg: &PgCluster, target: RestoreTarget) -> RestoreSpec {
    RestoreSpec {
        run_id: RUN_ID.fetch_add(1, Ordering::Relaxed),
        restore_job_id: 0,
        dump_uuid: dump.dump_uuid.clone(),
        source_database: dump.database.clone(),
        source_schema: dump.schema.clone(),
        dump_type: dump.dump_type,
        format: dump.format,
        dump_server_version: dump.server_version.clone(),
        dump_client_version: dump.client_version.clone(),
        restore_metadata_json: dump.restore_metadata_json.clone(),
        target: Some(RestoreTarget {
            instance_id: i64::from(pg.port),
            ..target
        }),
        target_instance: Some(instance(pg)),
        dump_worker_name: String::new(),
        script: None,
        dump_store: None,
    }
}

/// What a restore reported: its end (None: cancelled) and its log.
pub struct Restored {
    pub finished: Option<RestoreFinished>,
    pub log: Vec<String>,
    pub progress: (u64, u64),
    pub secs: f64,
}

impl Restored {
    pub fn status(&self) -> RestoreStatus {
        self.finished
            .as_ref()
            .map_or(RestoreStatus::Unspecified, |f| f.status())
    }

    /// Panics with the log unless the restore ended with `status`.
    pub fn expect(&self, status: RestoreStatus) -> &RestoreFinished {
        let f = self.finished.as_ref().unwrap_or_else(|| {
            panic!(
                "the restore reported nothing; log:\n{}",
                self.log.join("\n")
            )
        });
        assert_eq!(
            f.status(),
            status,
            "error: {}\nlog:\n{}",
            f.error,
            self.log.join("\n")
        );
        f
    }

    pub fn logged(&self, text: &str) -> bool {
        self.log.iter().any(|l| l.contains(text))
    }
}

/// Runs a restore and collects its log lines from the outbox (then
/// removes them).
pub async fn restore_with(env: &Env, spec: &RestoreSpec, cancel: &CancellationToken) -> Restored {
    let progress = TaskProgress::default();
    let clock = Instant::now();
    let finished = pgsnapman_worker::restore::restore(
        &env.runner,
        Arc::clone(&env.outbox),
        None,
        spec,
        cancel,
        &progress,
    )
    .await;
    let secs = clock.elapsed().as_secs_f64();
    let events = env.outbox.oldest(100_000).unwrap();
    let mut log = Vec::new();
    for e in &events {
        if let Some(event::Body::RestoreLog(l)) = &e.body {
            assert_eq!(l.run_id, spec.run_id);
            log.push(format!("[{}] {}", l.level().as_str_name(), l.text));
        }
    }
    if let Some(last) = events.last() {
        env.outbox
            .delete_up_to(uuid::Uuid::parse_str(&last.event_id).unwrap())
            .unwrap();
    }
    eprintln!(
        "restore run {} ({:.1} s):\n  {}",
        spec.run_id,
        secs,
        log.join("\n  ")
    );
    Restored {
        finished,
        log,
        progress: (
            progress.done.load(Ordering::Relaxed),
            progress.total.load(Ordering::Relaxed),
        ),
        secs,
    }
}

pub async fn restore(env: &Env, spec: &RestoreSpec) -> Restored {
    restore_with(env, spec, &CancellationToken::new()).await
}

/// `pg_dump --schema-only` of `db` without comments, SET lines and
/// `\restrict` keys.
pub fn normalized_schema(pg: &PgCluster, db: &str) -> String {
    output_ok(
        Command::new(pg.bindir.join("pg_dump"))
            .args(["--schema-only", "-U", "postgres", "-h"])
            .arg(pg.socket_dir())
            .args(["-p", &pg.port.to_string(), "-d", &conninfo_dbname(db)]),
    )
    .lines()
    .filter(|l| {
        !(l.is_empty()
            || l.starts_with("--")
            || l.starts_with("SET ")
            || l.starts_with("SELECT pg_catalog.set_config")
            || l.starts_with("\\restrict")
            || l.starts_with("\\unrestrict"))
    })
    .collect::<Vec<_>>()
    .join("\n")
}

/// Row count and md5 of the ordered rows of every table and materialized
/// view of `db`.
pub fn checksums(pg: &PgCluster, db: &str) -> BTreeMap<String, String> {
    let tables = pg
        .query(
            db,
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname <> 'information_schema' \
             AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
        )
        .unwrap();
    tables
        .lines()
        .map(|t| {
            let sum = pg
                .query(
                    db,
                    &format!(
                        "SELECT count(*) || ':' || coalesce(md5(string_agg(row__::text, E'\\n' ORDER BY row__::text)), '') FROM {t} row__"
                    ),
                )
                .unwrap();
            (t.to_string(), sum)
        })
        .collect()
}

/// Runs `cmd`; its stdout, or a panic with its stderr.
pub fn output_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Panics unless `pg` has no database whose name says pgsnapman made it
/// (temporary, transient).
pub fn assert_no_temporary_databases(pg: &PgCluster) {
    let left = pgsnapman_databases(pg);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Databases whose name says pgsnapman made them.
pub fn pgsnapman_databases(pg: &PgCluster) -> Vec<String> {
    pg.query(
        "postgres",
        "SELECT datname FROM pg_database WHERE datname LIKE '%pgsnapman%' ORDER BY 1",
    )
    .unwrap()
    .lines()
    .map(str::to_string)
    .collect()
}

/// Files in the spool and tmp directories (should be none after a run).
pub fn loose_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["spool", "tmp"] {
        let mut stack = vec![dir.join(sub)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                out.push(e.path().to_string_lossy().into_owned());
                if e.path().is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    out
}

/// A database's owner, encoding, locale, connection settings, sorted ACL
/// and settings, as one comparable text.
pub fn database_properties(pg: &PgCluster, db: &str) -> String {
    let lit = format!("'{}'", db.replace('\'', "''"));
    pg.query(
        "postgres",
        &format!(
            "SELECT concat_ws(' | ', pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, \
             d.datctype, d.datconnlimit, d.datallowconn, \
             (SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END \
                     || '=' || a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END AS x \
              FROM aclexplode(d.datacl) a) acl), \
             (SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT coalesce(pg_get_userbyid(NULLIF(s.setrole, 0)), '-') || ':' || c AS x \
              FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = d.oid) st)) \
             FROM pg_database d WHERE d.datname = {lit}"
        ),
    )
    .unwrap()
}

/// A session connected to `db` until dropped (to see sessions ended).
pub struct Session(std::process::Child);

impl Session {
    pub fn open(pg: &PgCluster, db: &str) -> Self {
        let mut cmd = pg.psql_cmd(db);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = cmd.spawn().unwrap();
        Session(child)
    }

    pub fn send(&mut self, sql: &str) {
        use std::io::Write;
        let stdin = self.0.stdin.as_mut().unwrap();
        stdin.write_all(sql.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (at most 60 s) until `sql` on `db` returns something other than
/// "0" or "".
pub async fn wait_for(pg: &PgCluster, db: &str, sql: &str, what: &str) {
    pgsnapman_tests::wait::until(what, std::time::Duration::from_secs(60), || async {
        let out = pg.query(db, sql).unwrap_or_default();
        (out != "0" && !out.is_empty()).then_some(())
    })
    .await;
}
