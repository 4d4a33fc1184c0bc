//! The retention rule: which successful dumps of one job stay, as restic
//! `forget --keep-daily/--keep-weekly/--keep-monthly/--keep-yearly` decides
//! it, plus what is never removed. Pure: the worker applies it to its store
//! and the coordinator previews it from the catalog (docs/retention.md).
use chrono::{DateTime, Datelike, Utc};
pub use chrono_tz::Tz;

use crate::v1;

/// How many day, ISO week, month and year slices keep a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

impl From<&v1::Retention> for Policy {
    fn from(r: &v1::Retention) -> Self {
        Self {
            daily: r.keep_daily,
            weekly: r.keep_weekly,
            monthly: r.keep_monthly,
            yearly: r.keep_yearly,
        }
    }
}

/// One successful dump of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub dump_uuid: String,
    pub started_at: DateTime<Utc>,
    /// Pinned, or named by a restore job still to run (`Schedule.
    /// protected_dump_uuids` on the worker).
    pub pinned: bool,
    pub named_by_restore: bool,
}

/// Why a dump is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The newest successful dump of the job.
    Newest,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    Pinned,
    /// A restore job still to run names it.
    Restore,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Self::Newest => "newest",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Yearly => "yearly",
            Self::Pinned => "pinned",
            Self::Restore => "restore",
        }
    }
}

/// What the rule says about `dumps[index]`: kept for `reasons`, removed
/// when there are none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub index: usize,
    pub reasons: Vec<Reason>,
}

impl Verdict {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// The bucket a time falls in for each slice, in `tz`: day, ISO week (its
/// ISO year: 2021-01-03 is in 2020-W53), month, year.
fn buckets(t: DateTime<Utc>, tz: &Tz) -> [i64; 4] {
    let local = t.with_timezone(tz);
    let year = i64::from(local.year());
    let week = local.iso_week();
    [
        i64::from(local.date_naive().num_days_from_ce()),
        i64::from(week.year()) * 100 + i64::from(week.week()),
        year * 100 + i64::from(local.month()),
        year,
    ]
}

/// Applies `policy` to the successful dumps of one job. Walking newest
/// first (equal start times: the greater dump UUID first, so both sides
/// agree), a dump is kept for a slice when it is the newest of its bucket
/// and the slice has budget left; each kept bucket spends one. Also kept:
/// the newest dump, pinned dumps, dumps a restore names. Returns one
/// verdict per dump, newest first.
pub fn apply(policy: Policy, tz: &Tz, dumps: &[Candidate]) -> Vec<Verdict> {
    let mut order: Vec<usize> = (0..dumps.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&dumps[a], &dumps[b]);
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| b.dump_uuid.cmp(&a.dump_uuid))
    });
    let slices = [
        (Reason::Daily, policy.daily),
        (Reason::Weekly, policy.weekly),
        (Reason::Monthly, policy.monthly),
        (Reason::Yearly, policy.yearly),
    ];
    let mut left = slices.map(|(_, n)| n);
    let mut last: [Option<i64>; 4] = [None; 4];
    order
        .iter()
        .enumerate()
        .map(|(rank, &index)| {
            let d = &dumps[index];
            let mut reasons = Vec::new();
            if rank == 0 {
                reasons.push(Reason::Newest);
            }
            let keys = buckets(d.started_at, tz);
            for (i, (reason, _)) in slices.iter().enumerate() {
                if left[i] > 0 && last[i] != Some(keys[i]) {
                    last[i] = Some(keys[i]);
                    left[i] -= 1;
                    reasons.push(*reason);
                }
            }
            if d.pinned {
                reasons.push(Reason::Pinned);
            }
            if d.named_by_restore {
                reasons.push(Reason::Restore);
            }
            Verdict { index, reasons }
        })
        .collect()
}

