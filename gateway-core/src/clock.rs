//! Steps of the system clock. Gatehouse stamps and stores wall-clock times, and several modules
//! measure durations by comparing them (task ack/execution timeouts and retry back-off, the
//! registry's "silent for", alert "for"/silent rules, the Bluetooth watchdog). When the clock is
//! stepped (NTP's first sync on a Pi without a real-time clock, a person setting the time), those
//! comparisons would jump with it: every tag offline and every task timed out at once after a
//! step forward, timers an hour late after a step back. Each such module keeps a [`StepDetector`]
//! and moves its pending wall-clock deadlines by the step it reports, so a timer keeps the time
//! it had left. [`watch`] logs and counts steps for `/api/health`. A suspend (a laptop running
//! the desktop app) looks like a step forward, since the monotonic clock stops meanwhile: timers
//! then resume where they were rather than all firing at once, as after a restart.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::reading::now_ms;

/// Differences the kernel can make by slewing (at most 500 ppm) plus scheduling noise are not
/// steps; anything larger is.
pub fn step_between(wall_elapsed_ms: i64, steady_elapsed_ms: i64) -> Option<i64> {
    let step = wall_elapsed_ms - steady_elapsed_ms;
    let tolerance = 1_000 + steady_elapsed_ms / 2_000;
    (step.abs() > tolerance).then_some(step)
}

/// Compares the wall clock with a steady reference clock since its last call: the monotonic
/// clock ([`StepDetector::default`]), or the time since boot ([`StepDetector::across_suspend`]).
#[derive(Debug)]
pub struct StepDetector {
    wall: i64,
    steady: i64,
    steady_now: fn() -> i64,
}

impl Default for StepDetector {
    fn default() -> Self {
        StepDetector::against(monotonic_ms)
    }
}

impl StepDetector {
    /// A suspend is not a step: the reference is [`since_boot_ms`], which keeps counting while
    /// the machine sleeps. For decisions a laptop's night must not trigger (pausing retention).
    pub fn across_suspend() -> Self {
        StepDetector::against(since_boot_ms)
    }

    fn against(steady_now: fn() -> i64) -> Self {
        StepDetector { wall: now_ms(), steady: steady_now(), steady_now }
    }

    /// The step (ms, negative when the clock went back) since the last call, if there was one.
    pub fn check(&mut self) -> Option<i64> {
        let (wall, steady) = (now_ms(), (self.steady_now)());
        let step = step_between(wall - self.wall, steady - self.steady);
        (self.wall, self.steady) = (wall, steady);
        step
    }
}

/// Milliseconds of the monotonic clock since this process first asked (it stops during a
/// suspend).
fn monotonic_ms() -> i64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as i64
}

/// Milliseconds since boot, suspend included (Linux `CLOCK_BOOTTIME`; elsewhere the monotonic
/// clock, which may stop during a suspend).
pub fn since_boot_ms() -> i64 {
    #[cfg(target_os = "linux")]
    {
        let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `time` is a valid, writable timespec; CLOCK_BOOTTIME exists since Linux 2.6.39.
        if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut time) } == 0 {
            return time.tv_sec as i64 * 1000 + time.tv_nsec as i64 / 1_000_000;
        }
    }
    monotonic_ms()
}

/// Lets one event through per minute of time since boot: for log lines a remote party can
/// repeat at will (and a clock step must not silence).
#[derive(Debug)]
pub struct OncePerMinute {
    last: AtomicI64,
}

impl OncePerMinute {
    pub const fn new() -> OncePerMinute {
        OncePerMinute { last: AtomicI64::new(i64::MIN) }
    }

    pub fn allow(&self) -> bool {
        let (now, last) = (since_boot_ms(), self.last.load(Ordering::Relaxed));
        now.saturating_sub(last) >= 60_000
            && self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

impl Default for OncePerMinute {
    fn default() -> Self {
        Self::new()
    }
}

/// Steps seen while the gateway runs (health report `clock`).
#[derive(Debug, Default)]
pub struct ClockStats {
    steps: AtomicU64,
    last_step_ms: AtomicI64,
    last_step_at: AtomicI64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClockReport {
    /// The gateway's wall clock now (ms since the epoch), to compare with the viewer's.
    pub now: i64,
    pub steps: u64,
    /// The latest step in ms (negative: the clock went back), and when it was seen.
    pub last_step_ms: Option<i64>,
    pub last_step_at: Option<i64>,
}

impl ClockStats {
    pub fn report(&self) -> ClockReport {
        let steps = self.steps.load(Ordering::Relaxed);
        let seen = steps > 0;
        ClockReport {
            now: now_ms(),
            steps,
            last_step_ms: seen.then(|| self.last_step_ms.load(Ordering::Relaxed)),
            last_step_at: seen.then(|| self.last_step_at.load(Ordering::Relaxed)),
        }
    }
}

/// Logs and counts steps of the system clock until `shutdown`.
pub async fn watch(stats: Arc<ClockStats>, shutdown: CancellationToken) {
    let mut detector = StepDetector::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Some(step) = detector.check() {
            stats.last_step_ms.store(step, Ordering::Relaxed);
            stats.last_step_at.store(now_ms(), Ordering::Relaxed);
            stats.steps.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                step_seconds = step as f64 / 1000.0,
                "the system clock was stepped; timers keep their remaining time, new readings carry the new time"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_told_apart_from_slewing_and_noise() {
        // (wall elapsed, monotonic elapsed) → step
        let cases = [
            (1_000, 1_000, None),
            (1_900, 1_000, None), // scheduling noise within a second
            (3_600_000 + 1_000, 1_000, Some(3_600_000)),
            (1_000 - 3_600_000, 1_000, Some(-3_600_000)),
            (1_000 - 5_000, 1_000, Some(-5_000)),
            (3_601_500, 3_600_000, None), // 1.5 s slewed over an hour (< 500 ppm + 1 s)
            (3_605_000, 3_600_000, Some(5_000)),
            (0, 0, None),
        ];
        for (wall, steady, expected) in cases {
            assert_eq!(step_between(wall, steady), expected, "wall {wall} steady {steady}");
        }
    }

    #[test]
    fn once_per_minute_lets_the_first_through_then_holds() {
        let gate = OncePerMinute::new();
        assert!(gate.allow());
        assert!(!gate.allow());
        assert!(!gate.allow());
    }

    #[test]
    fn no_step_without_a_clock_change() {
        let mut detector = StepDetector::default();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(detector.check(), None);
    }
}
