//! Issue 13 acceptance for passwords: an instance password, sealed by
//! pgsnap to the worker that uses it, appears in no log of the coordinator,
//! the workers or pgsnap (all at debug level), in no `pg_dump` of the
//! catalog, in no process's argv, in no error text and in no file of the
//! worker's state; a second worker needs `set-password --worker`; a clear
//! password is refused; a password stored in clear before sealing is
//! sealed by the coordinator and then forgotten.
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use pgsnapman_proto::v1;
use pgsnapman_tests::pgsnap::Run;
use pgsnapman_tests::{Coordinator, CoordinatorOptions, PgCluster, PgOptions, Pgsnap};
use pgsnapman_tests::{Worker, WorkerOptions};

use crate::common::*;

/// Every `pgsnap` run of a scenario, to search its output afterwards.
struct Cli {
    cli: Pgsnap,
    seen: std::cell::RefCell<String>,
}

impl Cli {
    fn keep(&self, args: &[&str], run: &Run) {
        self.seen.borrow_mut().push_str(&format!(
            "$ pgsnap {args:?}\n{}\n{}\n",
            run.stdout, run.stderr
        ));
    }

    /// Runs pgsnap with its debug logs on (`PGSNAP_LOG`), feeding `input`.
    fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self
            .cli
            .command(args)
            .env("PGSNAP_LOG", "debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.keep(args, &run);
        run
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, "")
    }

    /// The id of the instance named `name`.
    fn instance_id(&self, name: &str) -> i64 {
        let list = self.json(&["instance", "list"]);
        list.as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .map(id_of)
            .unwrap_or_else(|| panic!("no instance {name} in {list}"))
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(args);
        let run = self.run(&full);
        assert!(run.success(), "{run:?}");
        serde_json::from_str(&run.stdout).unwrap()
    }

    fn ok(&self, args: &[&str], input: Option<&str>) -> Run {
        let run = match input {
            Some(i) => self.run_with_stdin(args, i),
            None => self.run(args),
        };
        assert!(run.success(), "pgsnap {args:?}: {run:?}");
        run
    }
}

fn start_worker(coordinator: &Coordinator, name: &str) -> Worker {
    Worker::start(WorkerOptions {
        name: name.to_string(),
        coordinator: coordinator.access(),
        data_dir: None,
        env: vec![("RUST_LOG".into(), "debug".into())],
    })
    .expect("start worker")
}

async fn start_coordinator(catalog: &PgCluster) -> Coordinator {
    // A fresh data directory each time; the catalog is what persists.
    Coordinator::start(CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        env: vec![("RUST_LOG".into(), "debug".into())],
        ..Default::default()
    })
    .await
    .expect("start coordinator")
}