/// Parses an IANA time zone name; empty is UTC.
pub fn timezone(name: &str) -> Result<Tz, String> {
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>().map_err(|_| {
        format!("time zone {name:?} is not an IANA time zone name (e.g. UTC, Europe/Amsterdam)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Reason::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn dump(uuid: &str, time: &str) -> Candidate {
        Candidate {
            dump_uuid: uuid.to_string(),
            started_at: at(time),
            pinned: false,
            named_by_restore: false,
        }
    }

    fn policy(daily: u32, weekly: u32, monthly: u32, yearly: u32) -> Policy {
        Policy {
            daily,
            weekly,
            monthly,
            yearly,
        }
    }

    /// The kept dumps' UUIDs with their reasons, newest first.
    fn kept(p: Policy, tz: &Tz, dumps: &[Candidate]) -> Vec<(String, Vec<Reason>)> {
        apply(p, tz, dumps)
            .into_iter()
            .filter(Verdict::keep)
            .map(|v| (dumps[v.index].dump_uuid.clone(), v.reasons))
            .collect()
    }

    /// Daily dumps at 02:00 UTC on 2024-01-01 .. 2024-02-09 (40 days), named
    /// by their date.
    fn forty_days() -> Vec<Candidate> {
        let first = at("2024-01-01T02:00:00Z");
        (0..40)
            .map(|i| {
                let t = first + chrono::Duration::days(i);
                Candidate {
                    dump_uuid: t.format("%m-%d").to_string(),
                    started_at: t,
                    pinned: false,
                    named_by_restore: false,
                }
            })
            .collect()
    }

    #[test]
    fn forty_daily_dumps_with_7_4_3_1() {
        // Worked example of docs/retention.md: 2024-02-09 is a Friday of
        // ISO week 6 (Feb 5-11).
        let got = kept(policy(7, 4, 3, 1), &Tz::UTC, &forty_days());
        let want: Vec<(String, Vec<Reason>)> = [
            ("02-09", vec![Newest, Daily, Weekly, Monthly, Yearly]),
            ("02-08", vec![Daily]),
            ("02-07", vec![Daily]),
            ("02-06", vec![Daily]),
            ("02-05", vec![Daily]),
            ("02-04", vec![Daily, Weekly]),
            ("02-03", vec![Daily]),
            ("01-31", vec![Monthly]),
            ("01-28", vec![Weekly]),
            ("01-21", vec![Weekly]),
        ]
        .into_iter()
        .map(|(u, r)| (u.to_string(), r))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            policy: Policy,
            tz: Tz,
            dumps: Vec<Candidate>,
            kept: Vec<&'static str>,
        }
        let pinned = |mut c: Candidate| {
            c.pinned = true;
            c
        };
        let restore = |mut c: Candidate| {
            c.named_by_restore = true;
            c
        };
        let amsterdam: Tz = "Europe/Amsterdam".parse().expect("zone");
        let cases = vec![
            Case {
                name: "no dumps",
                policy: policy(7, 4, 3, 1),
                tz: Tz::UTC,
                dumps: vec![],
                kept: vec![],
            },
            Case {
                name: "keep 0 everywhere: the newest, the pinned and the restore's only",
                policy: policy(0, 0, 0, 0),
                tz: Tz::UTC,
                dumps: vec![
                    dump("a", "2024-01-01T00:00:00Z"),
                    pinned(dump("b", "2024-01-02T00:00:00Z")),
                    restore(dump("c", "2024-01-03T00:00:00Z")),
                    dump("d", "2024-01-04T00:00:00Z"),
                    dump("e", "2024-01-05T00:00:00Z"),
                ],
                kept: vec!["e", "c", "b"],
            },
            Case {
                name: "a day's budget is spent on buckets, not dumps: newest of each day",
                policy: policy(2, 0, 0, 0),
                tz: Tz::UTC,
                dumps: vec![
                    dump("a", "2024-01-01T01:00:00Z"),
                    dump("b", "2024-01-01T23:00:00Z"),
                    dump("c", "2024-01-02T01:00:00Z"),
                    dump("d", "2024-01-02T05:00:00Z"),
                    dump("e", "2024-01-03T05:00:00Z"),
                ],
                kept: vec!["e", "d"],
            },
            Case {
                name: "a missing day is no bucket: the budget reaches further back",
                policy: policy(3, 0, 0, 0),
                tz: Tz::UTC,
                dumps: vec![
                    dump("a", "2024-01-01T01:00:00Z"),
                    dump("b", "2024-01-02T01:00:00Z"),
                    dump("c", "2024-01-05T01:00:00Z"),
                    dump("d", "2024-01-09T01:00:00Z"),
                ],
                kept: vec!["d", "c", "b"],
            },
            Case {
                name: "ISO week year: 2021-01-03 is in 2020-W53 with 2020-12-31",
                policy: policy(0, 2, 0, 0),
                tz: Tz::UTC,
                dumps: vec![
                    dump("thu-dec31", "2020-12-31T12:00:00Z"),
                    dump("fri-jan01", "2021-01-01T12:00:00Z"),
                    dump("sun-jan03", "2021-01-03T12:00:00Z"),
                    dump("mon-jan04", "2021-01-04T12:00:00Z"),
                ],
                kept: vec!["mon-jan04", "sun-jan03"],
            },
            Case {
                name: "calendar years are not ISO years",
                policy: policy(0, 0, 0, 2),
                tz: Tz::UTC,
                dumps: vec![
                    dump("thu-dec31", "2020-12-31T12:00:00Z"),
                    dump("sun-jan03", "2021-01-03T12:00:00Z"),
                    dump("mon-jan04", "2021-01-04T12:00:00Z"),
                ],
                kept: vec!["mon-jan04", "thu-dec31"],
            },
            Case {
                name: "2024-12-30 (Monday) is in 2025-W01",
                policy: policy(0, 2, 0, 0),
                tz: Tz::UTC,
                dumps: vec![
                    dump("sun-dec29", "2024-12-29T12:00:00Z"),
                    dump("mon-dec30", "2024-12-30T12:00:00Z"),
                    dump("thu-jan02", "2025-01-02T12:00:00Z"),
                ],
                kept: vec!["thu-jan02", "sun-dec29"],
            },
            Case {
                name: "days are cut in the worker's zone: two UTC-same-day dumps are two Amsterdam days",
                policy: policy(2, 0, 0, 0),
                tz: amsterdam,
                dumps: vec![
                    // 23:30 CET on Mar 30 and 00:30 CET on Mar 31 (the
                    // night the clocks go forward).
                    dump("a", "2024-03-30T22:30:00Z"),
                    dump("b", "2024-03-30T23:30:00Z"),
                ],
                kept: vec!["b", "a"],
            },
            Case {
                name: "the same two dumps are one UTC day",
                policy: policy(2, 0, 0, 0),
                tz: Tz::UTC,
                dumps: vec![
                    dump("a", "2024-03-30T22:30:00Z"),
                    dump("b", "2024-03-30T23:30:00Z"),
                ],
                kept: vec!["b"],
            },
            Case {
                name: "the repeated hour when clocks go back is one day",
                policy: policy(2, 0, 0, 0),
                tz: amsterdam,
                dumps: vec![
                    // 02:30 CEST and 02:30 CET on 2024-10-27, then the next day.
                    dump("a", "2024-10-27T00:30:00Z"),
                    dump("b", "2024-10-27T01:30:00Z"),
                    dump("c", "2024-10-28T01:30:00Z"),
                ],
                kept: vec!["c", "b"],
            },
            Case {
                name: "equal start times: the greater UUID is the newer, whatever the order",
                policy: policy(1, 0, 0, 0),
                tz: Tz::UTC,
                dumps: vec![
                    dump("0002", "2024-01-01T01:00:00Z"),
                    dump("0001", "2024-01-01T01:00:00Z"),
                    dump("0003", "2023-12-31T01:00:00Z"),
                ],
                kept: vec!["0002"],
            },
            Case {
                name: "monthly and yearly reach past the daily budget",
                policy: policy(1, 0, 2, 3),
                tz: Tz::UTC,
                dumps: vec![
                    dump("2022-06", "2022-06-15T00:00:00Z"),
                    dump("2023-11", "2023-11-15T00:00:00Z"),
                    dump("2023-12", "2023-12-15T00:00:00Z"),
                    dump("2024-01a", "2024-01-10T00:00:00Z"),
                    dump("2024-01b", "2024-01-20T00:00:00Z"),
                ],
                kept: vec!["2024-01b", "2023-12", "2022-06"],
            },
        ];
        for c in cases {
            let got: Vec<String> = kept(c.policy, &c.tz, &c.dumps)
                .into_iter()
                .map(|(u, _)| u)
                .collect();
            assert_eq!(got, c.kept, "{}", c.name);
        }
    }

    #[test]
    fn equal_times_give_the_same_verdicts_in_any_input_order() {
        let a = vec![
            dump("0001", "2024-01-01T01:00:00Z"),
            dump("0002", "2024-01-01T01:00:00Z"),
        ];
        let b: Vec<Candidate> = a.iter().rev().cloned().collect();
        let names = |d: &[Candidate]| -> Vec<String> {
            kept(policy(1, 0, 0, 0), &Tz::UTC, d)
                .into_iter()
                .map(|(u, _)| u)
                .collect()
        };
        assert_eq!(names(&a), names(&b));
        assert_eq!(names(&a), ["0002"]);
    }

    #[test]
    fn every_dump_gets_one_verdict() {
        let dumps = forty_days();
        let v = apply(policy(7, 4, 3, 1), &Tz::UTC, &dumps);
        assert_eq!(v.len(), dumps.len());
        let mut seen: Vec<usize> = v.iter().map(|v| v.index).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..dumps.len()).collect::<Vec<_>>());
        assert_eq!(v.iter().filter(|v| v.keep()).count(), 10);
    }

    #[test]
    fn time_zone_names() {
        assert_eq!(timezone(""), Ok(Tz::UTC));
        assert!(timezone("Europe/Amsterdam").is_ok());
        let err = timezone("Mars/Olympus").expect_err("not a zone");
        assert!(err.contains("Mars/Olympus"), "{err}");
    }
}
