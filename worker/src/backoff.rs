//! Exponential reconnect backoff with full jitter. Pure arithmetic plus a
//! random draw; the caller does the sleeping.
use std::time::Duration;

use rand::Rng;

/// Delays grow from `initial` doubling up to `max`; each delay is drawn
/// uniformly between `initial` and the current ceiling.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        Self {
            initial,
            max,
            ceiling: initial,
        }
    }

    /// The next delay; never below `initial` nor above `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.max);
        let low = self.initial.as_millis();
        let high = ceiling.as_millis();
        if high <= low {
            return ceiling;
        }
        let ms = rand::thread_rng().gen_range(low..=high);
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// Back to `initial`, after a session that worked.
    pub fn reset(&mut self) {
        self.ceiling = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_bounds_and_grow() {
        let initial = Duration::from_millis(200);
        let max = Duration::from_secs(30);
        let mut b = Backoff::new(initial, max);
        let first = b.next_delay();
        assert_eq!(first, initial);
        let mut seen_max = Duration::ZERO;
        for _ in 0..200 {
            let d = b.next_delay();
            assert!(d >= initial && d <= max, "{d:?}");
            seen_max = seen_max.max(d);
        }
        assert!(seen_max > Duration::from_secs(5), "{seen_max:?}");
        b.reset();
        assert_eq!(b.next_delay(), initial);
    }

    #[test]
    fn max_below_initial_is_clamped() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        for _ in 0..10 {
            assert_eq!(b.next_delay(), Duration::from_secs(2));
        }
    }
}
