//! When to step in on a scan that went quiet. Pure: time is passed in as milliseconds.
//!
//! BlueZ scans stop silently (another client stops discovery, bluetoothd restarts, the D-Bus
//! connection dies, the controller hangs), and btleplug reports none of it. The only reliable
//! signal is the data itself: while Ruuvi tags are known, an advertisement arrives every few
//! seconds. When none has arrived for `stall_after`, the watchdog escalates one step at a time,
//! giving each step another `stall_after` to bring data back:
//!
//! 1. restart the scan (stop, then start) — `scan_restarts` times;
//! 2. drop the btleplug `Manager` and make a new one (a fresh D-Bus connection) — `manager_restarts` times;
//! 3. if BlueZ failed to answer on the way (calls failing or timing out: bluetoothd hung, D-Bus
//!    gone), give up with a fatal error, so that systemd restarts the whole process; if BlueZ
//!    answered every step, the tags may simply be gone (battery, out of range): keep restarting
//!    the scan once per quiet period instead of taking the whole gateway down.
//!
//! Any Ruuvi advertisement resets the ladder. Before the first one, nothing is "known" to be
//! missing (no tags in range, or a new install), so the watchdog stays quiet. While the adapter
//! is switched off it rests: silence is expected then.

/// What the scanner should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    RestartScan,
    NewManager,
    GiveUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub stall_after_ms: i64,
    pub scan_restarts: u32,
    pub manager_restarts: u32,
}

#[derive(Debug, Clone)]
pub struct Watchdog {
    policy: Policy,
    /// The last Ruuvi advertisement, or the last step taken, whichever is later.
    quiet_since: Option<i64>,
    steps_taken: u32,
    /// A BlueZ call failed since the data stopped.
    bluez_failing: bool,
}

impl Watchdog {
    pub fn new(policy: Policy) -> Watchdog {
        Watchdog { policy, quiet_since: None, steps_taken: 0, bluez_failing: false }
    }

    pub fn ruuvi_heard(&mut self, now_ms: i64) {
        self.quiet_since = Some(now_ms);
        self.steps_taken = 0;
        self.bluez_failing = false;
    }

    /// A step's calls to BlueZ failed or timed out.
    pub fn bluez_failed(&mut self) {
        self.bluez_failing = true;
    }

    /// A step's calls to BlueZ succeeded.
    pub fn bluez_answered(&mut self) {
        self.bluez_failing = false;
    }

    /// The adapter is off: silence is expected, the quiet period starts again.
    pub fn rest(&mut self, now_ms: i64) {
        if self.quiet_since.is_some() {
            self.quiet_since = Some(now_ms);
        }
    }

    /// The system clock was stepped: the quiet period keeps the time it had run.
    pub fn clock_stepped(&mut self, step_ms: i64) {
        self.quiet_since = self.quiet_since.map(|since| since + step_ms);
    }

