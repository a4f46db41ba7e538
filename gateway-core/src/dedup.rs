//! De-duplication of measurements heard more than once: by the same receiver (BlueZ and Ruuvi
//! firmware repeat advertisements) or by several receivers. Pure logic: time is passed in.
//!
//! A measurement is identified by (MAC, data format, measurement sequence). Sequence counters wrap
//! (8, 16 or 24 bits) and reset when a tag reboots, so "seen" means "seen within the window", not
//! "not greater than the last". Formats without a sequence (DF3) use the payload bytes instead.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::ruuvi::Mac;

/// How many recent measurement identities are remembered per (MAC, format).
const REMEMBERED_PER_STREAM: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MeasurementKey {
    Sequence(u32),
    /// For formats without a sequence counter: a hash of the payload.
    Payload(u64),
}

impl MeasurementKey {
    pub fn of_payload(payload: &[u8]) -> MeasurementKey {
        let mut hasher = DefaultHasher::new();
        payload.hash(&mut hasher);
        MeasurementKey::Payload(hasher.finish())
    }
}

pub struct Deduplicator {
    window_ms: i64,
    streams: HashMap<(Mac, u8), VecDeque<(MeasurementKey, i64)>>,
}

impl Deduplicator {
    pub fn new(window_ms: i64) -> Deduplicator {
        Deduplicator { window_ms, streams: HashMap::new() }
    }

    /// True when this measurement is new; false for a duplicate within the window.
    pub fn first_time(&mut self, mac: Mac, format: u8, key: MeasurementKey, now_ms: i64) -> bool {
        let seen = self.streams.entry((mac, format)).or_default();
        while seen.front().is_some_and(|&(_, at)| now_ms - at > self.window_ms) {
            seen.pop_front();
        }
        if seen.iter().any(|&(k, _)| k == key) {
            return false;
        }
        if seen.len() == REMEMBERED_PER_STREAM {
            seen.pop_front();
        }
        seen.push_back((key, now_ms));
        true
    }

    /// Forgets streams silent for longer than the window, so memory follows the live tag count.
    pub fn prune(&mut self, now_ms: i64) {
        self.streams.retain(|_, seen| seen.back().is_some_and(|&(_, at)| now_ms - at <= self.window_ms));
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([0xCB, 0xB8, 0x33, 0x4C, 0x88, 0x4F]);
    const B: Mac = Mac([0xE3, 0x75, 0xCF, 0x37, 0x4E, 0x23]);
    use MeasurementKey::Sequence as Seq;

    #[test]
    fn table() {
        // (mac, format, key, time ms, expected first_time)
        let steps = [
            (A, 5, Seq(100), 0, true),
            (A, 5, Seq(100), 10, false),      // repeated by the same receiver
            (A, 5, Seq(100), 3_000, false),   // heard later by a second receiver
            (B, 5, Seq(100), 3_000, true),    // same sequence, other tag
            (A, 0xE1, Seq(100), 3_000, true), // same tag, other format
            (A, 5, Seq(101), 4_000, true),
            (A, 5, Seq(65534), 5_000, true),
            (A, 5, Seq(0), 6_000, true), // 16-bit wrap
            (A, 5, Seq(1), 7_000, true),
            (A, 5, Seq(0), 8_000, false),   // late duplicate of the wrapped value
            (A, 5, Seq(100), 62_000, true), // 100 first seen at 0: outside the 60 s window
        ];
        let mut dedup = Deduplicator::new(60_000);
        for (i, (mac, format, key, at, expected)) in steps.into_iter().enumerate() {
            assert_eq!(dedup.first_time(mac, format, key, at), expected, "step {i}");
        }
    }

    #[test]
    fn tag_reboot_resets_the_counter_without_losing_data() {
        let mut dedup = Deduplicator::new(60_000);
        for (i, seq) in [500, 501, 502, 0, 1, 2].into_iter().enumerate() {
            assert!(dedup.first_time(A, 5, Seq(seq), i as i64 * 1000), "seq {seq}");
        }
    }

    #[test]
    fn memory_is_bounded_per_stream_and_pruned_by_time() {
        let mut dedup = Deduplicator::new(60_000);
        for seq in 0..10_000 {
            dedup.first_time(A, 5, Seq(seq), 0);
        }
        assert!(dedup.streams[&(A, 5)].len() <= REMEMBERED_PER_STREAM);
        dedup.first_time(B, 5, Seq(1), 50_000);
        dedup.prune(70_000);
        assert_eq!(dedup.stream_count(), 1, "A was silent for longer than the window");
    }

    #[test]
    fn payload_keys_for_formats_without_sequence() {
        let mut dedup = Deduplicator::new(60_000);
        let first = MeasurementKey::of_payload(&[3, 1, 2]);
        let other = MeasurementKey::of_payload(&[3, 1, 3]);
        assert!(dedup.first_time(A, 3, first, 0));
        assert!(!dedup.first_time(A, 3, first, 1_000));
        assert!(dedup.first_time(A, 3, other, 2_000));
    }
}
