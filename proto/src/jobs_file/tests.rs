//! Unit tests of the jobs file: parsing, validation, ids.
use super::*;

const GOOD: &str = r#"
[instances.main]
host = "db1"
user = "backup"

[jobs.app]
instance = "main"
database = "app"
format = "directory"
cron = "0 2 * * *"
options = ["--no-comments"]
parallel_jobs = 2
retention = { daily = 3, weekly = 1 }
verify = { cron = "0 4 * * 0" }

[jobs.roles]
instance = "main"
type = "globals"
cron = "30 1 * * *"
"#;

fn no_password(_: &InstanceConnection) -> Result<String, String> {
    Ok(String::new())
}

fn err(text: &str) -> String {
    format!("{:#}", parse("jobs.toml", text, &no_password).unwrap_err())
}

#[test]
fn a_good_file_becomes_a_schedule_with_stable_ids() {
    let jobs = parse("jobs.toml", GOOD, &no_password).unwrap();
    assert_eq!(jobs.schedule.instances.len(), 1);
    assert_eq!(jobs.schedule.dump_jobs.len(), 2);
    let app = jobs.job("app").unwrap();
    assert_eq!(app.id, stable_id("job", "app"));
    assert!(is_standalone_id(app.id));
    assert!(!is_standalone_id(ID_BASE - 1) && !is_standalone_id(2 * ID_BASE));
    assert_eq!(app.instance_id, jobs.schedule.instances[0].instance_id);
    assert_eq!(app.format(), DumpFormat::Directory);
    assert_eq!(app.kind(), JobKind::Repeat);
    assert_eq!(app.retention.unwrap().keep_daily, 3);
    assert_eq!(app.retention.unwrap().keep_monthly, 0);
    assert_eq!(app.verify_method, "read");
    let roles = jobs.job("roles").unwrap();
    assert_eq!(
        roles.format(),
        DumpFormat::Plain,
        "the type's default format"
    );
    assert_eq!(roles.retention, Some(DEFAULT_RETENTION));
    assert_eq!(jobs.schedule.instances[0].port, 5432);
    assert_ne!(jobs.version, 0);
    assert_eq!(
        jobs.version,
        parse("x", GOOD, &no_password).unwrap().version
    );
    assert!(format!("{:#}", jobs.job("nope").unwrap_err()).contains("jobs: app, roles"));
}

#[test]
fn copies_name_a_job_and_an_instance_and_never_overwrite_their_source() {
    let with =
        |copy: &str| format!("{GOOD}\n[instances.replica]\nhost = \"db2\"\nuser = \"u\"\n\n{copy}");
    let jobs = parse(
        "jobs.toml",
        &with("[copies.to_replica]\njob = \"app\"\nto = \"replica\"\n"),
        &no_password,
    )
    .unwrap();
    assert_eq!(
        jobs.copies,
        vec![Copy {
            name: "to_replica".into(),
            job_id: stable_id("job", "app"),
            instance_id: jobs.instance_ids["replica"],
            database: "app".into(),
            existing: ExistingDatabase::Rename,
        }]
    );
    for (copy, wanted) in [
        (
            "job = \"nope\"\nto = \"replica\"",
            "copies.c.job: no job \"nope\"",
        ),
        (
            "job = \"app\"\nto = \"nope\"",
            "copies.c.to: no instance \"nope\"",
        ),
        ("job = \"app\"\nto = \"main\"", "over itself"),
        (
            "job = \"roles\"\nto = \"replica\"",
            "only full and schema dumps",
        ),
        (
            "job = \"app\"\nto = \"replica\"\nexisting = \"drop\"",
            "add destructive = true",
        ),
        (
            "job = \"app\"\nto = \"replica\"\nexisting = \"zap\"",
            "not a policy",
        ),
    ] {
        let e = err(&with(&format!("[copies.c]\n{copy}\n")));
        assert!(e.contains(wanted), "{copy}: {e}");
        assert!(e.starts_with("jobs.toml:"), "{e}");
    }
    let ok = parse(
        "jobs.toml",
        &with("[copies.c]\njob = \"app\"\nto = \"main\"\ndatabase = \"app_copy\"\nexisting = \"drop\"\ndestructive = true\n"),
        &no_password,
    )
    .unwrap();
    assert_eq!(ok.copies[0].existing, ExistingDatabase::Drop);
    assert_eq!(ok.copies[0].database, "app_copy");
}