/// Files under `dir` (recursively) that contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    files_with_suffix(dir, "")
        .into_iter()
        .filter(|p| {
            std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn fingerprint_on_host(worker: &Worker) -> String {
    let out = Command::new(pgsnapman_tests::binary("pgsnapman-worker"))
        .arg("identity")
        .arg("--data-dir")
        .arg(&worker.data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("seal key "))
        .unwrap_or_else(|| panic!("no fingerprint in {text}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_sealed_to_their_worker_and_never_seen_in_clear() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let secret = format!("S3cr3t-{id}");
    let wrong = format!("Wr0ng-{id}");
    let catalog = PgCluster::start(PG_MAJOR).unwrap();
    let coordinator = start_coordinator(&catalog).await;
    let cli = Cli {
        cli: coordinator.cli(),
        seen: Default::default(),
    };
    cli.json(&["worker", "register", "w1"]);
    cli.json(&["worker", "register", "w2"]);
    let w1 = start_worker(&coordinator, "w1");
    coordinator.wait_worker_connected("w1").await;

    let mut opts = PgOptions::new(PG_MAJOR);
    opts.superuser_password = Some(secret.clone());
    let source = PgCluster::start_with(opts).unwrap();
    source.create_database("app").unwrap();
    source
        .script(
            "app",
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;",
        )
        .unwrap();
    let add = |name: &str, worker: &str| -> Vec<String> {
        let mut a = instance_add_args(name, source.port, worker);
        a.push("--password-stdin".into());
        a
    };

    // A worker that never said hello has no key: a clear error.
    let a = add("src", "w2");
    let run = cli.run_with_stdin(&args(&a), &format!("{secret}\n"));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("worker w2 has not connected yet") && run.stderr.contains("start it"),
        "{run:?}"
    );
    // A pinned fingerprint that is not the worker's: refused before sending.
    let mut pinned = add("src", "w1");
    pinned.extend(["--worker-fingerprint".into(), "0000-0000".into()]);
    let run = cli.run_with_stdin(&args(&pinned), &format!("{secret}\n"));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("pgsnapman-worker identity"), "{run:?}");

    // The fingerprint pgsnap shows is the one on the worker host.
    let on_host = fingerprint_on_host(&w1);
    let shown = cli.json(&["worker", "show", "w1"]);
    assert_eq!(shown["seal_key_fingerprint"], on_host.as_str(), "{shown}");
    let mut pinned = add("src", "w1");
    pinned.extend(["--worker-fingerprint".into(), on_host.clone()]);
    let run = cli.ok(&args(&pinned), Some(&format!("{secret}\n")));
    assert!(
        run.stdout
            .contains(&format!("password sealed to worker w1 (key {on_host})")),
        "{run:?}"
    );
    let src_id = cli.instance_id("src");
    let src = cli.json(&["instance", "show", &src_id.to_string()]);
    assert_eq!(src["has_password"], true, "{src}");
    assert_eq!(src["passwords"][0]["worker_name"], "w1", "{src}");
    assert_eq!(src["passwords"][0]["state"], "sealed", "{src}");

    // An instance with a wrong password: the dump fails clearly.
    cli.ok(&args(&add("bad", "w1")), Some(&format!("{wrong}\n")));
    let bad_id = cli.instance_id("bad");
    let bad_job = add_job(&cli.cli, bad_id, "app");
    let run = cli.run(&["dump", "now", &bad_job.to_string(), "--wait"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("password authentication failed"),
        "{run:?}"
    );

    // A dump that waits on a lock: sample every process's argv meanwhile.
    let job = add_job(&cli.cli, src_id, "app");
    let lock = TableLock::hold(&source, "app", "t").await;
    let task = dump_now(&cli.cli, job);
    TableLock::wait_dump_blocked(&source).await;
    let mut sampled = 0;
    for _ in 0..20 {
        let lines = process_command_lines();
        sampled += lines.len();
        for (pid, line) in &lines {
            assert!(!line.contains(&secret), "password in argv of {pid}: {line}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        process_command_lines()
            .iter()
            .any(|(_, l)| l.contains("pg_dump") && l.contains("--no-password")),
        "the dump is running while sampled"
    );
    assert!(sampled > 0);
    // The password file of the running dump is private.
    let passfiles = files_with_suffix(&w1.data_dir.join("tmp"), "");
    let passfiles: Vec<_> = passfiles
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pgpass-"))
        })
        .collect();
    assert!(
        !passfiles.is_empty(),
        "no password file while the dump runs"
    );
    for p in &passfiles {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    drop(lock);
    let t = wait_task_done(&cli.cli, task).await;
    assert_eq!(t["state"], "SUCCEEDED", "{t}");

    // A restore onto the same (password-protected) instance.
    let dump = catalog_of_job(&cli.cli, job)
        .into_iter()
        .find(|d| d["status"] == "SUCCEEDED")
        .unwrap();
    let run = restore_now(&cli.cli, id_of(&dump), src_id, "app_copy", &[]);
    cli.keep(&["restore", "now"], &run);
    assert!(run.success(), "{run:?}");
    assert_eq!(
        source.query("app_copy", "SELECT count(*) FROM t").unwrap(),
        "100"
    );

    // A second worker cannot use the instance until the password is sealed
    // to it; pgsnap says so when the job is added.
    let w2 = start_worker(&coordinator, "w2");
    coordinator.wait_worker_connected("w2").await;
    let src_arg = src_id.to_string();
    let run = cli.ok(
        &[
            "job",
            "add",
            "--instance",
            &src_arg,
            "--database",
            "app",
            "--worker",
            "w2",
            "--cron",
            "0 3 1 1 *",
        ],
        None,
    );
    assert!(
        run.stderr.contains(
            "instance src has no password sealed to worker w2: run `pgsnap instance set-password src --worker w2`"
        ),
        "{run:?}"
    );
    let job2 = cli
        .json(&["job", "list", "--worker", "w2"])
        .as_array()
        .unwrap()
        .first()
        .map(id_of)
        .unwrap();
    let run = cli.run(&["dump", "now", &job2.to_string(), "--wait"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(
            "instance src has no password sealed to worker w2: run `pgsnap instance set-password src --worker w2`"
        ),
        "{run:?}"
    );
    let run = cli.ok(
        &[
            "instance",
            "set-password",
            "src",
            "--worker",
            "w2",
            "--password-stdin",
        ],
        Some(&format!("{secret}\n")),
    );
    assert!(
        run.stdout.contains("w1 (key") && run.stdout.contains("w2 (key"),
        "{run:?}"
    );
    let run = cli.run(&["dump", "now", &job2.to_string(), "--wait"]);
    assert!(run.success(), "{run:?}");

    // A clear password sent by a raw client is refused, without echoing it.
    let mut admin = coordinator.admin().await.unwrap();
    let err = admin
        .add_instance(v1::AddInstanceRequest {
            name: "raw".into(),
            host: "127.0.0.1".into(),
            password: Some(secret.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("in clear is refused"), "{err:?}");
    let err = admin
        .update_instance(v1::UpdateInstanceRequest {
            id: src_id,
            password: Some(secret.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("in clear is refused"), "{err:?}");
    assert!(!format!("{err:?}").contains(&secret));

    // Sealed copies the coordinator cannot accept: each a clear reason,
    // and the instance keeps its password.
    let w1_key = cli.json(&["worker", "show", "w1"])["seal_key_fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let copy = |worker: &str, ciphertext: Vec<u8>, fingerprint: &str| v1::SealedPassword {
        worker: Some(v1::WorkerRef {
            r#ref: Some(v1::worker_ref::Ref::Name(worker.into())),
        }),
        ciphertext,
        key_fingerprint: fingerprint.into(),
    };
    let valid = || copy("w1", vec![7; 60], &w1_key);
    cli.json(&["worker", "register", "w-never"]);
    let cases: Vec<(Vec<v1::SealedPassword>, tonic::Code, &str)> = vec![
        (
            vec![copy("w1", vec![7; 60], "1111-2222")],
            tonic::Code::FailedPrecondition,
            "run the command again",
        ),
        (
            vec![copy("w1", vec![7; 48], &w1_key)],
            tonic::Code::InvalidArgument,
            "has 48 bytes",
        ),
        (
            vec![copy("w1", vec![7; 5000], &w1_key)],
            tonic::Code::InvalidArgument,
            "has 5000 bytes",
        ),
        (
            vec![copy("w-never", vec![7; 60], "x")],
            tonic::Code::FailedPrecondition,
            "worker w-never has not connected yet",
        ),
        (
            vec![copy("w-nobody", vec![7; 60], "x")],
            tonic::Code::NotFound,
            "not registered",
        ),
        (
            vec![valid(), valid()],
            tonic::Code::InvalidArgument,
            "two passwords are sealed to worker w1",
        ),
    ];
    for (sealed_passwords, code, text) in cases {
        let err = admin
            .update_instance(v1::UpdateInstanceRequest {
                id: src_id,
                sealed_passwords,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(text), "{text}: {err:?}");
    }
    let src = cli.json(&["instance", "show", &src_id.to_string()]);
    assert_eq!(src["passwords"].as_array().unwrap().len(), 2, "{src}");

    // Nowhere in clear: the catalog, the logs, pgsnap's output, the
    // workers' state.
    let dumped = dump_catalog(&catalog);
    assert!(
        dumped.contains("instance_passwords"),
        "the dump has the table"
    );
    for needle in [&secret, &wrong] {
        assert!(
            !dumped.contains(needle.as_str()),
            "password in the catalog dump"
        );
        for log in [
            w1.process.log_path(),
            w2.process.log_path(),
            coordinator.process.log_path(),
        ] {
            let text = std::fs::read_to_string(log).unwrap();
            assert!(
                !text.contains(needle.as_str()),
                "password in {}",
                log.display()
            );
        }
        assert!(
            !cli.seen.borrow().contains(needle.as_str()),
            "password in pgsnap output"
        );
        for w in [&w1, &w2] {
            for dir in ["state", "identity", "tmp"] {
                let found = files_containing(&w.data_dir.join(dir), needle);
                assert!(found.is_empty(), "password in {found:?}");
            }
        }
    }
    // The logs were at debug level (the assertion above means something).
    let wlog = std::fs::read_to_string(w1.process.log_path()).unwrap();
    assert!(wlog.contains("DEBUG"), "worker log not at debug level");
    assert!(
        cli.seen.borrow().contains("DEBUG"),
        "pgsnap ran without PGSNAP_LOG"
    );

    let (mut w1, mut w2, mut coordinator) = (w1, w2, coordinator);
    w1.process.stop_clean().await;
    w2.process.stop_clean().await;
    coordinator.process.stop_clean().await;
    for p in [&w1.process, &w2.process, &coordinator.process] {
        p.assert_no_unexpected_errors(&[]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_stored_in_clear_before_sealing_is_sealed_then_forgotten() {
    let legacy = format!("L3gacy-{}", uuid::Uuid::new_v4().simple());
    let catalog = PgCluster::start(PG_MAJOR).unwrap();
    let mut coordinator = start_coordinator(&catalog).await;
    let cli = coordinator.cli();
    register_worker(&cli, "w-leg");
    let mut opts = PgOptions::new(PG_MAJOR);
    opts.superuser_password = Some(legacy.clone());
    let source = PgCluster::start_with(opts).unwrap();
    source.create_database("app").unwrap();
    let old = add_instance(&cli, "old", source.port, "w-leg", None);
    let job = add_job(&cli, old, "app");
    let port = source.port.to_string();
    cli.json(&[
        "instance",
        "add",
        "--name",
        "orphan",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ])
    .unwrap();
    // As a catalog from before migration 0014 holds them.
    catalog
        .query(
            "postgres",
            &format!(
                "UPDATE instances SET legacy_password = '{legacy}' WHERE name IN ('old', 'orphan')"
            ),
        )
        .unwrap();
    coordinator.process.stop_clean().await;
    let coordinator = start_coordinator(&catalog).await;
    let cli = coordinator.cli();
    let log = std::fs::read_to_string(coordinator.process.log_path()).unwrap();
    assert!(
        log.contains("no worker uses it") && log.contains("set-password orphan --worker W"),
        "{log}"
    );
    assert!(log.contains("still stored in clear"), "{log}");
    let orphan = cli.json(&["instance", "list"]).unwrap();
    let orphan = orphan
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "orphan")
        .cloned()
        .unwrap();
    assert_eq!(orphan["has_password"], false, "{orphan}");
    let shown = cli.json(&["instance", "show", &old.to_string()]).unwrap();
    assert_eq!(shown["passwords"][0]["state"], "legacy", "{shown}");

    // The worker presents its key: the coordinator seals the password to
    // it and forgets the clear copy; the dump uses the sealed one.
    let worker = start_worker(&coordinator, "w-leg");
    coordinator.wait_worker_connected("w-leg").await;
    pgsnapman_tests::wait::until(
        "the clear password to be sealed and forgotten",
        std::time::Duration::from_secs(60),
        || async {
            let n = catalog
                .query(
                    "postgres",
                    "SELECT count(*) FROM instances WHERE legacy_password IS NOT NULL",
                )
                .ok()?;
            (n == "0").then_some(())
        },
    )
    .await;
    let shown = cli.json(&["instance", "show", &old.to_string()]).unwrap();
    assert_eq!(shown["passwords"][0]["state"], "sealed", "{shown}");
    let task = dump_now(&cli, job);
    let t = wait_task_done(&cli, task).await;
    assert_eq!(t["state"], "SUCCEEDED", "{t}");
    assert!(!dump_catalog(&catalog).contains(&legacy));
    for log in [worker.process.log_path(), coordinator.process.log_path()] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.contains(&legacy), "password in {}", log.display());
    }
    let (mut worker, mut coordinator) = (worker, coordinator);
    worker.process.stop_clean().await;
    coordinator.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
    coordinator.process.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_seal_key_makes_old_copies_stale_with_a_clear_error() {
    let secret = format!("R0tate-{}", uuid::Uuid::new_v4().simple());
    let mut stack = Stack::start("w-rot").await;
    let mut opts = PgOptions::new(PG_MAJOR);
    opts.superuser_password = Some(secret.clone());
    let guarded = PgCluster::start_with(opts).unwrap();
    guarded.create_database("app").unwrap();
    let inst = add_instance(&stack.cli, "rot", guarded.port, "w-rot", Some(&secret));
    let job = add_job(&stack.cli, inst, "app");
    let old_key = fingerprint_on_host(&stack.worker);

    // The worker's key file is lost; it makes a new key at its next start.
    stack.worker.process.stop_clean().await;
    let data_dir = stack.worker.data_dir.clone();
    std::fs::remove_file(data_dir.join("identity/seal.key")).unwrap();
    let new_worker = Worker::start(WorkerOptions {
        name: "w-rot".into(),
        coordinator: stack.coordinator.access(),
        data_dir: Some(data_dir),
        env: vec![],
    })
    .unwrap();
    // Keeps the first worker's temporary data directory until the end.
    let old_worker = std::mem::replace(&mut stack.worker, new_worker);
    let key_file = stack.worker.data_dir.join("identity/seal.key");
    pgsnapman_tests::wait::until(
        "the worker to make its new key",
        std::time::Duration::from_secs(60),
        || async { key_file.exists().then_some(()) },
    )
    .await;
    let new_key = fingerprint_on_host(&stack.worker);
    assert_ne!(old_key, new_key);
    pgsnapman_tests::wait::until(
        "the coordinator to know the new key",
        std::time::Duration::from_secs(60),
        || async {
            let w = stack.cli.json(&["worker", "show", "w-rot"]).ok()?;
            (w["seal_key_fingerprint"] == new_key.as_str()).then_some(())
        },
    )
    .await;
    let shown = stack
        .cli
        .json(&["instance", "show", &inst.to_string()])
        .unwrap();
    assert_eq!(shown["passwords"][0]["state"], "stale", "{shown}");
    assert_eq!(shown["passwords"][0]["key_fingerprint"], old_key.as_str());
    let log = std::fs::read_to_string(stack.coordinator.process.log_path()).unwrap();
    assert!(
        log.contains("presented a new seal key") && log.contains("set-password rot --worker w-rot"),
        "{log}"
    );

    let run = stack
        .cli
        .run(&["dump", "now", &job.to_string(), "--wait"])
        .unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!("sealed to key {old_key}"))
            && run.stderr.contains("was re-created")
            && run
                .stderr
                .contains("pgsnap instance set-password rot --worker w-rot"),
        "{run:?}"
    );
    let run = stack
        .cli
        .run_with_stdin(
            &["instance", "set-password", "rot", "--password-stdin"],
            &format!("{secret}\n"),
        )
        .unwrap();
    assert!(run.success(), "{run:?}");
    assert!(run.stdout.contains(&new_key), "{run:?}");
    let task = dump_now(&stack.cli, job);
    let t = wait_task_done(&stack.cli, task).await;
    assert_eq!(t["state"], "SUCCEEDED", "{t}");
    drop(old_worker);
    stack.stop_clean(&[]).await;
}
