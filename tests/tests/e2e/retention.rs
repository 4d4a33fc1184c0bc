//! Retention on the worker (issue 14, items 1 and 2): the worker applies each
//! job's keep-daily/weekly/monthly/yearly to its own store, offline too;
//! pins and restore jobs protect dumps; `pgsnap job retention --dry-run`
//! says what the next run does, with the same rule.
//!
//! Test-only clock: `scheduler.clock_speed = 43200` (one simulated day every
//! 2 s) from `scheduler.clock_start`; dumps are stamped with that clock, so a
//! daily cron makes one dump per simulated day.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use pgsnapman_proto::retention::{self, Candidate, Policy};
use pgsnapman_tests::{
    Coordinator, CoordinatorOptions, PgCluster, Pgsnap, Worker, WorkerOptions, wait,
};
use serde_json::Value;

use crate::common::*;

/// One simulated day every 2 s of real time.
const SPEED: &str = "43200";

/// Rewrites every row of `t` in the source's `app` every 300 ms, so that
/// each day's dump holds data no other dump has (deleting it frees bytes).
struct Churn {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Churn {
    fn start(source: &PgCluster) -> Churn {
        let mut cmd = source.psql_cmd("app");
        cmd.arg("-c")
            .arg("UPDATE t SET v = md5(random()::text) || md5(random()::text)");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let _ = cmd.output();
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Churn {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Bytes of every pack file in a worker's store.
fn pack_bytes(data_dir: &Path) -> u64 {
    files_with_suffix(&data_dir.join("packs"), "")
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn log_text(path: &Path) -> String {
    pgsnapman_tests::logs::strip_ansi(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The days (of the scheduler span's `scheduled=` time) of every scheduled
/// dump that succeeded, from the worker's log.
fn scheduled_days(log: &str) -> Vec<NaiveDate> {
    log.lines()
        .filter(|l| l.contains("scheduled dump succeeded"))
        .filter_map(|l| {
            let at = l.split("scheduled=").nth(1)?;
            NaiveDate::parse_from_str(at.get(..10)?, "%Y-%m-%d").ok()
        })
        .collect()
}

/// `(uuid, catalog id, started_at)` of the job's catalog rows.
fn catalog_rows(cli: &Pgsnap, job: i64) -> Vec<(String, i64, DateTime<Utc>)> {
    catalog_of_job(cli, job)
        .iter()
        .map(|r| {
            (
                r["dump_uuid"].as_str().unwrap().to_string(),
                id_of(r),
                r["started_at"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn utc() -> retention::Tz {
    retention::timezone("").unwrap()
}

/// The days the rule keeps out of one dump at 02:00 UTC on each of `days`.
fn kept_days(policy: Policy, days: &[NaiveDate]) -> BTreeSet<NaiveDate> {
    let candidates: Vec<Candidate> = days
        .iter()
        .map(|d| Candidate {
            dump_uuid: d.to_string(),
            started_at: d.and_hms_opt(2, 0, 0).unwrap().and_utc(),
            pinned: false,
            named_by_restore: false,
        })
        .collect();
    retention::apply(policy, &utc(), &candidates)
        .into_iter()
        .filter(|v| v.keep())
        .map(|v| days[v.index])
        .collect()
}

/// A daily job of the source's `app` keeping daily, weekly, monthly, yearly.
fn add_job_keeping(cli: &Pgsnap, instance: i64, cron: &str, keep: [&str; 4]) -> i64 {
    let instance = instance.to_string();
    let args = [
        "job",
        "add",
        "--instance",
        &instance,
        "--database",
        "app",
        "--cron",
        cron,
        "--keep-daily",
        keep[0],
        "--keep-weekly",
        keep[1],
        "--keep-monthly",
        keep[2],
        "--keep-yearly",
        keep[3],
    ];
    id_of(&cli.json(&args).unwrap())
}

struct Rig {
    catalog: PgCluster,
    coordinator: Option<Coordinator>,
    coordinator_opts: CoordinatorOptions,
    cli: Pgsnap,
    source: PgCluster,
    _dir: tempfile::TempDir,
    worker_dir: PathBuf,
}

impl Rig {
    async fn start(worker: &str) -> Rig {
        let (catalog, coordinator, coordinator_opts) = restartable_coordinator().await;
        let cli = coordinator.cli();
        register_worker(&cli, worker);
        let dir = pgsnapman_tests::shared_tempdir("pgsnapman-retention-");
        Rig {
            catalog,
            coordinator: Some(coordinator),
            coordinator_opts,
            cli,
            source: source_with_app(3000),
            worker_dir: dir.path().join("worker"),
            _dir: dir,
        }
    }

    fn start_worker(&self, name: &str, env: &[(&str, &str)]) -> Worker {
        Worker::start(WorkerOptions {
            name: name.to_string(),
            coordinator: self.cli.access.clone(),
            data_dir: Some(self.worker_dir.clone()),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .unwrap()
    }

    async fn wait_schedule_confirmed(&self, worker: &str) {
        wait_schedule_confirmed(&self.cli, worker).await;
    }

    async fn wait_catalog_matches_disk(&self, job: i64) -> Vec<(String, i64, DateTime<Utc>)> {
        wait::until(
            "the catalog to match the store",
            Duration::from_secs(120),
            || async {
                let rows = catalog_rows(&self.cli, job);
                let uuids: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
                (uuids == dumps_on_disk(&self.worker_dir) && uuids.len() == rows.len())
                    .then_some(rows)
            },
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_simulated_days_offline_keep_what_the_rule_names() {
    let name = "w-retain";
    let mut rig = Rig::start(name).await;
    let inst = add_instance(&rig.cli, "src", rig.source.port, name, None);
    // Every day of January and February 2024 at 02:00 (60 days, then
    // nothing until 2025): the window is fixed by the cron, not by timing.
    let job = add_job_keeping(&rig.cli, inst, "0 2 * 1,2 *", ["7", "4", "3", "1"]);
    let mut worker = rig.start_worker(
        name,
        &[
            ("PGSNAPMAN_RETENTION__ENABLED", "true"),
            ("PGSNAPMAN_SCHEDULER__CLOCK_SPEED", SPEED),
            // Six simulated days (12 s) before the first fire: the schedule
            // is mirrored and the coordinator stopped before it.
            ("PGSNAPMAN_SCHEDULER__CLOCK_START", "2023-12-26T00:00:00Z"),
        ],
    );
    rig.wait_schedule_confirmed(name).await;
    assert!(
        catalog_rows(&rig.cli, job).is_empty(),
        "a dump ran before the coordinator was stopped: raise the clock_start margin"
    );
    let mut c = rig.coordinator.take().unwrap();
    c.process.stop_clean().await;
    c.process.assert_no_unexpected_errors(&[]);
    rig.catalog.stop().unwrap();
    let churn = Churn::start(&rig.source);

    // The whole run with no coordinator: each dump is followed by retention.
    let log = worker.process.log_path().to_path_buf();
    let days = wait::until(
        "60 simulated days of dumps, each followed by retention",
        Duration::from_secs(300),
        || async {
            let text = log_text(&log);
            let days = scheduled_days(&text);
            let runs = text
                .lines()
                .filter(|l| l.contains("retention applied") && l.contains("dump"))
                .count();
            let last_day = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
            (days.last() == Some(&last_day) && runs >= days.len()).then_some(days)
        },
    )
    .await;
    churn.stop();
    eprintln!("{} scheduled dumps succeeded", days.len());
    assert!(worker.process.is_running());
    let text = log_text(&log);
    assert!(
        !text.contains("retention after a dump failed") && !text.contains("could not delete"),
        "{}",
        pgsnapman_tests::logs::tail(&log, 40)
    );
    // gc gave space back: some run's packs shrank.
    let shrank = text
        .lines()
        .filter(|l| l.contains("retention garbage collected"))
        .filter_map(|l| {
            let field = |k: &str| -> Option<u64> {
                l.split(&format!("{k}="))
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            };
            Some((field("pack_bytes_before")?, field("pack_bytes_after")?))
        })
        .filter(|(before, after)| after < before)
        .count();
    assert!(shrank > 0, "no gc after retention freed anything");

    // Exactly the dumps the rule names remain in the store.
    let policy = Policy {
        daily: 7,
        weekly: 4,
        monthly: 3,
        yearly: 1,
    };
    let expected = kept_days(policy, &days);
    let on_disk = dumps_on_disk(&rig.worker_dir);
    assert_eq!(
        on_disk.len(),
        expected.len(),
        "store {on_disk:?}, rule {expected:?}"
    );
    if days.len() == 60 {
        // By hand (docs/retention.md): 2024-02-29 is a Thursday of ISO week
        // 9. Daily: Feb 23-29; weekly: Feb 29, 25, 18, 11; monthly: Feb 29,
        // Jan 31 (no December dump); yearly: Feb 29.
        let by_hand: BTreeSet<NaiveDate> = ["02-11", "02-18", "01-31"]
            .iter()
            .map(|d| format!("2024-{d}"))
            .chain((23..=29).map(|d| format!("2024-02-{d}")))
            .map(|d| d.parse().unwrap())
            .collect();
        assert_eq!(expected, by_hand);
        assert_eq!(on_disk.len(), 10);
    }

    // The coordinator returns: the catalog follows the store, no row lost
    // or duplicated, and the remaining rows are the rule's days.
    rig.catalog.start_again().unwrap();
    rig.coordinator = Some(
        Coordinator::start(rig.coordinator_opts.clone())
            .await
            .unwrap(),
    );
    let rows = rig.wait_catalog_matches_disk(job).await;
    let row_days: BTreeSet<NaiveDate> = rows.iter().map(|r| r.2.date_naive()).collect();
    assert_eq!(row_days, expected, "{rows:?}");
    // The rule applied to the catalog's own times keeps every row.
    let candidates: Vec<Candidate> = rows
        .iter()
        .map(|r| Candidate {
            dump_uuid: r.0.clone(),
            started_at: r.2,
            pinned: false,
            named_by_restore: false,
        })
        .collect();
    let verdicts = retention::apply(policy, &utc(), &candidates);
    assert!(verdicts.iter().all(|v| v.keep()), "{verdicts:?}");
    // Every deletion was reported once with reason "retention".
    let deleted: i64 = rig
        .catalog
        .query(
            "postgres",
            "SELECT count(*) FROM messages WHERE text LIKE '%deleted from the store (retention)%'",
        )
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(deleted as usize, days.len() - expected.len());

    // The oldest kept dump, one in the middle and the newest restore.
    let by_day: BTreeMap<NaiveDate, i64> = rows.iter().map(|r| (r.2.date_naive(), r.1)).collect();
    let sample = [
        by_day.first_key_value().unwrap(),
        by_day.iter().nth(by_day.len() / 2).unwrap(),
        by_day.last_key_value().unwrap(),
    ];
    for (day, id) in sample {
        let db = format!("r_{}", day.format("%m%d"));
        let run = restore_now(&rig.cli, *id, inst, &db, &[]);
        assert!(run.success(), "restore of the dump of {day}: {run:?}");
        assert_eq!(
            rig.source.query(&db, "SELECT count(*) FROM t").unwrap(),
            "3000"
        );
    }
    worker.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
    let mut c = rig.coordinator.take().unwrap();
    c.process.stop_clean().await;
    c.process.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_restore_jobs_and_the_newest_survive_keep_zero() {
    let name = "w-pin";
    let mut rig = Rig::start(name).await;
    let inst = add_instance(&rig.cli, "src", rig.source.port, name, None);
    let job = add_job_keeping(&rig.cli, inst, "0 2 * * *", ["30", "0", "0", "0"]);
    let env = [
        ("PGSNAPMAN_RETENTION__ENABLED", "true"),
        ("PGSNAPMAN_SCHEDULER__CLOCK_SPEED", SPEED),
        ("PGSNAPMAN_SCHEDULER__CLOCK_START", "2024-01-01T00:00:00Z"),
        ("PGSNAPMAN_RETENTION__INTERVAL", "1s"),
    ];
    let mut worker = rig.start_worker(name, &env);
    let churn = Churn::start(&rig.source);
    wait::until("five daily dumps", Duration::from_secs(120), || async {
        (catalog_rows(&rig.cli, job).len() >= 5).then_some(())
    })
    .await;
    assert!(
        rig.cli
            .run(&["job", "halt", &job.to_string()])
            .unwrap()
            .success()
    );
    rig.wait_schedule_confirmed(name).await;
    churn.stop();
    let rows = rig.wait_catalog_matches_disk(job).await;
    let mut by_time = rows.clone();
    by_time.sort_by_key(|r| r.2);
    let (oldest, second, newest) = (&by_time[0], &by_time[1], by_time.last().unwrap());
    // The worker is away while the policy changes, so the preview sees the
    // dumps the next run will judge.
    worker.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);

    // Pin the oldest; a SINGLE restore job far in the future names the second.
    let pinned = rig
        .cli
        .json(&["catalog", "pin", &oldest.1.to_string()])
        .unwrap();
    assert_eq!(pinned["pinned"], true, "{pinned}");
    let restore_job = rig
        .cli
        .json(&[
            "restore-job",
            "add",
            "--from-dump",
            &second.1.to_string(),
            "--to-instance",
            &inst.to_string(),
            "--to-database",
            "later",
            "--at",
            "2099-01-01T00:00:00Z",
        ])
        .unwrap();
    // Keep nothing: all zeros are legal.
    let edited = rig
        .cli
        .json(&[
            "job",
            "edit",
            &job.to_string(),
            "--keep-daily",
            "0",
            "--keep-weekly",
            "0",
            "--keep-monthly",
            "0",
            "--keep-yearly",
            "0",
        ])
        .unwrap();
    assert_eq!(edited["retention"]["keep_daily"], 0, "{edited}");

    // The preview names each verdict's reason.
    let preview = rig
        .cli
        .json(&["job", "retention", &job.to_string(), "--dry-run"])
        .unwrap();
    let verdict = |id: i64| -> Value {
        preview["dumps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("dump {id} not in {preview}"))
    };
    assert_eq!(verdict(newest.1)["reasons"], serde_json::json!(["newest"]));
    assert_eq!(verdict(oldest.1)["reasons"], serde_json::json!(["pinned"]));
    assert_eq!(verdict(second.1)["reasons"], serde_json::json!(["restore"]));
    assert_eq!(preview["keep"], 3, "{preview}");
    assert_eq!(preview["remove"].as_u64().unwrap() as usize, rows.len() - 3);
    let table = rig
        .cli
        .run(&["job", "retention", &job.to_string(), "--dry-run"])
        .unwrap();
    assert!(table.success(), "{table:?}");
    assert!(
        table
            .stdout
            .contains("keep 0 daily, 0 weekly, 0 monthly, 0 yearly"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("keep (newest)"), "{}", table.stdout);
    assert!(table.stdout.contains("keep (pinned)"), "{}", table.stdout);
    assert!(table.stdout.contains("remove"), "{}", table.stdout);
    let no_dry_run = rig
        .cli
        .run(&["job", "retention", &job.to_string()])
        .unwrap();
    assert!(!no_dry_run.success());
    assert!(no_dry_run.stderr.contains("--dry-run"), "{no_dry_run:?}");

    // The worker's first pass (at start, then every 1s) follows: the store
    // shrinks to the three and its packs to less.
    let before = pack_bytes(&rig.worker_dir);
    let mut worker = rig.start_worker(name, &env);
    let want: BTreeSet<String> = [oldest, second, newest]
        .iter()
        .map(|r| r.0.clone())
        .collect();
    wait::until(
        "retention to keep only the three",
        Duration::from_secs(60),
        || async { (dumps_on_disk(&rig.worker_dir) == want).then_some(()) },
    )
    .await;
    let rows = rig.wait_catalog_matches_disk(job).await;
    assert_eq!(rows.len(), 3);
    let after = pack_bytes(&rig.worker_dir);
    assert!(after < before, "packs {before} → {after} bytes");

    // Unpinned and the restore job removed: only the newest stays.
    rig.cli
        .json(&["catalog", "unpin", &oldest.1.to_string()])
        .unwrap();
    rig.cli
        .run(&["restore-job", "remove", &id_of(&restore_job).to_string()])
        .unwrap();
    let only_newest: BTreeSet<String> = [newest.0.clone()].into();
    wait::until(
        "retention to keep the newest only",
        Duration::from_secs(60),
        || async { (dumps_on_disk(&rig.worker_dir) == only_newest).then_some(()) },
    )
    .await;
    rig.wait_catalog_matches_disk(job).await;
    worker.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
    let mut c = rig.coordinator.take().unwrap();
    c.process.stop_clean().await;
    c.process.assert_no_unexpected_errors(&[]);
}