#[test]
fn restores_take_a_cron_and_the_copies_checks() {
    let with = |restore: &str| {
        format!("{GOOD}\n[instances.replica]\nhost = \"db2\"\nuser = \"u\"\n\n{restore}")
    };
    let jobs = parse(
        "jobs.toml",
        &with("[restores.nightly]\njob = \"app\"\nto = \"replica\"\ncron = \"0 6 * * *\"\nstatus = \"halted\"\ncomment = \"for QA\"\n"),
        &no_password,
    )
    .unwrap();
    assert_eq!(
        jobs.restores,
        vec![Restore {
            id: stable_id("restore", "nightly"),
            cron: "0 6 * * *".into(),
            status: Status::Halted,
            comment: "for QA".into(),
            target: Copy {
                name: "nightly".into(),
                job_id: stable_id("job", "app"),
                instance_id: jobs.instance_ids["replica"],
                database: "app".into(),
                existing: ExistingDatabase::Rename,
            },
        }]
    );
    assert!(jobs.copies.is_empty());
    assert_ne!(jobs.restores[0].id, stable_id("job", "nightly"));
    for (restore, wanted) in [
        ("job = \"app\"\nto = \"replica\"", "missing field `cron`"),
        (
            "job = \"app\"\nto = \"replica\"\ncron = \"0 25 * * *\"",
            "jobs.toml:28: restores.r.cron:",
        ),
        (
            "job = \"nope\"\nto = \"replica\"\ncron = \"@daily\"",
            "restores.r.job: no job \"nope\"",
        ),
        (
            "job = \"app\"\nto = \"main\"\ncron = \"@daily\"",
            "restores.r: would restore the dumped database over itself",
        ),
        (
            "job = \"roles\"\nto = \"replica\"\ncron = \"@daily\"",
            "only full and schema dumps",
        ),
        (
            "job = \"app\"\nto = \"replica\"\ncron = \"@daily\"\nexisting = \"truncate\"",
            "restores.r.existing: this policy can destroy",
        ),
        (
            "job = \"app\"\nto = \"replica\"\ncron = \"@daily\"\nstatus = \"paused\"",
            "restores.r.status: \"paused\" is not a status",
        ),
        (
            "job = \"app\"\nto = \"replica\"\ncron = \"@daily\"\nevery = 1",
            "unknown field `every`",
        ),
    ] {
        let e = err(&with(&format!("[restores.r]\n{restore}\n")));
        assert!(e.contains(wanted), "{restore}: {e}");
        assert!(e.starts_with("jobs.toml:"), "{e}");
    }
}

#[test]
fn the_shipped_example_is_valid() {
    let text = include_str!("../../../deploy/config/standalone-jobs.toml");
    let jobs = parse("standalone-jobs.toml", text, &no_password).unwrap();
    assert_eq!(jobs.job_ids.len(), 3);
    let sales = jobs.job("shop-sales-schema").unwrap();
    assert_eq!(sales.dump_type(), DumpType::Schema);
    let shop = jobs.job("shop").unwrap();
    assert_eq!(shop.verify_instance_id, jobs.instance_ids["scratch"]);
    assert_eq!(jobs.restores.len(), 1);
    assert_eq!(jobs.restores[0].target.job_id, shop.id);
    assert_eq!(jobs.restores[0].target.database, "shop_qa");
}

#[test]
fn a_password_in_the_file_is_refused_with_its_line() {
    let e = err("[instances.main]\nhost = \"h\"\nuser = \"u\"\npassword = \"hunter2\"\n");
    assert!(
        e.starts_with("jobs.toml:4: instances.main.password: passwords are never read"),
        "{e}"
    );
    assert!(e.contains("PGSNAPMAN_PASSWORD_MAIN"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn bad_cron_unknown_keys_and_instances_are_named_with_their_line() {
    let bad_cron = GOOD.replace("0 2 * * *", "61 2 * * *");
    let e = err(&bad_cron);
    assert!(e.starts_with("jobs.toml:10: jobs.app.cron:"), "{e}");
    let e = err(&GOOD.replace("parallel_jobs", "paralel_jobs"));
    assert!(e.starts_with("jobs.toml:"), "{e}");
    assert!(e.contains("paralel_jobs"), "{e}");
    let e = err(&GOOD.replace(
        "instance = \"main\"\ndatabase",
        "instance = \"other\"\ndatabase",
    ));
    assert!(
        e.starts_with("jobs.toml:7: jobs.app.instance: no instance \"other\""),
        "{e}"
    );
    let e = err(&format!(
        "{GOOD}\n[jobs.app]\ninstance = \"main\"\ncron = \"* * * * *\"\n"
    ));
    assert!(e.contains("jobs.toml:"), "{e}");
    assert!(e.contains("duplicate"), "{e}");
    let e = err(&GOOD.replace("type = \"globals\"", "type = \"globals\"\ndatabase = \"x\""));
    assert!(
        e.contains("jobs.roles: a GLOBALS dump covers the whole cluster"),
        "{e}"
    );
}
