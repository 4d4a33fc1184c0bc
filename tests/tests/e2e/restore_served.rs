//! Directory-format dumps restored through named pipes (issue 15 item 3):
//! pg_restore (serial and `-j 2`) reads toc.dat from the spool and each data
//! file from a FIFO the worker fills from its store; rows match, nothing is
//! spooled, and a failed or cancelled restore leaves no FIFO, thread,
//! process or directory behind.
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgsnapman_tests::{PgCluster, wait};

use crate::common::*;

const TABLES: usize = 4;

/// A digest of every row of table `t<i>` of `db`.
fn fingerprint(cluster: &PgCluster, db: &str, i: usize) -> String {
    cluster
        .query(
            db,
            &format!("SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY t::text)) FROM t{i} t"),
        )
        .unwrap()
}

/// A job dumping `db` in the directory format with two jobs; the dump's id.
fn directory_dump(stack: &Stack, inst: i64, db: &str) -> i64 {
    let job = add_yearly_job(
        &stack.cli,
        inst,
        &["--database", db, "--format", "directory", "--jobs", "2"],
    );
    id_of(&dump_and_show(&stack.cli, job))
}

/// Processes reading the worker's spool (pg_restore and its workers).
fn readers_of(spool: &std::path::Path) -> Vec<(u32, String)> {
    let spool = spool.display().to_string();
    process_command_lines()
        .into_iter()
        .filter(|(_, c)| c.contains("pg_restore") && c.contains(&spool))
        .collect()
}

/// Names of the worker's threads that serve FIFOs.
fn serving_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "restore-serve")
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_dumps_restore_through_named_pipes_serially_and_with_jobs() {
    let mut stack = Stack::start("w-served").await;
    let db = "served";
    stack.source.create_database(db).unwrap();
    fill_mixed(&stack.source, db, "t", TABLES, 4_000, 64);
    // The largest table has the highest dump id: pg_restore -j, every data
    // file a pipe of size 0, would load it last if the served toc.dat kept
    // pg_dump's ids.
    fill_mixed(&stack.source, db, "zz", 1, 40_000, 64);
    let files = TABLES + 1;
    let loaded: Vec<String> = (0..TABLES)
        .map(|i| format!("t{i}"))
        .chain(["zz0".to_string()])
        .collect();
    let loaded: Vec<&str> = loaded.iter().map(String::as_str).collect();
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-served", None);
    let dump = directory_dump(&stack, inst, db);
    let spool = stack.worker.data_dir.join("spool");

    for (copy, extra) in [("copy_j2", &["--jobs", "2"][..]), ("copy_serial", &[][..])] {
        let log = restore_succeeds(&stack.cli, dump, inst, copy, extra);
        for i in 0..TABLES {
            assert_eq!(
                fingerprint(&stack.source, copy, i),
                fingerprint(&stack.source, db, i),
                "{copy}: table t{i}"
            );
        }
        let big =
            "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY t::text)) FROM zz0 t";
        assert_eq!(
            stack.source.query(copy, big).unwrap(),
            stack.source.query(db, big).unwrap(),
            "{copy}: table zz0"
        );
        assert!(
            log.contains(&format!(
                "serving the archive's {files} data files to pg_restore"
            )),
            "{copy}: {log}"
        );
        assert!(
            log.contains(&format!("served {files} of {files} data files")),
            "{copy}: {log}"
        );
        let ordered = log.contains("ordered the data files largest first for pg_restore -j");
        assert_eq!(ordered, !extra.is_empty(), "{copy}: {log}");
        if ordered {
            // The first job takes it: first or second to begin writing
            // (the two jobs start together; a margin of one for a slow
            // start), not the last of five as in dump-id order.
            let rank = load_rank(&stack.source, copy, &loaded, "zz0");
            assert!(
                rank <= 2,
                "{copy}: zz0 loaded at place {rank} of {loaded:?}"
            );
        }
        assert!(!log.contains("spooling the archive"), "{copy}: {log}");
        assert!(
            files_with_suffix(&spool, "").is_empty(),
            "{copy}: spool not empty"
        );
    }
    let pid = stack.worker.process.pid().expect("worker running");
    assert_eq!(serving_threads(pid), 0);

    // A restore into the existing database (one transaction through psql)
    // still spools: a file cut short there could commit.
    let run = restore_now(
        &stack.cli,
        dump,
        inst,
        "copy_serial",
        &["--restore-type", "data", "--existing", "truncate"],
    );
    assert!(run.success(), "{run:?}");
    let (_, log) = newest_run(&stack.cli);
    assert!(log.contains("spooling the archive"), "{log}");
    assert_eq!(
        fingerprint(&stack.source, "copy_serial", 0),
        fingerprint(&stack.source, db, 0)
    );

    stack.worker.process.stop_clean().await;
    stack.coordinator.process.stop_clean().await;
    stack.worker.process.assert_no_unexpected_errors(&[]);
    stack.coordinator.process.assert_no_unexpected_errors(&[]);
}

