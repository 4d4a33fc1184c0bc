use pgsnapman_proto::v1::{DumpFinished, DumpsDeleted, StoreStats};

use super::*;
use crate::state::State;

fn dump(succeeded: bool, secs: i64, dump_bytes: u64, stored_bytes: u64) -> event::Body {
    let start = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("a time");
    event::Body::DumpFinished(DumpFinished {
        dump_type: DumpType::Full as i32,
        succeeded,
        started_at: Some(pgsnapman_proto::timestamp(start)),
        finished_at: Some(pgsnapman_proto::timestamp(
            start + chrono::Duration::seconds(secs),
        )),
        dump_bytes,
        stored_bytes,
        ..Default::default()
    })
}

/// The value of the sample line that starts with `series ` exactly.
fn sample(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_string)
}

#[test]
fn facts_become_counters_histograms_and_gauges_by_convention() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let outbox =
        Outbox::open(&State::open(&crate::state::dir(dir.path())).expect("state")).expect("outbox");
    let m = Metrics::new();
    m.observe(&dump(true, 90, 1000, 250));
    m.observe(&dump(false, 2, 0, 0));
    m.observe(&event::Body::StoreStats(StoreStats {
        pack_bytes: 4096,
        logical_bytes: 3000,
        stored_bytes: 1000,
        dumps: 2,
        ..Default::default()
    }));
    m.observe(&event::Body::DumpsDeleted(DumpsDeleted {
        dump_uuids: vec!["a".into(), "b".into()],
        reason: crate::retention::REASON.into(),
    }));
    m.restore_finished(
        RestoreType::Data as i32,
        RestoreStatus::Aborted as i32,
        Duration::from_secs(3),
    );
    let text = m.render(&outbox);
    let ok = r#"{type="full",status="succeeded"}"#;
    let failed = r#"{type="full",status="failed"}"#;
    for (series, value) in [
        (format!("pgsnapman_dumps_total{ok}"), "1"),
        (format!("pgsnapman_dumps_total{failed}"), "1"),
        (format!("pgsnapman_dump_duration_seconds_count{ok}"), "1"),
        (format!("pgsnapman_dump_duration_seconds_sum{ok}"), "90.0"),
        (
            r#"pgsnapman_dump_duration_seconds_bucket{le="60.0",type="full",status="succeeded"}"#
                .into(),
            "0",
        ),
        (
            r#"pgsnapman_dump_duration_seconds_bucket{le="120.0",type="full",status="succeeded"}"#
                .into(),
            "1",
        ),
        (
            r#"pgsnapman_dump_output_bytes_total{type="full"}"#.into(),
            "1000",
        ),
        (
            r#"pgsnapman_dump_stored_bytes_total{type="full"}"#.into(),
            "250",
        ),
        (
            r#"pgsnapman_restores_total{type="data",status="aborted"}"#.into(),
            "1",
        ),
        (
            r#"pgsnapman_deleted_dumps_total{reason="retention"}"#.into(),
            "2",
        ),
        ("pgsnapman_store_pack_bytes".into(), "4096"),
        ("pgsnapman_store_dedup_ratio".into(), "3.0"),
        ("pgsnapman_outbox_events".into(), "0"),
        ("pgsnapman_outbox_oldest_event_age_seconds".into(), "0.0"),
    ] {
        assert_eq!(
            sample(&text, &series).as_deref(),
            Some(value),
            "{series} in\n{text}"
        );
    }
    assert!(text.contains("# TYPE pgsnapman_dumps counter"), "{text}");
    assert!(
        text.contains("# UNIT pgsnapman_dump_duration_seconds seconds"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
}

#[test]
fn the_outbox_gauges_follow_the_outbox() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let outbox =
        Outbox::open(&State::open(&crate::state::dir(dir.path())).expect("state")).expect("outbox");
    outbox
        .append(event::Body::DumpsDeleted(DumpsDeleted::default()))
        .expect("append");
    let m = Metrics::new();
    let text = m.render(&outbox);
    assert_eq!(
        sample(&text, "pgsnapman_outbox_events").as_deref(),
        Some("1")
    );
    let age: f64 = sample(&text, "pgsnapman_outbox_oldest_event_age_seconds")
        .and_then(|v| v.parse().ok())
        .expect("an age");
    assert!((0.0..60.0).contains(&age), "{age}");
}

#[test]
fn uuid_v7_ages_and_label_values() {
    let id = uuid::Uuid::now_v7().as_u128();
    let made = u64::try_from(id >> 80).expect("48 bits");
    assert_eq!(age_of_uuid_v7(id, made + 2500), 2.5);
    assert_eq!(age_of_uuid_v7(id, made - 1), 0.0, "a clock step back is 0");
    assert_eq!(dump_type(DumpType::ClusterSchema as i32), "cluster_schema");
    assert_eq!(dump_type(99), "unspecified");
    assert_eq!(ratio(10, 0), 0.0);
}

#[test]
fn lease_renewals_are_timed_from_the_first_unanswered_send() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let outbox =
        Outbox::open(&State::open(&crate::state::dir(dir.path())).expect("state")).expect("outbox");
    let m = Metrics::new();
    m.renewal_answered(7);
    m.renewal_sent(7);
    m.renewal_sent(7);
    m.renewal_answered(7);
    m.renewal_answered(7);
    let text = m.render(&outbox);
    assert_eq!(
        sample(&text, "pgsnapman_lease_renewal_round_trip_seconds_count").as_deref(),
        Some("1"),
        "{text}"
    );
}

/// A result reported again under a new lease is one fact, counted once.
#[test]
fn a_result_reported_again_is_not_counted_again() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let outbox =
        Outbox::open(&State::open(&crate::state::dir(dir.path())).expect("state")).expect("outbox");
    // An invalid dump type: no other test (they share the process's
    // metrics) counts under its label.
    let body = || {
        let mut d = dump(false, 1, 0, 0);
        if let event::Body::DumpFinished(d) = &mut d {
            d.dump_type = 99;
        }
        d
    };
    let counted = || {
        get()
            .dumps
            .get_or_create(&[("type", "unspecified"), ("status", "failed")])
            .get()
    };
    let before = counted();
    outbox
        .append_result(41, "dump of job 1", vec![body()])
        .expect("append");
    assert_eq!(counted(), before + 1);
    outbox
        .append_result_again(41, "dump of job 1", vec![body()])
        .expect("append again");
    assert_eq!(counted(), before + 1, "counted once");
}
