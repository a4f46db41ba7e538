//! Brute-force protection for claim codes: wrong codes count against their source (an IP
//! address or a client); too many in a window lock the source out for a while. Pure logic with
//! time passed in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct AttemptPolicy {
    pub max_failures: usize,
    pub window: Duration,
    pub lockout: Duration,
}

impl Default for AttemptPolicy {
    fn default() -> Self {
        AttemptPolicy { max_failures: 5, window: Duration::from_secs(15 * 60), lockout: Duration::from_secs(15 * 60) }
    }
}

#[derive(Default)]
pub struct Attempts {
    failures: HashMap<String, VecDeque<Instant>>,
    locked_until: HashMap<String, Instant>,
}

impl Attempts {
    /// `Some(remaining)` while `source` is locked out.
    pub fn locked(&mut self, source: &str, now: Instant) -> Option<Duration> {
        match self.locked_until.get(source) {
            Some(&until) if until > now => Some(until - now),
            Some(_) => {
                self.locked_until.remove(source);
                None
            }
            None => None,
        }
    }

    /// Records a wrong code; returns the lockout when this failure triggered one.
    pub fn fail(&mut self, source: &str, now: Instant, policy: &AttemptPolicy) -> Option<Duration> {
        let failures = self.failures.entry(source.to_string()).or_default();
        failures.push_back(now);
        while failures.front().is_some_and(|&t| now.saturating_duration_since(t) > policy.window) {
            failures.pop_front();
        }
        if failures.len() >= policy.max_failures {
            failures.clear();
            self.locked_until.insert(source.to_string(), now + policy.lockout);
            return Some(policy.lockout);
        }
        None
    }

    /// The failures in the window so far (for messages like "3 attempts left").
    pub fn recent_failures(&self, source: &str) -> usize {
        self.failures.get(source).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_in_fifteen_minutes_lock_the_source_out() {
        let policy = AttemptPolicy::default();
        let mut attempts = Attempts::default();
        let t0 = Instant::now();
        for i in 0..4 {
            assert_eq!(attempts.fail("10.0.0.9", t0 + Duration::from_secs(i * 60), &policy), None);
        }
        assert_eq!(attempts.recent_failures("10.0.0.9"), 4);
        assert_eq!(attempts.fail("10.0.0.9", t0 + Duration::from_secs(300), &policy), Some(policy.lockout));
        assert!(attempts.locked("10.0.0.9", t0 + Duration::from_secs(301)).is_some());
        assert!(attempts.locked("10.0.0.8", t0 + Duration::from_secs(301)).is_none(), "other sources unaffected");
        assert!(attempts.locked("10.0.0.9", t0 + Duration::from_secs(300 + 901)).is_none(), "lockout ends");
    }

    #[test]
    fn failures_spread_over_time_never_lock() {
        let policy = AttemptPolicy::default();
        let mut attempts = Attempts::default();
        let t0 = Instant::now();
        for i in 0..20 {
            assert_eq!(attempts.fail("a", t0 + Duration::from_secs(i * 16 * 60), &policy), None);
        }
    }
}
