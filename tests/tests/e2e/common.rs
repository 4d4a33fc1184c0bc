//! Set-up shared by the scenarios: a catalog cluster, a coordinator on it, a
//! worker, a source cluster, and `pgsnap` helpers that return created ids.
use std::time::Duration;

use pgsnapman_tests::{
    Coordinator, CoordinatorOptions, PgCluster, Pgsnap, Worker, WorkerOptions, wait,
};
use serde_json::Value;

pub const PG_MAJOR: u32 = 15;

/// A running system: catalog + coordinator + one worker (registered and
/// connected) + one source cluster.
pub struct Stack {
    pub source: PgCluster,
    pub worker: Worker,
    pub coordinator: Coordinator,
    pub _catalog: PgCluster,
    pub cli: Pgsnap,
    /// Scratch space for extracted dumps.
    pub scratch: tempfile::TempDir,
}

impl Stack {
    pub async fn start(worker_name: &str) -> Stack {
        Self::start_with(worker_name, &[], None).await
    }

    /// `start` with extra worker settings and, if given, the worker's data
    /// directory.
    pub async fn start_with(
        worker_name: &str,
        worker_env: &[(&str, &str)],
        worker_data_dir: Option<std::path::PathBuf>,
    ) -> Stack {
        Self::start_configured(worker_name, worker_env, worker_data_dir, &[]).await
    }

