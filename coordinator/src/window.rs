//! Where in an instance's backup window the daily dump of a discovered job
//! goes: in the window's hour that has the fewest jobs of the instance, at a
//! pseudo-random free minute of it (derived from the instance and the
//! database), so that dumps spread evenly over the window. No I/O.
use std::collections::HashSet;

use pgsnapman_proto::model::BackupWindow;

/// A time of day: (hour, minute).
pub type DayTime = (u32, u32);

/// The daily cron (`M H * * *`) of a new job for `database`: in the least
/// busy hour of `window` (by the times in `taken`; ties broken
/// pseudo-randomly), at a minute not in `taken` unless the whole hour is.
/// The time is added to `taken`. The same inputs always give the same answer.
pub fn discovered_cron(
    window: BackupWindow,
    instance_id: i64,
    database: &str,
    taken: &mut HashSet<DayTime>,
) -> String {
    let seed = seed(instance_id, database);
    let hours: Vec<u32> = (0..window.minutes() / 60)
        .map(|i| (window.start() + i) % 24)
        .collect();
    let load = |hour: u32| taken.iter().filter(|(h, _)| *h == hour).count();
    let least = hours.iter().map(|h| load(*h)).min().unwrap_or(0);
    let quiet: Vec<u32> = hours.into_iter().filter(|h| load(*h) == least).collect();
    let pick = |n: usize, bits: u64| usize::try_from(bits % n as u64).unwrap_or(0);
    let hour = quiet[pick(quiet.len(), seed)];
    let first = u32::try_from((seed >> 32) % 60).unwrap_or(0);
    let minute = (0..60)
        .map(|i| (first + i) % 60)
        .find(|m| !taken.contains(&(hour, *m)))
        .unwrap_or(first);
    taken.insert((hour, minute));
    format!("{minute} {hour} * * *")
}

/// The time of day of a cron expression that fires daily at one fixed time
/// (`M H * * *` with plain numbers); `None` for anything else.
pub fn daily_time(cron: &str) -> Option<DayTime> {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let [minute, hour, "*", "*", "*"] = fields.as_slice() else {
        return None;
    };
    let minute: u32 = minute.parse().ok().filter(|m| *m < 60)?;
    let hour: u32 = hour.parse().ok().filter(|h| *h < 24)?;
    Some((hour, minute))
}

/// FNV-1a over the instance id and the database name: stable across builds
/// and platforms (std's hasher is not), so a database keeps its minute.
fn seed(instance_id: i64, database: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    instance_id
        .to_be_bytes()
        .iter()
        .chain(database.as_bytes())
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(s: &str) -> BackupWindow {
        s.parse().unwrap()
    }

    fn times(w: BackupWindow, instance: i64, n: usize) -> Vec<DayTime> {
        let mut taken = HashSet::new();
        (0..n)
            .map(|i| {
                let cron = discovered_cron(w, instance, &format!("db_{i}"), &mut taken);
                daily_time(&cron).unwrap_or_else(|| panic!("not a daily cron: {cron}"))
            })
            .collect()
    }

    #[test]
    fn crons_fall_inside_the_window_evenly_over_its_hours() {
        let w = window("2-6");
        let t = times(w, 1, 100);
        assert!(t.iter().all(|(h, m)| w.contains(*h, *m)), "{t:?}");
        let distinct: HashSet<_> = t.iter().collect();
        assert_eq!(distinct.len(), 100, "{t:?}");
        for hour in 2..6 {
            let n = t.iter().filter(|(h, _)| *h == hour).count();
            assert_eq!(n, 25, "hour {hour}: {t:?}");
        }
    }

    #[test]
    fn wrapping_windows_use_both_sides_of_midnight() {
        let w = window("22-4");
        let t = times(w, 7, 6);
        let hours: HashSet<u32> = t.iter().map(|(h, _)| *h).collect();
        assert_eq!(hours, HashSet::from([22, 23, 0, 1, 2, 3]), "{t:?}");
        let t = times(w, 7, 60);
        assert!(t.iter().all(|(h, m)| w.contains(*h, *m)), "{t:?}");
        let whole_day = window("0-0");
        let t = times(whole_day, 7, 48);
        assert_eq!(t.iter().map(|(h, _)| h).collect::<HashSet<_>>().len(), 24);
    }

    #[test]
    fn a_few_databases_do_not_cluster() {
        // Three databases on an empty instance: three different hours, not
        // the first minutes of the window.
        let t = times(window("2-6"), 3, 3);
        assert_eq!(
            t.iter().map(|(h, _)| h).collect::<HashSet<_>>().len(),
            3,
            "{t:?}"
        );
        let minutes: HashSet<u32> = t.iter().map(|(_, m)| *m).collect();
        assert_ne!(minutes, HashSet::from([0]), "{t:?}");
    }

    #[test]
    fn a_full_window_still_gives_a_time_inside_it() {
        let w = window("23-0");
        let t = times(w, 1, 61);
        assert!(t.iter().all(|(h, _)| *h == 23), "{t:?}");
        assert_eq!(t.iter().collect::<HashSet<_>>().len(), 60);
    }

    #[test]
    fn taken_minutes_are_skipped_and_choices_are_stable() {
        let w = window("2-6");
        let mut empty = HashSet::new();
        let first = discovered_cron(w, 5, "shop", &mut empty);
        assert_eq!(first, discovered_cron(w, 5, "shop", &mut HashSet::new()));
        let mut taken = HashSet::from([daily_time(&first).unwrap()]);
        let second = discovered_cron(w, 5, "shop", &mut taken);
        assert_ne!(first, second);
        assert_eq!(taken.len(), 2);
        // Jobs outside the window do not make its hours look busy.
        let mut outside = HashSet::from([(12, 0), (12, 1)]);
        let (h, _) = daily_time(&discovered_cron(w, 5, "shop", &mut outside)).unwrap();
        assert!((2..6).contains(&h));
    }

    #[test]
    fn only_fixed_daily_crons_have_a_time_of_day() {
        assert_eq!(daily_time("37 3 * * *"), Some((3, 37)));
        assert_eq!(daily_time(" 0  22 * * * "), Some((22, 0)));
        for other in [
            "*/5 3 * * *",
            "0 3 * * 1",
            "0 3 1 * *",
            "60 3 * * *",
            "0 24 * * *",
            "@daily",
        ] {
            assert_eq!(daily_time(other), None, "{other}");
        }
    }
}
