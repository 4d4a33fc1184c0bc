use super::*;
use crate::catalog::metrics::JobSuccess;

fn figures() -> Figures {
    Figures {
        tasks: vec![("VERIFY_DUMP".into(), "queued".into(), 3)],
        workers: vec![("online".into(), 2)],
        dumps: vec![("SUCCEEDED".into(), 7), ("REMOVING".into(), 1)],
        jobs: vec![
            JobSuccess {
                job_id: 12,
                instance: "pg-main".into(),
                database: "shop".into(),
                dump_type: "FULL".into(),
                last_success: DateTime::from_timestamp(1_700_000_000, 0),
            },
            JobSuccess {
                job_id: 13,
                instance: "pg-main".into(),
                database: "new \"db\"".into(),
                dump_type: "SCHEMA".into(),
                last_success: None,
            },
        ],
    }
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn catalog_figures_become_gauges_by_convention() {
    let m = Metrics::new();
    m.fill(&figures());
    let text = m.encode();
    for line in [
        "pgsnapman_catalog_up 1",
        r#"pgsnapman_tasks{kind="verify_dump",state="queued"} 3"#,
        r#"pgsnapman_workers{state="online"} 2"#,
        r#"pgsnapman_workers{state="offline"} 0"#,
        r#"pgsnapman_catalog_dumps{status="succeeded"} 7"#,
        r#"pgsnapman_catalog_dumps{status="failed"} 0"#,
        r#"pgsnapman_catalog_dumps{status="removing"} 1"#,
        r#"pgsnapman_job_last_success_timestamp_seconds{job_id="12",pg_instance="pg-main",database="shop",type="full"} 1700000000"#,
        r#"pgsnapman_job_last_success_timestamp_seconds{job_id="13",pg_instance="pg-main",database="new \"db\"",type="schema"} 0"#,
        "# TYPE pgsnapman_job_last_success_timestamp_seconds gauge",
        "# EOF",
    ] {
        assert!(has(&text, line), "{line:?} not in\n{text}");
    }
}

#[test]
fn a_catalog_that_does_not_answer_leaves_its_figures_out() {
    let m = Metrics::new();
    m.fill(&figures());
    m.catalog_down("test");
    let text = m.encode();
    assert!(has(&text, "pgsnapman_catalog_up 0"), "{text}");
    assert!(
        !text.contains("pgsnapman_job_last_success_timestamp_seconds{"),
        "{text}"
    );
    assert!(!text.contains("pgsnapman_tasks{"), "{text}");
}

#[test]
fn lease_waits_are_observed_by_kind() {
    let m = Metrics::new();
    let queued = DateTime::from_timestamp(1_700_000_000, 0).expect("a time");
    m.leased("DUMP", queued, queued + chrono::Duration::milliseconds(700));
    // A coordinator clock behind the catalog's counts as no wait.
    m.leased("DUMP", queued, queued - chrono::Duration::seconds(5));
    let text = m.encode();
    for line in [
        r#"pgsnapman_task_lease_wait_seconds_count{kind="dump"} 2"#,
        r#"pgsnapman_task_lease_wait_seconds_sum{kind="dump"} 0.7"#,
        r#"pgsnapman_task_lease_wait_seconds_bucket{le="0.5",kind="dump"} 1"#,
        r#"pgsnapman_task_lease_wait_seconds_bucket{le="1.0",kind="dump"} 2"#,
    ] {
        assert!(has(&text, line), "{line:?} not in\n{text}");
    }
}

#[test]
fn config_bounds() {
    let mut c = MetricsConfig::default();
    assert!(c.listen.is_empty(), "off by default");
    assert!(c.validate().is_ok());
    c.listen = "0.0.0.0:9431".into();
    assert!(c.validate().is_ok(), "any address when set explicitly");
    c.listen = "nowhere".into();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("metrics.listen \"nowhere\""), "{err}");
    c.listen.clear();
    c.catalog_timeout = Duration::from_secs(600);
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("metrics.catalog_timeout"), "{err}");
}
