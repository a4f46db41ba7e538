//! Abuse limits for the listener, as pure logic with time passed in: a token bucket for
//! per-client publish rates, a per-address connection counter, and EMQX-style flapping detection
//! (a client id that disconnects too often in a window is banned for a while, see `lockout`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lockout::{LockoutPolicy, Lockouts};

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket { rate, burst, tokens: burst, updated: now }
    }

    /// Takes `amount` tokens (the balance may go negative) and returns how long the caller must
    /// pause before the balance is back to zero. A rate of 0 means unlimited.
    pub fn take(&mut self, amount: f64, now: Instant) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
        self.tokens -= amount;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Connections per source address.
#[derive(Clone, Default)]
pub struct AddressGuard {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Held while a connection lives; releases its slot on drop.
pub struct AddressPermit {
    guard: AddressGuard,
    address: IpAddr,
}

impl AddressGuard {
    pub fn admit(&self, address: IpAddr, limit: usize) -> Option<AddressPermit> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(address).or_default();
        if limit > 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(AddressPermit { guard: self.clone(), address })
    }
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        let mut counts = self.guard.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FlapPolicy {
    /// More than this many disconnects within `window` bans the client id (0 disables).
    pub max_disconnects: usize,
    pub window: Duration,
    pub ban: Duration,
}

/// Flapping detection by client id.
#[derive(Clone)]
pub struct FlapTracker {
    policy: LockoutPolicy,
    state: Arc<Mutex<Lockouts>>,
}

impl FlapTracker {
    pub fn new(policy: FlapPolicy) -> FlapTracker {
        let threshold = if policy.max_disconnects == 0 { 0 } else { policy.max_disconnects + 1 };
        FlapTracker {
            policy: LockoutPolicy { threshold, window: policy.window, lockout: policy.ban },
            state: Arc::default(),
        }
    }

    /// Remaining ban time for `client_id`, if banned.
    pub fn banned(&self, client_id: &str, now: Instant) -> Option<Duration> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).locked(client_id, now)
    }

    /// Records a disconnect; returns true when it triggered a ban.
    pub fn record_disconnect(&self, client_id: &str, now: Instant) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).record(client_id, now, &self.policy).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_table() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5.0, t0);
        // The burst is free, then each message costs 100 ms.
        for _ in 0..5 {
            assert_eq!(bucket.take(1.0, t0), Duration::ZERO);
        }
        assert_eq!(bucket.take(1.0, t0), Duration::from_millis(100));
        assert_eq!(bucket.take(1.0, t0), Duration::from_millis(200));
        // After 300 ms the debt is paid and one token is back.
        assert_eq!(bucket.take(1.0, t0 + Duration::from_millis(300)), Duration::ZERO);
        // Refill never exceeds the burst.
        let mut idle = TokenBucket::new(10.0, 5.0, t0);
        for _ in 0..5 {
            idle.take(1.0, t0 + Duration::from_secs(60));
        }
        assert!(idle.take(1.0, t0 + Duration::from_secs(60)) > Duration::ZERO);
        assert_eq!(TokenBucket::new(0.0, 0.0, t0).take(1e9, t0), Duration::ZERO, "0 = unlimited");
    }

    #[test]
    fn address_limit_releases_on_drop() {
        let guard = AddressGuard::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = guard.admit(ip, 2).unwrap();
        let _b = guard.admit(ip, 2).unwrap();
        assert!(guard.admit(ip, 2).is_none());
        assert!(guard.admit("192.0.2.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(guard.admit(ip, 2).is_some());
    }

    #[test]
    fn flapping_client_is_banned_for_a_while() {
        let tracker = FlapTracker::new(FlapPolicy {
            max_disconnects: 3,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(300),
        });
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(!tracker.record_disconnect("c", t0 + Duration::from_secs(i)));
        }
        assert!(tracker.banned("c", t0).is_none());
        assert!(tracker.record_disconnect("c", t0 + Duration::from_secs(3)));
        assert!(tracker.banned("c", t0 + Duration::from_secs(10)).is_some());
        assert!(tracker.banned("other", t0).is_none());
        assert!(tracker.banned("c", t0 + Duration::from_secs(400)).is_none(), "ban expires");
        // Disconnects spread beyond the window never ban.
        for i in 0..10 {
            assert!(!tracker.record_disconnect("slow", t0 + Duration::from_secs(i * 61)));
        }
    }
}
