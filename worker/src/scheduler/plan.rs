//! When a REPEAT job should fire, decided from the mirrored cron expression,
//! the worker's time zone and the last fire the worker recorded. Pure logic:
//! no clock, no I/O; the scheduler loop supplies `now`.
use chrono::{DateTime, TimeZone, Utc};
use pgsnapman_proto::model::CronExpr;

/// What to do about one job at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run now, for the fire scheduled at `scheduled`.
    Fire { scheduled: DateTime<Utc> },
    /// A fire was missed (the worker was down) longer ago than the grace
    /// period: record it as handled and report it, but do not run.
    SkipMissed { scheduled: DateTime<Utc> },
    /// Nothing to do before `until`.
    Wait { until: DateTime<Utc> },
    /// The expression never fires again.
    Never,
}

/// Decides for one job.
///
/// `last_handled` is the scheduled time of the last fire the worker ran or
/// skipped (persisted), or `None` for a job the worker has not handled yet,
/// in which case `first_seen` (when the job entered the mirror) stands in for
/// it: a new job never fires for times before it was known.
///
/// Missed-fire policy: when one or more fires fell between `last_handled` and
/// `now`, only the latest one counts; it runs if it is at most `grace` old,
/// otherwise it is skipped (and reported by the caller). Older missed fires
/// are not run: a dump now supersedes them.
pub fn decide<Tz: TimeZone>(
    cron: &CronExpr,
    tz: &Tz,
    last_handled: Option<DateTime<Utc>>,
    first_seen: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> Decision {
    let since = last_handled.unwrap_or(first_seen).with_timezone(tz);
    let Some(first_due) = cron.next_after(&since) else {
        return Decision::Never;
    };
    let first_due = first_due.with_timezone(&Utc);
    if first_due > now {
        return Decision::Wait { until: first_due };
    }
    // Walk to the latest due fire ≤ now. Bounded: a minutely job missed for a
    // year is ~525k steps; cap the walk and treat the cap as "latest".
    const MAX_STEPS: usize = 1_000_000;
    let mut latest = first_due;
    for _ in 0..MAX_STEPS {
        match cron.next_after(&latest.with_timezone(tz)) {
            Some(next) if next.with_timezone(&Utc) <= now => latest = next.with_timezone(&Utc),
            _ => break,
        }
    }
    if now - latest <= grace {
        Decision::Fire { scheduled: latest }
    } else {
        Decision::SkipMissed { scheduled: latest }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, h, m, s).unwrap()
    }

    fn grace() -> chrono::Duration {
        chrono::Duration::minutes(30)
    }

    #[test]
    fn a_new_job_waits_for_its_next_fire() {
        let c = CronExpr::parse("0 2 * * *").unwrap();
        let d = decide(&c, &Utc, None, t(1, 0, 0), t(1, 30, 0), grace());
        assert_eq!(d, Decision::Wait { until: t(2, 0, 0) });
    }

    #[test]
    fn fires_when_due_and_not_again_for_the_same_time() {
        let c = CronExpr::parse("*/5 * * * *").unwrap();
        let d = decide(&c, &Utc, Some(t(1, 55, 0)), t(0, 0, 0), t(2, 0, 1), grace());
        assert_eq!(
            d,
            Decision::Fire {
                scheduled: t(2, 0, 0)
            }
        );
        let d = decide(&c, &Utc, Some(t(2, 0, 0)), t(0, 0, 0), t(2, 0, 2), grace());
        assert_eq!(d, Decision::Wait { until: t(2, 5, 0) });
    }

    #[test]
    fn missed_fires_collapse_to_the_latest_within_grace() {
        let c = CronExpr::parse("*/5 * * * *").unwrap();
        // Down from 1:00 to 2:12: fires 1:05..2:10 missed; 2:10 is 2 min old.
        let d = decide(&c, &Utc, Some(t(1, 0, 0)), t(0, 0, 0), t(2, 12, 0), grace());
        assert_eq!(
            d,
            Decision::Fire {
                scheduled: t(2, 10, 0)
            }
        );
    }

    #[test]
    fn a_missed_fire_older_than_grace_is_skipped() {
        let c = CronExpr::parse("0 2 * * *").unwrap();
        let d = decide(
            &c,
            &Utc,
            Some(t(2, 0, 0) - chrono::Duration::days(1)),
            t(0, 0, 0),
            t(5, 0, 0),
            grace(),
        );
        assert_eq!(
            d,
            Decision::SkipMissed {
                scheduled: t(2, 0, 0)
            }
        );
    }

    #[test]
    fn time_zone_shifts_the_fire() {
        let c = CronExpr::parse("0 2 * * *").unwrap();
        let tz = chrono::FixedOffset::east_opt(3600).unwrap();
        // 02:00 at UTC+1 is 01:00 UTC.
        let d = decide(&c, &tz, Some(t(0, 0, 0)), t(0, 0, 0), t(0, 30, 0), grace());
        assert_eq!(d, Decision::Wait { until: t(1, 0, 0) });
    }
}