    /// `start_with` plus extra coordinator settings.
    pub async fn start_configured(
        worker_name: &str,
        worker_env: &[(&str, &str)],
        worker_data_dir: Option<std::path::PathBuf>,
        coordinator_env: &[(&str, &str)],
    ) -> Stack {
        let catalog = PgCluster::start(PG_MAJOR).expect("start catalog cluster");
        let coordinator = Coordinator::start(CoordinatorOptions {
            catalog_url: Some(catalog.url("postgres")),
            env: coordinator_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .await
        .expect("start coordinator");
        let cli = coordinator.cli();
        register_worker(&cli, worker_name);
        let worker = Worker::start(WorkerOptions {
            name: worker_name.to_string(),
            coordinator: coordinator.access(),
            data_dir: worker_data_dir,
            env: worker_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .expect("start worker");
        coordinator.wait_worker_connected(worker_name).await;
        let source = PgCluster::start(PG_MAJOR).expect("start source cluster");
        Stack {
            source,
            worker,
            coordinator,
            _catalog: catalog,
            cli,
            scratch: pgsnapman_tests::shared_tempdir("pgsnapman-extract-"),
        }
    }

    /// Extracts the stored dump of a catalog row (JSON) from the worker's
    /// store and returns what pg_restore or psql reads: the directory of a
    /// DIRECTORY dump, else its one file.
    pub fn extract(&self, dump: &Value) -> std::path::PathBuf {
        extract_dump(&self.worker, dump, self.scratch.path())
    }

    /// SIGTERM to worker and coordinator, both must exit 0, and neither log
    /// may hold an ERROR line that the test did not expect.
    pub async fn stop_clean(mut self, allowed_errors: &[&str]) {
        self.worker.process.stop_clean().await;
        self.coordinator.process.stop_clean().await;
        self.worker
            .process
            .assert_no_unexpected_errors(allowed_errors);
        self.coordinator
            .process
            .assert_no_unexpected_errors(allowed_errors);
    }
}

/// See `Stack::extract`.
pub fn extract_dump(
    worker: &Worker,
    dump: &Value,
    scratch: &std::path::Path,
) -> std::path::PathBuf {
    let uuid = dump["dump_uuid"]
        .as_str()
        .expect("dump_uuid in the catalog row");
    let dir = scratch.join(uuid);
    worker
        .extract(uuid, &dir)
        .unwrap_or_else(|e| panic!("extract dump {uuid}: {e:#}"));
    if dump["format"] == "DIRECTORY" {
        return dir;
    }
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .expect("list the extracted dump")
        .map(|e| e.expect("directory entry").path())
        .collect();
    assert_eq!(files.len(), 1, "one file expected in {uuid}: {files:?}");
    files.into_iter().next().expect("one file")
}

pub fn register_worker(cli: &Pgsnap, name: &str) -> i64 {
    let w = cli
        .json(&["worker", "register", name])
        .expect("register worker");
    id_of(&w)
}

/// A source cluster with database `app`: table `t` of `rows` rows.
pub fn source_with_app(rows: u32) -> PgCluster {
    let source = PgCluster::start(PG_MAJOR).unwrap();
    source.create_database("app").unwrap();
    source
        .script(
            "app",
            &format!(
                "CREATE TABLE t (id int PRIMARY KEY, v text);
                 INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {rows}) g;"
            ),
        )
        .unwrap();
    source
}

/// A brand-new catalog, a coordinator on it and its CLI, with `worker`
/// registered there (the lost-catalog scenarios).
pub async fn fresh_catalog(worker: &str) -> (PgCluster, Coordinator, Pgsnap) {
    let catalog = PgCluster::start(PG_MAJOR).unwrap();
    let coordinator = Coordinator::start(CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        ..Default::default()
    })
    .await
    .unwrap();
    let cli = coordinator.cli();
    register_worker(&cli, worker);
    (catalog, coordinator, cli)
}

/// `pgsnap instance add` of an instance on 127.0.0.1:`port` as `postgres`
/// with `worker` as its default worker (no password option).
pub fn instance_add_args(name: &str, port: u16, worker: &str) -> Vec<String> {
    let port = port.to_string();
    [
        "instance",
        "add",
        "--name",
        name,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        "postgres",
        "--worker",
        worker,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Adds an instance for `cluster` on 127.0.0.1 (password from `password`, fed
/// on stdin) with `worker` as its default worker.
pub fn add_instance(
    cli: &Pgsnap,
    name: &str,
    port: u16,
    worker: &str,
    password: Option<&str>,
) -> i64 {
    let owned = instance_add_args(name, port, worker);
    let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let v = match password {
        Some(pw) => {
            args.push("--password-stdin");
            cli.json_with_stdin(&args, &format!("{pw}\n"))
        }
        None => cli.json(&args),
    }
    .expect("add instance");
    id_of(&v)
}

/// Adds a REPEAT FULL job for `database` that fires once a year (so only
/// ad-hoc runs happen during a test).
pub fn add_job(cli: &Pgsnap, instance: i64, database: &str) -> i64 {
    add_yearly_job(cli, instance, &["--database", database])
}

/// Adds a GLOBALS job (pg_dumpall --globals-only) for `instance` that fires
/// once a year, like [`add_job`].
pub fn add_globals_job(cli: &Pgsnap, instance: i64) -> i64 {
    add_yearly_job(cli, instance, &["--type", "globals"])
}

/// Adds a job for `instance` that fires once a year, with `what` (type,
/// database, format, …) as further `job add` arguments; the job's id.
pub fn add_yearly_job(cli: &Pgsnap, instance: i64, what: &[&str]) -> i64 {
    let instance = instance.to_string();
    let mut args = vec!["job", "add", "--instance", &instance, "--cron", "0 3 1 1 *"];
    args.extend_from_slice(what);
    id_of(&cli.json(&args).expect("add job"))
}

pub fn id_of(v: &Value) -> i64 {
    v["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no numeric id in {v}"))
}

/// Queues a dump of `job` and returns the task id.
pub fn dump_now(cli: &Pgsnap, job: i64) -> i64 {
    let t = cli
        .json(&["dump", "now", &job.to_string()])
        .expect("dump now");
    id_of(&t)
}

/// Waits until a task is in a terminal state and returns it (JSON).
pub async fn wait_task_done(cli: &Pgsnap, task: i64) -> Value {
    wait::until(
        &format!("task {task} to finish"),
        Duration::from_secs(120),
        || async move {
            let t = cli.json(&["task", "show", &task.to_string()]).ok()?;
            match t["state"].as_str() {
                Some("SUCCEEDED" | "FAILED" | "CANCELLED") => Some(t),
                _ => None,
            }
        },
    )
    .await
}

/// Runs `pgsnap dump now JOB --wait` and returns the catalog row it made
/// (`catalog show`: the job's newest row).
pub fn dump_and_show(cli: &Pgsnap, job: i64) -> Value {
    let run = cli
        .run(&["dump", "now", &job.to_string(), "--wait"])
        .unwrap();
    assert!(run.success(), "{run:?}");
    let rows = catalog_of_job(cli, job);
    let newest = rows.first().expect("a catalog row");
    cli.json(&["catalog", "show", &id_of(newest).to_string()])
        .unwrap()
}

/// `pgsnap store stats --worker WORKER` once the worker reports `dumps`
/// stored dumps (it reports after each change of its store).
pub async fn wait_store_stats(cli: &Pgsnap, worker: &str, dumps: u64) -> Value {
    wait::until(
        &format!("store stats of {dumps} dumps on {worker}"),
        Duration::from_secs(30),
        || async move {
            let s = cli.json(&["store", "stats", "--worker", worker]).ok()?;
            (s[0]["dumps"] == dumps).then_some(s)
        },
    )
    .await
}

/// All catalog rows of a job.
pub fn catalog_of_job(cli: &Pgsnap, job: i64) -> Vec<Value> {
    let v = cli
        .json(&["catalog", "list", "--job", &job.to_string()])
        .expect("catalog list");
    v.as_array().cloned().unwrap_or_default()
}

/// Command lines (argv joined by spaces) of every process on the machine.
pub fn process_command_lines() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            if !cmd.is_empty() {
                out.push((pid, cmd));
            }
        }
    }
    out
}

/// Files under `dir` (recursively) whose name ends with `suffix`.
pub fn files_with_suffix(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                found.push(p);
            }
        }
    }
    found
}

