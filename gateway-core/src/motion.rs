//! Motion state of Ruuvi tags, for alerts such as "the freezer door tag moved". Pure: the caller
//! feeds each reading's time, acceleration and movement counter; nothing here reads a clock.
//!
//! Rules, per tag:
//! * **Moving** when, since the tag's previous reading, its movement counter advanced or its
//!   acceleration vector changed by more than [`ACCEL_THRESHOLD_G`]. The counter is the tag's own
//!   activity detector and catches short bumps between adverts; the acceleration catches a changed
//!   orientation (a door swung open) on tags or formats without a counter.
//! * **Moved** from then until [`HOLD_MS`] after the last reading that showed movement: "it moved
//!   recently", so a rule or a dashboard sees the event even when it lasted one advert.
//! * **Stationary** otherwise. A tag's first reading is Stationary: there is nothing to compare.
//!
//! Inputs that are missing (or NaN) are skipped and the last known value is kept for the next
//! comparison, so a reading with neither can only report Moved (within the hold) or Stationary.
//!
//! Counter details: data format 5 counts 0…254 and wraps; some firmware wraps at 255. A counter
//! that goes *down* is a wrap when the step forward across the top is at most [`MAX_WRAP_STEP`]
//! (254→0, 255→0, 250→3 are movement). A larger drop is a reboot (battery change, reset): the
//! counter restarts near 0, so the tag is re-baselined **without** an alarm, because a battery
//! swap is maintenance, not an event. A reboot from very near the top is indistinguishable from a
//! wrap and reads as movement, which is rare and, since someone handled the tag, not wrong.
//!
//! Readings not newer than the last one accepted for the tag (the same advert via two gateways, or
//! a late delivery) change nothing: comparing with an older counter would raise a false alarm.

use std::collections::HashMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::ruuvi::Mac;

/// Change of the acceleration vector (Euclidean, in g) between two readings that counts as motion.
/// A still tag's readings wander by about 0.01–0.02 g per axis; tilting a tag by 10° already
/// changes the vector by ~0.17 g, and a door opening or a pick-up by far more.
pub const ACCEL_THRESHOLD_G: f64 = 0.1;

/// How long a tag stays Moved after the last reading that showed motion. Long enough for a rule
/// evaluated every minute or two to see a short event, short enough that "moved" still means now.
pub const HOLD_MS: i64 = 5 * 60 * 1000;

/// The largest step across the top of the counter's range still read as a wrap, not a reboot. At
/// the default 1.3 s advert interval a gateway may miss around ten adverts in a row; a few dozen
/// activity events in that gap is already a lot.
pub const MAX_WRAP_STEP: u32 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MotionState {
    Stationary,
    Moved,
    Moving,
}

