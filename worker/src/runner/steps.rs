//! The time each step of one dump took (connect, probe, metadata, the dump
//! program, the store catching up, the archive check, the manifest), logged
//! in one line when the dump ends: where a dump's fixed cost goes
//! (docs/benchmarks.md). Measures only; decides nothing.
use std::fmt::Write;
use std::time::{Duration, Instant};

/// Most steps a dump records; why: the runner names eight, and a bound
/// keeps the line short whatever a future caller does (marks past it are
/// added to the last step's name slot as "other").
const MAX_STEPS: usize = 12;

/// Step durations of one dump, in the order they ended.
#[derive(Debug)]
pub struct Steps {
    start: Instant,
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl Default for Steps {
    fn default() -> Self {
        Self::new()
    }
}

impl Steps {
    /// Starts the clock now.
    pub fn new() -> Self {
        let now = Instant::now();
        Steps {
            start: now,
            last: now,
            steps: Vec::new(),
        }
    }

    /// Step `name` ended now (it began when the previous one ended).
    pub fn mark(&mut self, name: &'static str) {
        self.mark_at(name, Instant::now());
    }

    /// Step `name` ended at `at` (not before the previous step's end).
    pub fn mark_at(&mut self, name: &'static str, at: Instant) {
        let at = at.max(self.last);
        let took = at - self.last;
        self.last = at;
        if self.steps.len() < MAX_STEPS {
            self.steps.push((name, took));
        } else if let Some(last) = self.steps.last_mut() {
            *last = ("other", last.1 + took);
        }
    }

    /// The time since the clock started.
    pub fn total(&self) -> Duration {
        self.start.elapsed()
    }

    /// `name=12.3ms` per step, space-separated, then the rest up to now.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (name, took) in &self.steps {
            let _ = write!(s, "{name}={:.1}ms ", took.as_secs_f64() * 1e3);
        }
        let _ = write!(s, "rest={:.1}ms", self.last.elapsed().as_secs_f64() * 1e3);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_add_up_to_the_total_and_keep_their_order() {
        let mut steps = Steps::new();
        let t0 = steps.start;
        steps.mark_at("a", t0 + Duration::from_millis(5));
        steps.mark_at("b", t0 + Duration::from_millis(12));
        // A mark earlier than the previous one counts as zero, not negative.
        steps.mark_at("c", t0 + Duration::from_millis(3));
        assert_eq!(
            steps.steps,
            vec![
                ("a", Duration::from_millis(5)),
                ("b", Duration::from_millis(7)),
                ("c", Duration::ZERO)
            ]
        );
        let s = steps.summary();
        assert!(s.starts_with("a=5.0ms b=7.0ms c=0.0ms rest="), "{s}");
    }

    #[test]
    fn marks_past_the_bound_go_into_one_last_step() {
        let mut steps = Steps::new();
        let t0 = steps.start;
        for i in 1..=(MAX_STEPS as u64 + 3) {
            steps.mark_at("x", t0 + Duration::from_millis(i));
        }
        assert_eq!(steps.steps.len(), MAX_STEPS);
        assert_eq!(
            steps.steps.last(),
            Some(&("other", Duration::from_millis(4)))
        );
    }
}