/// A session holding an ACCESS EXCLUSIVE lock on one table, so that a dump of
/// its database waits inside its run for as long as a test likes. Dropping
/// it ends the session and releases the lock.
pub struct TableLock {
    session: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl TableLock {
    /// Takes the lock and returns once it is granted.
    pub async fn hold(cluster: &PgCluster, database: &str, table: &str) -> TableLock {
        use std::io::Write;
        let mut session = cluster
            .psql_cmd(database)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the locking psql session");
        let mut stdin = session.stdin.take().expect("psql stdin");
        let sql = format!(
            "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE; SELECT 1;\n",
            pgsnapman_tests::cluster::quote_ident(table)
        );
        stdin.write_all(sql.as_bytes()).expect("send LOCK");
        stdin.flush().expect("flush LOCK");
        wait::until("the lock to be held", Duration::from_secs(30), || async {
            let n = cluster
                .query(
                    "postgres",
                    "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' \
                     AND relation IS NOT NULL AND granted",
                )
                .ok()?;
            (n != "0").then_some(())
        })
        .await;
        TableLock {
            session,
            stdin: Some(stdin),
        }
    }

    /// Waits until a pgsnapman dump on `cluster` is blocked on a lock.
    pub async fn wait_dump_blocked(cluster: &PgCluster) {
        wait::until("the dump to wait for the lock", Duration::from_secs(60), || async {
            let n = cluster
                .query(
                    "postgres",
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgsnapman%' \
                     AND wait_event_type = 'Lock'",
                )
                .ok()?;
            (n != "0").then_some(())
        })
        .await;
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        // End of input ends the session, which rolls back and unlocks.
        drop(self.stdin.take());
        for _ in 0..100 {
            if self.session.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.session.kill();
        let _ = self.session.wait();
    }
}

/// Fills `db` with tables `<prefix>0`, `<prefix>1`, … (`tables` of them) of
/// `rows` rows of realistically mixed content: text, jsonb, numeric,
/// timestamps and `random_bytes` bytes of incompressible bytea per row (about
/// `rows * (150 + 2 * random_bytes)` bytes of pg_dump output per table).
pub fn fill_mixed(
    cluster: &PgCluster,
    db: &str,
    prefix: &str,
    tables: usize,
    rows: usize,
    random_bytes: usize,
) {
    let md5s = random_bytes.div_ceil(16).max(1);
    for i in 0..tables {
        cluster
            .script(
                db,
                &format!(
                    "CREATE TABLE {prefix}{i} (id bigint PRIMARY KEY, name text, doc jsonb, \
                       price numeric(12,2), at timestamptz, blob bytea);
                     INSERT INTO {prefix}{i} SELECT g, 'customer ' || (g % 977) || ' order ' || g,
                       jsonb_build_object('id', g, 'tags', jsonb_build_array('a', 'b', g % 13),
                                          'note', md5(g::text)),
                       (g % 100000) / 100.0, timestamptz '2026-01-01' + g * interval '17 seconds',
                       (SELECT decode(string_agg(md5(random()::text || g::text || k::text), ''), 'hex')
                          FROM generate_series(1, {md5s}) k)
                     FROM generate_series(1, {rows}) g;"
                ),
            )
            .unwrap_or_else(|e| panic!("fill table {prefix}{i} of {db}: {e:#}"));
    }
}

/// Restores an archive (file or directory) into an existing database of
/// `cluster` with pg_restore, failing the test with its stderr.
pub fn pg_restore(cluster: &PgCluster, database: &str, archive: &str) {
    let out = std::process::Command::new(cluster.bindir.join("pg_restore"))
        .args(["--exit-on-error", "--no-password", "-U", "postgres", "-h"])
        .arg(cluster.socket_dir())
        .arg("-p")
        .arg(cluster.port.to_string())
        .arg("-d")
        .arg(pgsnapman_tests::cluster::conninfo_dbname(database))
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `dir` belong to the OS user the clusters run as (`postgres` when
/// the tests run as root), e.g. for a tablespace directory.
pub fn give_to_cluster_user(dir: &std::path::Path) {
    if nix::unistd::geteuid().is_root() {
        let pg = nix::unistd::User::from_name("postgres")
            .unwrap()
            .expect("OS user postgres");
        std::os::unix::fs::chown(dir, Some(pg.uid.as_raw()), Some(pg.gid.as_raw())).unwrap();
    }
}

/// Runs `pgsnap restore now … --wait` and returns (exit code, stdout, stderr).
pub fn restore_now(
    cli: &Pgsnap,
    dump: i64,
    instance: i64,
    database: &str,
    extra: &[&str],
) -> pgsnapman_tests::pgsnap::Run {
    let mut args = vec!["--to-database", database];
    args.extend_from_slice(extra);
    restore_cluster_dump_now(cli, dump, instance, &args)
}

/// `pgsnap restore now --dump DUMP --to-instance INSTANCE --wait EXTRA…`:
/// without `--to-database` in EXTRA, for a cluster-wide dump (globals,
/// cluster) or the dumped database's own name.
pub fn restore_cluster_dump_now(
    cli: &Pgsnap,
    dump: i64,
    instance: i64,
    extra: &[&str],
) -> pgsnapman_tests::pgsnap::Run {
    let (d, i) = (dump.to_string(), instance.to_string());
    let mut args = vec![
        "restore",
        "now",
        "--dump",
        &d,
        "--to-instance",
        &i,
        "--wait",
    ];
    args.extend_from_slice(extra);
    cli.run(&args).unwrap()
}

/// A catalog cluster and a coordinator on it listening on a fixed port, so
/// that it can be stopped and started again at the same address (the
/// options start it again).
pub async fn restartable_coordinator() -> (PgCluster, Coordinator, CoordinatorOptions) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let catalog = PgCluster::start(PG_MAJOR).unwrap();
    let opts = CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        listen: Some(format!("127.0.0.1:{port}")),
        ..Default::default()
    };
    let coordinator = Coordinator::start(opts.clone()).await.unwrap();
    (catalog, coordinator, opts)
}

/// Uuids of the dumps in the store under a worker's data directory (one
/// manifest each, binary or JSON).
pub fn dumps_on_disk(data_dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    manifest_files(&data_dir.join("manifests"))
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            pgsnapman_store::manifest::dump_of_file_name(name).map(|d| d.to_string())
        })
        .collect()
}

