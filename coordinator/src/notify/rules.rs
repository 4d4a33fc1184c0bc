//! Rule classes and their defaults, the age judgement of `dump_missing`
//! (from a job's cron), and the JSON payload every channel receives
//! (docs/alerts.md "Payload", version 1). No I/O here.
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgsnapman_proto::model::CronExpr;
use serde_json::{Value, json};

use crate::catalog::notify::{Firing, JobFreshness, RuleRow, cut};

/// Version of the payload's JSON shape (field `version`).
pub const PAYLOAD_VERSION: u32 = 1;

/// The classes a rule may watch: API name, catalog name, default severity.
pub const CLASSES: &[(&str, &str, &str)] = &[
    ("dump_failed", "DUMP_FAILED", "critical"),
    ("restore_failed", "RESTORE_FAILED", "critical"),
    ("verify_failed", "VERIFY_FAILED", "critical"),
    ("dump_missing", "DUMP_MISSING", "critical"),
    ("worker_offline", "WORKER_OFFLINE", "warning"),
    ("outbox_backlog", "OUTBOX_BACKLOG", "warning"),
    ("channel_failed", "CHANNEL_FAILED", "warning"),
];

pub const SEVERITIES: &[&str] = &["info", "warning", "critical"];

/// `worker_offline` without a threshold: offline longer than this.
pub const DEFAULT_OFFLINE_AFTER: Duration = Duration::from_secs(15 * 60);
/// `outbox_backlog` without a threshold: more events waiting than this.
pub const DEFAULT_BACKLOG: i64 = 10_000;
/// `dump_missing` without a max age: this many cron periods.
pub const MISSING_PERIODS: f64 = 1.5;
/// The longest threshold accepted (a year).
pub const MAX_THRESHOLD_SECONDS: u64 = 366 * 24 * 3600;

/// The catalog name and default severity of an API class name.
pub fn class(api: &str) -> Result<(&'static str, &'static str), String> {
    CLASSES
        .iter()
        .find(|(a, _, _)| *a == api)
        .map(|(_, c, s)| (*c, *s))
        .ok_or_else(|| {
            let names: Vec<&str> = CLASSES.iter().map(|(a, _, _)| *a).collect();
            format!(
                "rule class {:?} is not one of {}",
                cut(api, 64),
                names.join(", ")
            )
        })
}

/// The API name of a catalog class name.
pub fn api_class(catalog: &str) -> &'static str {
    CLASSES
        .iter()
        .find(|(_, c, _)| *c == catalog)
        .map_or("unknown", |(a, _, _)| *a)
}

pub fn severity(api: &str) -> Result<&'static str, String> {
    SEVERITIES
        .iter()
        .find(|s| **s == api)
        .copied()
        .ok_or_else(|| {
            format!(
                "severity {:?} is not one of {}",
                cut(api, 64),
                SEVERITIES.join(", ")
            )
        })
}

/// The age above which a job's newest good dump is missing: the rule's
/// `max_age`, else 1.5 times the gap between the cron's next two firings.
pub fn missing_after(
    max_age: Option<Duration>,
    cron: &str,
    now: DateTime<Utc>,
) -> Option<Duration> {
    if let Some(d) = max_age {
        return Some(d);
    }
    let expr = CronExpr::parse(cron).ok()?;
    let a = expr.next_after(&now)?;
    let b = expr.next_after(&a)?;
    let period = (b - a).to_std().ok()?;
    Some(period.mul_f64(MISSING_PERIODS))
}

/// The jobs of `jobs` whose newest good dump (or, without one, the job's
/// creation) is older than their threshold.
pub fn missing_dumps(
    jobs: &[JobFreshness],
    max_age: Option<Duration>,
    now: DateTime<Utc>,
) -> Vec<Firing> {
    let mut out = Vec::new();
    for j in jobs {
        let Some(limit) = missing_after(max_age, &j.cron, now) else {
            continue;
        };
        let since = j.last_success.unwrap_or(j.created_at);
        let Ok(age) = (now - since).to_std() else {
            continue;
        };
        if age <= limit {
            continue;
        }
        let last = j.last_success.map_or("never".to_string(), |t| {
            t.format("%Y-%m-%d %H:%M UTC").to_string()
        });
        out.push(Firing {
            subject: format!("job:{}", j.job_id),
            summary: format!(
                "dump job {} ({} on worker {}) has no good dump for {} (limit {}; last: {last})",
                j.job_id,
                if j.database.is_empty() {
                    "all databases"
                } else {
                    &j.database
                },
                j.worker,
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(Duration::from_secs(limit.as_secs())),
            ),
            details: json!({
                "job_id": j.job_id, "database": j.database, "worker": j.worker,
                "cron": j.cron, "last_success": j.last_success,
                "age_seconds": age.as_secs(), "threshold_seconds": limit.as_secs(),
            }),
        });
    }
    out
}

