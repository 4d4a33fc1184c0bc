//! Which coordinator the link dials: the configured URLs as a ring. A worker
//! starts at the URL its name hashes to (a fleet spreads over the
//! coordinators without coordination) and moves to the next after any
//! failed session; pure bookkeeping, the caller dials and sleeps.

/// The coordinator URLs and the one in use.
#[derive(Debug, Clone)]
pub struct Ring {
    urls: Vec<String>,
    current: usize,
}

impl Ring {
    /// `urls` must be non-empty (`CoordinatorConfig::url_list` checks it).
    pub fn new(urls: Vec<String>, worker_name: &str) -> Self {
        let current = if urls.is_empty() {
            0
        } else {
            usize::try_from(fnv1a(worker_name.as_bytes()) % urls.len() as u64).unwrap_or(0)
        };
        Self { urls, current }
    }

    /// The URL to dial now.
    pub fn current(&self) -> &str {
        self.urls.get(self.current).map_or("", String::as_str)
    }

    /// Moves to the next URL (wrapping); returns it.
    pub fn advance(&mut self) -> &str {
        if !self.urls.is_empty() {
            self.current = (self.current + 1) % self.urls.len();
        }
        self.current()
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms (std's hasher is
/// not promised to be), so a worker keeps its first choice across restarts.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("https://c{i}:7431")).collect()
    }

    #[test]
    fn the_ring_visits_every_url_in_turn() {
        let mut r = Ring::new(urls(3), "w-1");
        let first = r.current().to_string();
        let mut seen = vec![first.clone()];
        for _ in 0..2 {
            seen.push(r.advance().to_string());
        }
        seen.sort();
        assert_eq!(seen, urls(3));
        assert_eq!(r.advance(), first, "wraps around");
        let mut one = Ring::new(urls(1), "w-1");
        assert_eq!(one.advance(), "https://c0:7431");
    }

    #[test]
    fn a_fleet_spreads_over_the_coordinators_and_keeps_its_choice() {
        let starts: Vec<String> = (0..100)
            .map(|i| {
                Ring::new(urls(2), &format!("worker-{i}"))
                    .current()
                    .to_string()
            })
            .collect();
        let on_first = starts.iter().filter(|u| *u == "https://c0:7431").count();
        assert!(
            (25..=75).contains(&on_first),
            "{on_first} of 100 on the first"
        );
        assert_eq!(
            Ring::new(urls(2), "worker-7").current(),
            starts[7],
            "the same name always starts at the same URL"
        );
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a test vector");
    }
}