/// Starts a `-j 2` restore into `copy` and stops its pg_restore (SIGSTOP)
/// while the worker serves the FIFOs; returns pg_restore's pid.
async fn start_and_freeze(stack: &Stack, dump: i64, inst: i64, copy: &str) -> u32 {
    let (d, i) = (dump.to_string(), inst.to_string());
    stack
        .cli
        .json(&[
            "restore",
            "now",
            "--dump",
            &d,
            "--to-instance",
            &i,
            "--to-database",
            copy,
            "--jobs",
            "2",
        ])
        .expect("restore now");
    let spool = stack.worker.data_dir.join("spool");
    let pid = wait::until(
        "pg_restore -j reading FIFOs",
        Duration::from_secs(120),
        || {
            let spool = spool.clone();
            async move {
                let found = readers_of(&spool)
                    .into_iter()
                    .find(|(_, c)| c.contains("--jobs=2"))?;
                let fifos = files_with_suffix(&spool, ".dat");
                (!fifos.is_empty()).then_some(found.0)
            }
        },
    )
    .await;
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_cancelled_served_restores_leave_nothing_behind() {
    let mut stack = Stack::start("w-served-stop").await;
    let db = "served";
    stack.source.create_database(db).unwrap();
    fill_mixed(&stack.source, db, "t", TABLES, 20_000, 256);
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-served-stop", None);
    let dump = directory_dump(&stack, inst, db);
    let spool = stack.worker.data_dir.join("spool");
    let worker = stack.worker.process.pid().expect("worker running");

    // pg_restore dies (SIGKILL) with its FIFOs unread: the run fails, and
    // the serving threads, the FIFOs and the new database are gone.
    let frozen = start_and_freeze(&stack, dump, inst, "copy_failed").await;
    assert!(serving_threads(worker) > 0);
    kill(Pid::from_raw(frozen as i32), Signal::SIGKILL).unwrap();
    wait::until("the restore to fail", Duration::from_secs(120), || async {
        let (status, _) = newest_run(&stack.cli);
        (status != "RUNNING" && !status.is_empty()).then_some(())
    })
    .await;
    let (status, log) = newest_run(&stack.cli);
    assert_eq!(status, "FAILED", "{log}");
    wait::until(
        "nothing left of the run",
        Duration::from_secs(60),
        || async {
            (serving_threads(worker) == 0
                && readers_of(&spool).is_empty()
                && files_with_suffix(&spool, "").is_empty())
            .then_some(())
        },
    )
    .await;
    let dbs = stack
        .source
        .query(
            "postgres",
            "SELECT string_agg(datname, ',') FROM pg_database",
        )
        .unwrap();
    assert!(!dbs.contains("copy_failed"), "{dbs}");

    // The worker stops (SIGTERM) during a served restore: it exits 0 and
    // leaves no pg_restore and nothing in the spool.
    let frozen = start_and_freeze(&stack, dump, inst, "copy_cancelled").await;
    stack.worker.process.stop_clean().await;
    let left = readers_of(&spool);
    if !left.is_empty() {
        let _ = kill(Pid::from_raw(frozen as i32), Signal::SIGCONT);
    }
    assert!(left.is_empty(), "pg_restore left behind: {left:?}");
    assert!(files_with_suffix(&spool, "").is_empty());
    let log = std::fs::read_to_string(stack.worker.process.log_path()).unwrap();
    assert!(
        !log.contains("did not stop; left behind"),
        "a serving thread hung"
    );

    stack.coordinator.process.stop_clean().await;
    stack.coordinator.process.assert_no_unexpected_errors(&[]);
    stack
        .worker
        .process
        .assert_no_unexpected_errors(&["pg_restore"]);
}
