//! Sliding-window lockouts: too many events for one key within a window lock that key out for a
//! while. Used for wrong claim codes and admin passwords per source address (as attempts, see
//! [`Lockouts::begin`]) and for MQTT clients that reconnect too often (flapping). Pure logic with
//! time passed in.

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
        drop_old(events, now, policy);
        if events.len() >= policy.threshold {
            events.clear();
            self.locked_until.insert(key.to_string(), now + policy.lockout);
            return Some(policy.lockout);
        }
        self.forget_quiet(now, policy);
        None
    }

    /// Events for `key` in the current window (for messages like "3 attempts left").
    pub fn recent(&self, key: &str) -> usize {
        self.events.get(key).map_or(0, VecDeque::len)
    }

    /// Starts an attempt that the lockout guards (a claim code, a password) and counts it at
    /// once, before it is checked, so that attempts sent in parallel cannot all be checked before
    /// the first failure is recorded. `Ok(at)` identifies the attempt for [`Lockouts::forgive`]
    /// or [`Lockouts::fail`]; `Err(wait)` refuses it unseen and uncounted, while `key` is locked
    /// out or while the attempts counted in the window (failed or still being checked) already
    /// reach the threshold.
    pub fn begin(&mut self, key: &str, now: Instant, policy: &LockoutPolicy) -> Result<Instant, Duration> {
        if let Some(wait) = self.locked(key, now) {
            return Err(wait);
        }
        if policy.threshold == 0 {
            return Ok(now);
        }
        let events = self.events.entry(key.to_string()).or_default();
        drop_old(events, now, policy);
        if events.len() >= policy.threshold {
            // Attempts still being checked fill the quota: the oldest leaves the window by then.
            let oldest = events.front().copied().unwrap_or(now);
            return Err((oldest + policy.window).saturating_duration_since(now).max(Duration::from_secs(1)));
        }
        events.push_back(now);
        self.forget_quiet(now, policy);
        Ok(now)
    }

    /// The attempt begun at `at` was right: it no longer counts.
    pub fn forgive(&mut self, key: &str, at: Instant) {
        if let Some(events) = self.events.get_mut(key) {
            if let Some(position) = events.iter().rposition(|&t| t == at) {
                events.remove(position);
            }
            if events.is_empty() {
                self.events.remove(key);
            }
        }
    }

    /// An attempt was wrong: it stays counted, and when the attempts counted for `key` reach the
    /// threshold, `key` is locked out; returns the lockout when this failure triggered it.
    pub fn fail(&mut self, key: &str, now: Instant, policy: &LockoutPolicy) -> Option<Duration> {
        if policy.threshold == 0 || self.locked(key, now).is_some() {
            return None;
        }
        let events = self.events.get_mut(key)?;
        drop_old(events, now, policy);
        if events.len() < policy.threshold {
            return None;
        }
        events.clear();
        self.locked_until.insert(key.to_string(), now + policy.lockout);
        Some(policy.lockout)
    }

    /// Beyond [`MAX_KEYS`], forgets the keys quiet for longer than the window.
    fn forget_quiet(&mut self, now: Instant, policy: &LockoutPolicy) {
        if self.events.len() > MAX_KEYS {
            self.events
                .retain(|_, t| t.back().is_some_and(|&last| now.saturating_duration_since(last) <= policy.window));
        }
    }
}

/// Drops the events that left the window.
fn drop_old(events: &mut VecDeque<Instant>, now: Instant, policy: &LockoutPolicy) {
    while events.front().is_some_and(|&t| now.saturating_duration_since(t) > policy.window) {
        events.pop_front();
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

    /// Attempts count from the moment they begin, so parallel ones cannot outrun the lockout.
    /// Script steps, one second apart (spaces are only for reading): `b` an attempt begins, `B`
    /// one is refused unseen; `f` the oldest open attempt fails, `F` fails and locks the key out;
    /// `g` the oldest open attempt was right; `w` sixteen minutes pass.
    #[test]
    fn attempts_table() {
        let cases = [
            ("five wrong in a row lock at the fifth", "bf bf bf bf bF B B"),
            ("a right fifth attempt is forgiven", "bf bf bf bf bg bF B"),
            ("only five parallel attempts are checked", "bbbbb BBBBB Ffff B"),
            ("a right one among parallel attempts frees its place", "bbbbb B g bB Ffff B"),
            ("the window forgets old failures", "bf bf bf bf w bf bf bf bf bF B"),
            ("a lockout ends", "bf bf bf bf bF B w bf"),
        ];
        for (what, script) in cases {
            let mut lockouts = Lockouts::default();
            let mut now = Instant::now();
            let mut open = std::collections::VecDeque::new();
            for (i, step) in script.chars().filter(|c| *c != ' ').enumerate() {
                now += Duration::from_secs(1);
                let at = format!("{what}: step {i} `{step}` of {script}");
                match step {
                    'b' => open.push_back(lockouts.begin("10.0.0.9", now, &CLAIMS).expect(&at)),
                    'B' => assert!(lockouts.begin("10.0.0.9", now, &CLAIMS).is_err(), "{at}"),
                    'f' | 'F' => {
                        open.pop_front().expect(&at);
                        let locked = lockouts.fail("10.0.0.9", now, &CLAIMS);
                        assert_eq!(locked, (step == 'F').then_some(CLAIMS.lockout), "{at}");
                    }
                    'g' => lockouts.forgive("10.0.0.9", open.pop_front().expect(&at)),
                    'w' => now += Duration::from_secs(16 * 60),
                    _ => unreachable!("{at}"),
                }
            }
            assert!(lockouts.begin("10.0.0.8", now, &CLAIMS).is_ok(), "{what}: other keys unaffected");
        }
        let mut lockouts = Lockouts::default();
        let off = LockoutPolicy { threshold: 0, ..CLAIMS };
        let now = Instant::now();
        for _ in 0..100 {
            assert!(lockouts.begin("a", now, &off).is_ok());
            assert_eq!(lockouts.fail("a", now, &off), None);
        }
    }
}
