//! Sliding-window lockouts: too many events for one key within a window lock that key out for a
//! while. Used for wrong claim codes per source address and for MQTT clients that reconnect too
//! often (flapping). Pure logic with time passed in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LockoutPolicy {
    /// The event that brings the count within `window` to this number locks the key; 0 disables.
    pub threshold: usize,
    pub window: Duration,
    pub lockout: Duration,
}

/// Keys tracked at most; beyond it, keys quiet for longer than the window are forgotten.
const MAX_KEYS: usize = 10_000;

#[derive(Default)]
pub struct Lockouts {
    events: HashMap<String, VecDeque<Instant>>,
    locked_until: HashMap<String, Instant>,
}

impl Lockouts {
    /// `Some(remaining)` while `key` is locked out.
    pub fn locked(&mut self, key: &str, now: Instant) -> Option<Duration> {
        match self.locked_until.get(key) {
            Some(&until) if until > now => Some(until - now),
            Some(_) => {
                self.locked_until.remove(key);
                None
            }
            None => None,
        }
    }

    /// Records an event; returns the lockout when this event triggered one.
    pub fn record(&mut self, key: &str, now: Instant, policy: &LockoutPolicy) -> Option<Duration> {
        if policy.threshold == 0 {
            return None;
        }
        let events = self.events.entry(key.to_string()).or_default();
        events.push_back(now);
        while events.front().is_some_and(|&t| now.saturating_duration_since(t) > policy.window) {
            events.pop_front();
        }
        if events.len() >= policy.threshold {
            events.clear();
            self.locked_until.insert(key.to_string(), now + policy.lockout);
            return Some(policy.lockout);
        }
        if self.events.len() > MAX_KEYS {
            self.events
                .retain(|_, t| t.back().is_some_and(|&last| now.saturating_duration_since(last) <= policy.window));
        }
        None
    }

    /// Events for `key` in the current window (for messages like "3 attempts left").
    pub fn recent(&self, key: &str) -> usize {
        self.events.get(key).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLAIMS: LockoutPolicy =
        LockoutPolicy { threshold: 5, window: Duration::from_secs(15 * 60), lockout: Duration::from_secs(15 * 60) };

    #[test]
    fn five_events_in_the_window_lock_the_key_out() {
        let mut lockouts = Lockouts::default();
        let t0 = Instant::now();
        for i in 0..4 {
            assert_eq!(lockouts.record("10.0.0.9", t0 + Duration::from_secs(i * 60), &CLAIMS), None);
        }
        assert_eq!(lockouts.recent("10.0.0.9"), 4);
        assert_eq!(lockouts.record("10.0.0.9", t0 + Duration::from_secs(300), &CLAIMS), Some(CLAIMS.lockout));
        assert!(lockouts.locked("10.0.0.9", t0 + Duration::from_secs(301)).is_some());
        assert!(lockouts.locked("10.0.0.8", t0 + Duration::from_secs(301)).is_none(), "other keys unaffected");
        assert!(lockouts.locked("10.0.0.9", t0 + Duration::from_secs(300 + 901)).is_none(), "lockout ends");
    }

    #[test]
    fn events_spread_over_time_never_lock_and_zero_disables() {
        let mut lockouts = Lockouts::default();
        let t0 = Instant::now();
        for i in 0..20 {
            assert_eq!(lockouts.record("a", t0 + Duration::from_secs(i * 16 * 60), &CLAIMS), None);
        }
        let off = LockoutPolicy { threshold: 0, ..CLAIMS };
        for _ in 0..100 {
            assert_eq!(lockouts.record("b", t0, &off), None);
        }
    }
}