/// The body every channel receives for an incident change.
#[allow(clippy::too_many_arguments)]
pub fn payload(
    rule: &RuleRow,
    incident_id: i64,
    subject: &str,
    summary: &str,
    details: &Value,
    opened_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
) -> Value {
    json!({
        "version": PAYLOAD_VERSION,
        "status": if resolved_at.is_some() { "resolved" } else { "firing" },
        "incident_id": incident_id,
        "rule": rule.name,
        "class": api_class(&rule.class),
        "severity": rule.severity.to_ascii_lowercase(),
        "subject": subject,
        "summary": summary,
        "details": details,
        "opened_at": opened_at,
        "resolved_at": resolved_at,
    })
}

/// The subject line and text of the mail for a payload.
pub fn mail(payload: &Value) -> (String, String) {
    let s = |k: &str| payload[k].as_str().unwrap_or_default().to_string();
    let status = if s("status") == "resolved" {
        "RESOLVED "
    } else {
        ""
    };
    let subject = format!(
        "[pgsnapman {}] {status}{}",
        s("severity").to_ascii_uppercase(),
        cut(&s("summary"), 150)
    );
    let details = serde_json::to_string_pretty(&payload["details"]).unwrap_or_default();
    let text = format!(
        "{}\n\nrule:      {}\nclass:     {}\nseverity:  {}\nstatus:    {}\nsubject:   {}\nincident:  {}\nopened at: {}\n{}\ndetails:\n{details}\n",
        s("summary"),
        s("rule"),
        s("class"),
        s("severity"),
        s("status"),
        s("subject"),
        payload["incident_id"],
        s("opened_at"),
        payload["resolved_at"]
            .as_str()
            .map(|r| format!("resolved:  {r}\n"))
            .unwrap_or_default(),
    );
    (subject, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn classes_and_severities_are_checked() {
        assert_eq!(class("dump_failed").unwrap(), ("DUMP_FAILED", "critical"));
        assert_eq!(class("worker_offline").unwrap().1, "warning");
        assert!(class("disk_full").unwrap_err().contains("dump_failed"));
        assert!(severity("page").is_err());
        for (a, c, _) in CLASSES {
            assert_eq!(api_class(c), *a);
        }
    }

    #[test]
    fn missing_age_comes_from_the_cron_or_the_rule() {
        let now = t("2026-01-10T12:00:00Z");
        // Daily at 02:00: 1.5 days.
        assert_eq!(
            missing_after(None, "0 2 * * *", now),
            Some(Duration::from_secs(36 * 3600))
        );
        assert_eq!(
            missing_after(Some(Duration::from_secs(60)), "0 2 * * *", now),
            Some(Duration::from_secs(60))
        );
        let job = |last: Option<&str>| JobFreshness {
            job_id: 7,
            cron: "0 2 * * *".into(),
            database: "db".into(),
            worker: "w".into(),
            created_at: t("2026-01-01T00:00:00Z"),
            last_success: last.map(t),
        };
        assert!(missing_dumps(&[job(Some("2026-01-10T02:05:00Z"))], None, now).is_empty());
        let late = missing_dumps(&[job(Some("2026-01-08T02:05:00Z"))], None, now);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].subject, "job:7", "the incident key is per job");
        assert_eq!(
            missing_dumps(&[job(None)], None, now).len(),
            1,
            "never dumped"
        );
    }

    #[test]
    fn payload_and_mail_carry_the_incident() {
        let rule = RuleRow {
            id: 1,
            name: "r".into(),
            class: "DUMP_FAILED".into(),
            severity: "CRITICAL".into(),
            job_id: None,
            threshold_seconds: None,
            threshold_count: None,
            send_resolved: false,
            created_at: t("2026-01-01T00:00:00Z"),
            channels: vec![],
            channel_ids: vec![],
            open_incidents: 0,
        };
        let p = payload(
            &rule,
            9,
            "job:3",
            "it broke",
            &json!({"job_id": 3}),
            t("2026-01-01T00:00:00Z"),
            None,
        );
        assert_eq!(p["status"], "firing");
        assert_eq!(p["class"], "dump_failed");
        assert_eq!(p["severity"], "critical");
        assert_eq!(p["version"], 1);
        let (subject, text) = mail(&p);
        assert_eq!(subject, "[pgsnapman CRITICAL] it broke");
        assert!(
            text.contains("job:3") && text.contains("\"job_id\": 3"),
            "{text}"
        );
    }
}