impl MotionState {
    /// 0, 1, 2: numeric so that threshold alert rules ("motion ≥ 1") work on it.
    pub fn level(self) -> u8 {
        match self {
            MotionState::Stationary => 0,
            MotionState::Moved => 1,
            MotionState::Moving => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MotionState::Stationary => "stationary",
            MotionState::Moved => "moved",
            MotionState::Moving => "moving",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct History {
    last_seen_ms: i64,
    accel: Option<[f64; 3]>,
    counter: Option<u32>,
    last_motion_ms: Option<i64>,
}

impl History {
    fn state_at(&self, now_ms: i64) -> MotionState {
        match self.last_motion_ms {
            Some(t) if now_ms.saturating_sub(t) >= HOLD_MS => MotionState::Stationary,
            Some(t) if t == self.last_seen_ms => MotionState::Moving,
            Some(_) => MotionState::Moved,
            None => MotionState::Stationary,
        }
    }
}

/// Motion history of every tag seen, keyed by `K` (the tag's MAC by default).
#[derive(Debug, Clone)]
pub struct MotionTracker<K = Mac> {
    tags: HashMap<K, History>,
}

impl<K: Eq + Hash + Clone> Default for MotionTracker<K> {
    fn default() -> Self {
        MotionTracker { tags: HashMap::new() }
    }
}

impl<K: Eq + Hash + Clone> MotionTracker<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one reading (`accel` in g, per axis) and returns the tag's state as of it.
    pub fn observe(
        &mut self,
        key: &K,
        ts_ms: i64,
        accel: Option<[f64; 3]>,
        movement_counter: Option<u32>,
    ) -> MotionState {
        let accel = accel.filter(|a| a.iter().all(|v| v.is_finite()));
        let Some(history) = self.tags.get_mut(key) else {
            let first = History { last_seen_ms: ts_ms, accel, counter: movement_counter, last_motion_ms: None };
            self.tags.insert(key.clone(), first);
            return MotionState::Stationary;
        };
        if ts_ms < history.last_seen_ms {
            return history.state_at(history.last_seen_ms);
        }
        let counted =
            matches!((history.counter, movement_counter), (Some(prev), Some(now)) if counter_advanced(prev, now));
        let turned =
            matches!((history.accel, accel), (Some(prev), Some(now)) if distance(prev, now) > ACCEL_THRESHOLD_G);
        if counted || turned {
            history.last_motion_ms = Some(ts_ms);
        }
        history.last_seen_ms = ts_ms;
        history.accel = accel.or(history.accel);
        history.counter = movement_counter.or(history.counter);
        history.state_at(ts_ms)
    }

    /// The tag's state at `now_ms` without a new reading, so Moved can expire while a tag is
    /// silent. A tag whose last reading showed motion stays Moving until the hold ends: nothing
    /// says it stopped. `None` for a tag never seen (or pruned).
    pub fn state(&self, key: &K, now_ms: i64) -> Option<MotionState> {
        self.tags.get(key).map(|h| h.state_at(now_ms.max(h.last_seen_ms)))
    }

    /// Forgets tags not heard for `older_than_ms`, so memory follows the live tags. Returns how
    /// many were forgotten.
    pub fn prune(&mut self, now_ms: i64, older_than_ms: i64) -> usize {
        let before = self.tags.len();
        let cutoff = now_ms.saturating_sub(older_than_ms);
        self.tags.retain(|_, h| h.last_seen_ms >= cutoff);
        before - self.tags.len()
    }

    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

/// Whether the movement counter shows activity between two readings (see the module notes).
fn counter_advanced(prev: u32, now: u32) -> bool {
    if now >= prev {
        return now > prev;
    }
    // Went down: a wrap if the step forward across the top of the range is small. Counters that
    // fit in a byte wrap at 256 (DF5 stops at 254 or 255), larger ones (DF8) at 65536.
    let modulus: u32 = if prev <= u32::from(u8::MAX) { 1 << 8 } else { 1 << 16 };
    modulus.checked_sub(prev).is_some_and(|to_top| to_top + now <= MAX_WRAP_STEP)
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use MotionState::{Moved, Moving, Stationary};

    const FLAT: [f64; 3] = [0.0, 0.0, 1.0];

    /// One reading: tag, seconds, acceleration, movement counter, expected state.
    type Step = (&'static str, i64, Option<[f64; 3]>, Option<u32>, MotionState);

    const HOLD_S: i64 = HOLD_MS / 1000;

    #[test]
    fn classifies_reading_sequences() {
        let cases: Vec<(&str, Vec<Step>)> = vec![
            (
                "still tag with sensor noise stays stationary",
                vec![
                    ("a", 0, Some([0.004, -0.004, 1.036]), Some(66), Stationary),
                    ("a", 1, Some([0.016, 0.008, 1.024]), Some(66), Stationary),
                    ("a", 2, Some([-0.012, -0.016, 1.044]), Some(66), Stationary),
                    ("a", 3, Some([0.0, 0.012, 1.028]), Some(66), Stationary),
                ],
            ),
            (
                "counter increment: moving, then moved for the hold, then stationary",
                vec![
                    ("a", 0, Some(FLAT), Some(5), Stationary),
                    ("a", 10, Some(FLAT), Some(6), Moving),
                    ("a", 11, Some(FLAT), Some(6), Moved),
                    ("a", 10 + HOLD_S - 1, Some(FLAT), Some(6), Moved),
                    ("a", 10 + HOLD_S, Some(FLAT), Some(6), Stationary),
                ],
            ),
            (
                "new movement restarts the hold",
                vec![
                    ("a", 0, None, Some(1), Stationary),
                    ("a", 10, None, Some(2), Moving),
                    ("a", 200, None, Some(2), Moved),
                    ("a", 250, None, Some(3), Moving),
                    ("a", 10 + HOLD_S, None, Some(3), Moved),
                    ("a", 250 + HOLD_S, None, Some(3), Stationary),
                ],
            ),
            ("wrap 254 to 0 is movement", vec![("a", 0, None, Some(254), Stationary), ("a", 1, None, Some(0), Moving)]),
            ("wrap 255 to 0 is movement", vec![("a", 0, None, Some(255), Stationary), ("a", 1, None, Some(0), Moving)]),
            ("wrap with missed adverts", vec![("a", 0, None, Some(250), Stationary), ("a", 9, None, Some(3), Moving)]),
            (
                "16-bit counter wraps too",
                vec![("a", 0, None, Some(65_530), Stationary), ("a", 1, None, Some(2), Moving)],
            ),
            (
                "reboot (counter drops far) re-baselines without an alarm",
                vec![
                    ("a", 0, Some(FLAT), Some(120), Stationary),
                    ("a", 1, Some(FLAT), Some(0), Stationary),
                    ("a", 2, Some(FLAT), Some(0), Stationary),
                    ("a", 3, Some(FLAT), Some(1), Moving),
                ],
            ),
            (
                "acceleration jump without a counter",
                vec![
                    ("a", 0, Some(FLAT), None, Stationary),
                    ("a", 1, Some([0.0, 1.0, 0.0]), None, Moving),
                    ("a", 2, Some([0.01, 0.99, 0.0]), None, Moved),
                ],
            ),
            (
                "acceleration change under the threshold is noise",
                vec![
                    ("a", 0, Some(FLAT), Some(9), Stationary),
                    ("a", 1, Some([0.05, 0.05, 0.97]), Some(9), Stationary),
                ],
            ),
            (
                "missing inputs: only the hold can make it moved",
                vec![
                    ("a", 0, None, None, Stationary),
                    ("a", 1, None, None, Stationary),
                    ("a", 2, Some(FLAT), Some(1), Stationary),
                    ("a", 3, Some(FLAT), Some(2), Moving),
                    ("a", 13, None, None, Moved),
                    ("a", 3 + HOLD_S, None, None, Stationary),
                ],
            ),
            (
                "a gap in one input compares with its last known value",
                vec![
                    ("a", 0, Some(FLAT), Some(5), Stationary),
                    ("a", 1, None, Some(5), Stationary),
                    ("a", 2, Some(FLAT), None, Stationary),
                    ("a", 3, Some(FLAT), Some(6), Moving),
                    ("a", 4, None, Some(6), Moved),
                    ("a", 5, Some([1.0, 0.0, 0.0]), None, Moving),
                ],
            ),
            (
                "NaN acceleration counts as missing",
                vec![
                    ("a", 0, Some(FLAT), None, Stationary),
                    ("a", 1, Some([f64::NAN, 0.0, 1.0]), None, Stationary),
                    ("a", 2, Some(FLAT), None, Stationary),
                ],
            ),
            (
                "first reading is stationary whatever it says",
                vec![("a", 0, Some([3.0, -2.0, 0.5]), Some(200), Stationary)],
            ),
            (
                "duplicate and late readings change nothing",
                vec![
                    ("a", 10, None, Some(5), Stationary),
                    ("a", 20, None, Some(6), Moving),
                    ("a", 20, None, Some(6), Moving),
                    ("a", 15, None, Some(5), Moving),
                    ("a", 25, None, Some(6), Moved),
                ],
            ),
            (
                "tags are independent",
                vec![
                    ("a", 0, Some(FLAT), Some(1), Stationary),
                    ("b", 0, Some(FLAT), Some(7), Stationary),
                    ("a", 1, Some(FLAT), Some(2), Moving),
                    ("b", 1, Some(FLAT), Some(7), Stationary),
                    ("b", 2, Some([0.0, 1.0, 0.0]), Some(7), Moving),
                    ("a", 2, Some(FLAT), Some(2), Moved),
                    ("c", 2, Some(FLAT), Some(2), Stationary),
                ],
            ),
        ];
        for (name, steps) in cases {
            let mut tracker = MotionTracker::<&str>::new();
            for (i, &(key, t_s, accel, counter, expected)) in steps.iter().enumerate() {
                let got = tracker.observe(&key, t_s * 1000, accel, counter);
                assert_eq!(got, expected, "{name}: step {i} ({key} at {t_s} s)");
            }
        }
    }

    #[test]
    fn state_expires_without_readings_and_prune_forgets_silent_tags() {
        let (a, b) = (Mac([1; 6]), Mac([2; 6]));
        let mut tracker = MotionTracker::new();
        tracker.observe(&a, 0, None, Some(1));
        tracker.observe(&a, 1_000, None, Some(2));
        tracker.observe(&b, 60_000, None, Some(1));
        let queries = [
            (a, 1_000, Some(Moving)),
            (a, 500, Some(Moving)), // earlier than the last reading: as of that reading
            (a, 2_000, Some(Moving)),
            (a, 1_000 + HOLD_MS, Some(Stationary)),
            (b, 60_000, Some(Stationary)),
            (Mac([3; 6]), 0, None),
        ];
        for (key, now, expected) in queries {
            assert_eq!(tracker.state(&key, now), expected, "{key} at {now}");
        }

        assert_eq!(tracker.prune(61_000, 30_000), 1);
        assert_eq!((tracker.len(), tracker.state(&a, 61_000)), (1, None));
        assert_eq!(tracker.prune(61_000, 30_000), 0);
        assert_eq!(tracker.prune(i64::MAX, 0), 1);
        assert!(tracker.is_empty());
    }

    #[test]
    fn states_have_levels_and_lowercase_names() {
        for (state, level, name) in [(Stationary, 0, "stationary"), (Moved, 1, "moved"), (Moving, 2, "moving")] {
            assert_eq!(state.level(), level);
            assert_eq!(state.as_str(), name);
            assert_eq!(serde_json::to_string(&state).unwrap(), format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<MotionState>(&format!("\"{name}\"")).unwrap(), state);
        }
    }

    #[test]
    fn counter_steps() {
        let cases = [
            (5, 5, false),
            (5, 6, true),
            (5, 200, true),
            (254, 0, true),
            (255, 0, true),
            (240, 16, true),
            (240, 17, false),
            (100, 0, false),
            (65_535, 0, true),
            (40_000, 3, false),
            (u32::MAX, 0, false),
        ];
        for (prev, now, expected) in cases {
            assert_eq!(counter_advanced(prev, now), expected, "{prev} -> {now}");
        }
    }
}