/// The lines of `stack`'s worker log that contain `needle` (none if the
/// log cannot be read yet).
pub fn worker_log_lines(stack: &Stack, needle: &str) -> Vec<String> {
    std::fs::read_to_string(stack.worker.process.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// The manifest files (either format) under `dir`.
pub fn manifest_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = files_with_suffix(dir, pgsnapman_store::manifest::BINARY_SUFFIX);
    found.extend(files_with_suffix(
        dir,
        pgsnapman_store::manifest::JSON_SUFFIX,
    ));
    found
}

/// Waits until `worker` confirmed the catalog's current schedule version
/// and returns it.
pub async fn wait_schedule_confirmed(cli: &Pgsnap, worker: &str) -> u64 {
    wait::until(
        "the worker to confirm its schedule",
        Duration::from_secs(60),
        || async {
            let w = cli.json(&["worker", "show", worker]).ok()?;
            let v = w["schedule_version"].as_u64()?;
            (w["confirmed_schedule_version"].as_u64()? == v).then_some(v)
        },
    )
    .await
}

/// (schema, table, rows) of a `catalog show --output json` row, for `db`
/// (empty: a database dump).
pub fn counted_rows(row: &Value, db: &str) -> Vec<(String, String, u64)> {
    assert_eq!(row["table_rows_counted"], true, "{row}");
    assert_eq!(row["table_rows_error"], "", "{row}");
    row["table_rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["database"] == db)
        .map(|t| {
            (
                t["schema"].as_str().unwrap().to_string(),
                t["table"].as_str().unwrap().to_string(),
                t["rows"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The Python of the test environment (deploy/python-env.sh; test.sh
/// sources it): grpcio, grpcio-tools and pytest at pinned versions.
pub fn test_python() -> std::ffi::OsString {
    std::env::var_os("PGSNAPMAN_TEST_PYTHON").unwrap_or_else(|| {
        panic!("PGSNAPMAN_TEST_PYTHON is unset: source deploy/python-env.sh (test.sh does)")
    })
}

/// The catalog database as `pg_dump` writes it (plain SQL).
pub fn dump_catalog(catalog: &PgCluster) -> String {
    let out = std::process::Command::new(catalog.bindir.join("pg_dump"))
        .args(["--no-password", "-U", "postgres", "-h"])
        .arg(catalog.socket_dir())
        .arg("-p")
        .arg(catalog.port.to_string())
        .arg("postgres")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The restore log of the newest run: its status and its lines' text.
pub fn newest_run(cli: &Pgsnap) -> (String, String) {
    let runs = cli.json(&["restore-log", "list", "--limit", "1"]).unwrap();
    let id = id_of(&runs[0]).to_string();
    let log = cli.json(&["restore-log", "show", &id]).unwrap();
    let text = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    (
        log["run"]["status"].as_str().unwrap_or("").to_string(),
        text,
    )
}

/// `restore now` of `dump` into `database` (see `restore_now`), which must
/// succeed; the text of its restore log.
pub fn restore_succeeds(
    cli: &Pgsnap,
    dump: i64,
    instance: i64,
    database: &str,
    extra: &[&str],
) -> String {
    let run = restore_now(cli, dump, instance, database, extra);
    assert!(run.success(), "{database}: {run:?}");
    let (status, log) = newest_run(cli);
    assert_eq!(status, "SUCCEEDED", "{database}: {log}");
    log
}

/// Where `table` came in the order a restore loaded `tables` of `db` (SQL
/// names, quoted where they need it; 0: first), by the transaction id of
/// its rows: each table's data is one COPY in a transaction of its own (a
/// table without rows comes last).
pub fn load_rank(cluster: &PgCluster, db: &str, tables: &[&str], table: &str) -> usize {
    let firsts: Vec<String> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| format!("SELECT {i} AS t, (SELECT xmin::text::bigint FROM {t} LIMIT 1) AS x"))
        .collect();
    let order = cluster
        .query(
            db,
            &format!(
                "SELECT string_agg(t::text, ',' ORDER BY x NULLS LAST, t) FROM ({}) s",
                firsts.join(" UNION ALL ")
            ),
        )
        .unwrap();
    let wanted = tables
        .iter()
        .position(|t| *t == table)
        .unwrap_or_else(|| panic!("{table} is not among {tables:?}"));
    order
        .split(',')
        .position(|t| t == wanted.to_string())
        .unwrap_or_else(|| panic!("{table} has no place in {order}"))
}