    /// Called periodically; returns the step to take, which then counts as taken.
    pub fn check(&mut self, now_ms: i64) -> Action {
        let Some(since) = self.quiet_since else { return Action::Nothing };
        if now_ms - since < self.policy.stall_after_ms {
            return Action::Nothing;
        }
        let step = self.steps_taken;
        let action = if step < self.policy.scan_restarts {
            Action::RestartScan
        } else if step < self.policy.scan_restarts + self.policy.manager_restarts {
            Action::NewManager
        } else if self.bluez_failing {
            Action::GiveUp
        } else {
            Action::RestartScan
        };
        self.steps_taken = self.steps_taken.saturating_add(1);
        self.quiet_since = Some(now_ms);
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    const POLICY: Policy = Policy { stall_after_ms: 60_000, scan_restarts: 2, manager_restarts: 1 };

    /// Each step: (time, a Ruuvi advert heard at that time?, expected action of a check at that time).
    fn run(steps: &[(i64, bool, Action)]) {
        let mut dog = Watchdog::new(POLICY);
        for (i, &(at, heard, expected)) in steps.iter().enumerate() {
            if heard {
                dog.ruuvi_heard(at);
            }
            assert_eq!(dog.check(at), expected, "step {i} at {at} ms");
        }
    }

    #[test]
    fn quiet_before_any_tag_was_heard() {
        run(&[(0, false, Nothing), (600_000, false, Nothing), (6_000_000, false, Nothing)]);
    }

    #[test]
    fn a_clock_step_keeps_the_quiet_period_in_real_time() {
        let hour = 3_600_000;
        // Stepped forward an hour 10 s after the last advert: not a minute of silence yet.
        let mut dog = Watchdog::new(POLICY);
        dog.ruuvi_heard(0);
        dog.clock_stepped(hour);
        assert_eq!(dog.check(hour + 10_000), Nothing);
        assert_eq!(dog.check(hour + 60_000), RestartScan);
        // Stepped back an hour: the minute still ends a minute after the advert.
        let mut dog = Watchdog::new(POLICY);
        dog.ruuvi_heard(hour);
        dog.clock_stepped(-hour);
        assert_eq!(dog.check(59_000), Nothing);
        assert_eq!(dog.check(60_000), RestartScan);
    }

    #[test]
    fn steady_data_never_triggers() {
        run(&[(0, true, Nothing), (59_000, true, Nothing), (118_000, true, Nothing), (177_000, false, Nothing)]);
    }

    #[test]
    fn escalates_one_step_per_quiet_period_then_gives_up_when_bluez_fails() {
        let mut dog = Watchdog::new(POLICY);
        dog.ruuvi_heard(0);
        assert_eq!(dog.check(60_000), RestartScan);
        dog.bluez_failed(); // the restart timed out
        assert_eq!(dog.check(120_000), RestartScan);
        assert_eq!(dog.check(180_000), NewManager);
        dog.bluez_failed(); // the new manager cannot reach BlueZ either
        assert_eq!(dog.check(240_000), GiveUp);
    }

    #[test]
    fn with_bluez_answering_it_keeps_restarting_the_scan_instead_of_giving_up() {
        // Tags gone (battery, range): every step works, nothing comes. The gateway stays up.
        let mut dog = Watchdog::new(POLICY);
        dog.ruuvi_heard(0);
        let mut actions = Vec::new();
        for period in 1..=6 {
            actions.push(dog.check(period * 60_000));
            dog.bluez_answered();
        }
        assert_eq!(actions, [RestartScan, RestartScan, NewManager, RestartScan, RestartScan, RestartScan]);
    }

    #[test]
    fn rests_while_the_adapter_is_off() {
        let mut dog = Watchdog::new(POLICY);
        dog.ruuvi_heard(0);
        dog.rest(50_000);
        assert_eq!(dog.check(100_000), Nothing, "the quiet period restarted when the adapter went off");
        assert_eq!(dog.check(110_000), RestartScan);
        let mut fresh = Watchdog::new(POLICY);
        fresh.rest(0);
        assert_eq!(fresh.check(1_000_000), Nothing, "resting does not make tags known");
    }

    #[test]
    fn escalation_ladder_timing() {
        run(&[
            (0, true, Nothing),
            (59_999, false, Nothing),
            (60_000, false, RestartScan),
            (61_000, false, Nothing), // the restart gets its own quiet period
            (120_000, false, RestartScan),
            (180_000, false, NewManager),
            (239_000, false, Nothing),
            (240_000, false, RestartScan), // BlueZ never failed: no reason to exit
        ]);
    }

    #[test]
    fn data_after_a_step_resets_the_ladder() {
        run(&[
            (0, true, Nothing),
            (60_000, false, RestartScan),
            (120_000, false, RestartScan),
            (130_000, true, Nothing), // the second restart worked
            (190_000, false, RestartScan),
            (250_000, false, RestartScan),
            (310_000, false, NewManager),
        ]);
    }
}
