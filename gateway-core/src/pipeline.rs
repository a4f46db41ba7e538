//! The ingest pipeline: advertisement → decode → de-duplicate → [`Event::Reading`] on the bus.
//! Every source (the simulator, the Bluetooth scanner, remote receivers) sends [`Advertisement`]s
//! into the same ingress channel. What is rejected is counted by reason, never silently dropped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Event};
use crate::dedup::{Deduplicator, MeasurementKey};
use crate::motion::{MotionState, MotionTracker};
use crate::reading::{now_ms, ruuvi_device_id, Reading};
use crate::receivers::HeardBy;
use crate::ruuvi::{self, add_derived_values, AdError, DecodeError, Mac};
use crate::tags::TagSettings;

/// A tag silent this long is forgotten by the motion classifier.
const MOTION_FORGET_MS: i64 = 3_600_000;

/// Raw advertising data as a receiver heard it.
#[derive(Debug, Clone)]
pub struct Advertisement {
    /// The sender's Bluetooth address, when the receiver knows it.
    pub address: Option<Mac>,
    /// The AD structures, exactly as received.
    pub data: Vec<u8>,
    pub rssi: Option<i16>,
    /// When it arrived here, ms since the Unix epoch. De-duplication, pruning and motion run on
    /// this clock, which only moves forward.
    pub received_at: i64,
    /// When the receiver heard it, if it says so (remote gateways): the reading's time. Their
    /// clocks may be off, so nothing else relies on it.
    pub measured_at: Option<i64>,
    pub receiver: Arc<str>,
}

/// Why an advertisement produced no reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The user blocked this tag.
    Blocked,
    NotRuuvi,
    MalformedAdvertisement,
    UnsupportedFormat,
    TooShort,
    NoMac,
    Duplicate,
    /// Data format 6 from a Ruuvi Air whose format E1 (the same measurements, more of them) is heard.
    Superseded,
}

impl Rejection {
    const ALL: [Rejection; 8] = [
        Rejection::Blocked,
        Rejection::NotRuuvi,
        Rejection::MalformedAdvertisement,
        Rejection::UnsupportedFormat,
        Rejection::TooShort,
        Rejection::NoMac,
        Rejection::Duplicate,
        Rejection::Superseded,
    ];

    fn from_decode_error(error: &DecodeError) -> Rejection {
        match error {
            DecodeError::Advertisement(AdError::NoRuuviData | AdError::Empty) => Rejection::NotRuuvi,
            DecodeError::Advertisement(AdError::Truncated { .. }) => Rejection::MalformedAdvertisement,
            DecodeError::UnsupportedFormat(_) | DecodeError::Unrecognized { .. } => Rejection::UnsupportedFormat,
            DecodeError::EmptyPayload | DecodeError::TooShort { .. } => Rejection::TooShort,
        }
    }
}

#[derive(Debug, Default)]
pub struct PipelineStats {
    received: AtomicU64,
    readings: AtomicU64,
    rejected: [AtomicU64; Rejection::ALL.len()],
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSnapshot {
    pub advertisements: u64,
    pub readings: u64,
    pub duplicates: u64,
    pub rejected_not_ruuvi: u64,
    pub rejected_malformed: u64,
    pub rejected_unsupported_format: u64,
    pub rejected_too_short: u64,
    pub rejected_no_mac: u64,
    /// Advertisements of tags the user blocked.
    pub rejected_blocked: u64,
    /// Ruuvi Air format 6 advertisements dropped because its format E1 is heard.
    pub superseded_df6: u64,
}

impl PipelineStats {
    fn reject(&self, why: Rejection) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> PipelineSnapshot {
        let rejected = |why: Rejection| self.rejected[why as usize].load(Ordering::Relaxed);
        PipelineSnapshot {
            advertisements: self.received.load(Ordering::Relaxed),
            readings: self.readings.load(Ordering::Relaxed),
            duplicates: rejected(Rejection::Duplicate),
            rejected_not_ruuvi: rejected(Rejection::NotRuuvi),
            rejected_malformed: rejected(Rejection::MalformedAdvertisement),
            rejected_unsupported_format: rejected(Rejection::UnsupportedFormat),
            rejected_too_short: rejected(Rejection::TooShort),
            rejected_no_mac: rejected(Rejection::NoMac),
            rejected_blocked: rejected(Rejection::Blocked),
            superseded_df6: rejected(Rejection::Superseded),
        }
    }
}

/// The synchronous heart of the pipeline, separate from the channel plumbing so that tests and
/// benchmarks can drive it directly.
pub struct Processor {
    dedup: Deduplicator,
    tags: TagSettings,
    heard: Arc<HeardBy>,
    motion: MotionTracker,
    /// When each Ruuvi Air was last heard in format E1.
    extended_heard: HashMap<Mac, i64>,
    /// From the configuration: only these tags (when not empty), never those.
    allow: HashSet<Mac>,
    deny: HashSet<Mac>,
    stats: Arc<PipelineStats>,
    last_prune: i64,
    window_ms: i64,
}

impl Processor {
    pub fn new(dedup_window_ms: i64, stats: Arc<PipelineStats>, tags: TagSettings, heard: Arc<HeardBy>) -> Processor {
        Processor {
            dedup: Deduplicator::new(dedup_window_ms),
            tags,
            heard,
            motion: MotionTracker::new(),
            extended_heard: HashMap::new(),
            allow: HashSet::new(),
            deny: HashSet::new(),
            stats,
            last_prune: 0,
            window_ms: dedup_window_ms,
        }
    }

    pub fn process(&mut self, adv: &Advertisement) -> Result<Reading, Rejection> {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        let result = self.decode(adv);
        match &result {
            Ok(_) => self.stats.readings.fetch_add(1, Ordering::Relaxed),
            Err(why) => {
                self.stats.reject(*why);
                if *why != Rejection::Duplicate {
                    tracing::debug!(receiver = %adv.receiver, data = %hex::encode(&adv.data), ?why, "advertisement rejected");
                }
                0
            }
        };
        if adv.received_at - self.last_prune > self.window_ms {
            self.dedup.prune(adv.received_at);
            let window = self.window_ms;
            self.extended_heard.retain(|_, at| adv.received_at - *at <= window);
            self.motion.prune(adv.received_at, MOTION_FORGET_MS);
            self.last_prune = adv.received_at;
        }
        result
    }

    fn decode(&mut self, adv: &Advertisement) -> Result<Reading, Rejection> {
        let payload = ruuvi::find_ruuvi_payload(&adv.data)
            .map_err(|e| Rejection::from_decode_error(&DecodeError::Advertisement(e)))?;
        let mut measurement = ruuvi::decode_payload(payload).map_err(|e| Rejection::from_decode_error(&e))?;
        // The payload's MAC identifies the tag; data format 6 carries only half of it.
        let payload_mac = measurement.id.get().filter(|id| id.len() == 17).and_then(|id| id.parse::<Mac>().ok());
        let mac = payload_mac.or(adv.address).ok_or(Rejection::NoMac)?;
        let key = match measurement.measurement_sequence_number.value() {
            Some(sequence) => MeasurementKey::Sequence(sequence),
            None => MeasurementKey::of_payload(payload),
        };
        let device_id = ruuvi_device_id(&mac);
        let setting = self.tags.get(&device_id).unwrap_or_default();
        if setting.blocked || self.deny.contains(&mac) || (!self.allow.is_empty() && !self.allow.contains(&mac)) {
            return Err(Rejection::Blocked);
        }
        // Every receiver that heard it counts, even when the measurement is a duplicate.
        self.heard.record(&device_id, &adv.receiver, adv.rssi, adv.received_at);
        match measurement.data_format {
            0xE1 => {
                self.extended_heard.insert(mac, adv.received_at);
            }
            0x06 if self.extended_heard.get(&mac).is_some_and(|at| (adv.received_at - at).abs() <= self.window_ms) => {
                return Err(Rejection::Superseded);
            }
            _ => {}
        }
        if !self.dedup.first_time(mac, measurement.data_format, key, adv.received_at) {
            return Err(Rejection::Duplicate);
        }
        // Offsets correct what the sensor reports; derived values then follow the corrected ones.
        setting.calibration.apply(&mut measurement);
        add_derived_values(&mut measurement);
        let motion = self.motion_of(&mac, adv.received_at, &measurement);
        Ok(Reading {
            ts: adv.measured_at.unwrap_or(adv.received_at),
            device_id,
            mac: mac.to_string(),
            rssi: adv.rssi,
            receiver: adv.receiver.to_string(),
            measurement,
            motion,
            raw: Arc::from(adv.data.as_slice()),
        })
    }
}

impl Processor {
    /// Configured allow and deny lists (`pipeline.allow_tags`, `pipeline.deny_tags`).
    pub fn with_tag_lists(mut self, allow: impl IntoIterator<Item = Mac>, deny: impl IntoIterator<Item = Mac>) -> Self {
        self.allow = allow.into_iter().collect();
        self.deny = deny.into_iter().collect();
        self
    }

    fn motion_of(&mut self, mac: &Mac, at: i64, m: &ruuvi::Measurement) -> Option<MotionState> {
        let accel = match (m.accel_x.value(), m.accel_y.value(), m.accel_z.value()) {
            (Some(x), Some(y), Some(z)) => Some([x, y, z]),
            _ => None,
        };
        if m.accel_x.is_absent() && m.movement_counter.is_absent() {
            return None; // a format without motion sensing (Ruuvi Air)
        }
        Some(self.motion.observe(mac, at, accel, m.movement_counter.value()))
    }
}

/// Consumes the ingress until it closes or `shutdown` fires, then drains what is queued.
pub async fn run(
    mut ingress: mpsc::Receiver<Advertisement>,
    bus: Bus,
    mut processor: Processor,
    shutdown: CancellationToken,
) {
    loop {
        let adv = tokio::select! {
            biased;
            adv = ingress.recv() => adv,
            _ = shutdown.cancelled() => {
                ingress.close();
                ingress.recv().await
            }
        };
        let Some(adv) = adv else { break };
        if let Ok(reading) = processor.process(&adv) {
            bus.publish(Event::Reading(Arc::new(reading))).await;
        }
    }
    tracing::debug!(at = now_ms(), "pipeline stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::{df5_advertisement, encode_df5, Df5Values};

    fn df5_adv(seq: u16, mac: Option<Mac>, address: Option<Mac>, at: i64) -> Advertisement {
        let values = Df5Values {
            temperature: Some(21.0),
            humidity: Some(40.0),
            pressure: Some(100_000.0),
            acceleration: [Some(0.0), Some(0.0), Some(1.0)],
            voltage: Some(3.0),
            tx_power: Some(4),
            movement_counter: Some(1),
            sequence: Some(seq),
            mac,
        };
        Advertisement {
            address,
            data: df5_advertisement(&encode_df5(&values)),
            rssi: Some(-60),
            received_at: at,
            measured_at: None,
            receiver: Arc::from("test"),
        }
    }

    const TAG: Mac = Mac([0xC1, 2, 3, 4, 5, 6]);

    #[test]
    fn duplicates_and_bad_adverts_are_counted_by_reason() {
        let stats = Arc::new(PipelineStats::default());
        let mut p = Processor::new(60_000, stats.clone(), TagSettings::default(), Arc::default());
        let reading = p.process(&df5_adv(7, Some(TAG), None, 1_000)).unwrap();
        assert_eq!(reading.device_id, "ruuvi-c10203040506");
        assert_eq!(reading.mac, "C1:02:03:04:05:06");
        assert!(reading.measurement.dew_point.value().is_some(), "derived values are added");
        assert_eq!(p.process(&df5_adv(7, Some(TAG), None, 1_100)), Err(Rejection::Duplicate));
        assert_eq!(p.process(&df5_adv(7, Some(TAG), None, 1_500)), Err(Rejection::Duplicate));
        assert!(p.process(&df5_adv(8, Some(TAG), None, 2_000)).is_ok());
        // No MAC in the payload: the receiver's address identifies the tag; none at all is rejected.
        assert_eq!(p.process(&df5_adv(1, None, Some(TAG), 3_000)).unwrap().mac, "C1:02:03:04:05:06");
        assert_eq!(p.process(&df5_adv(2, None, None, 3_000)), Err(Rejection::NoMac));
        let bad = |data: &str| Advertisement { data: hex::decode(data).unwrap(), ..df5_adv(0, None, None, 4_000) };
        assert_eq!(p.process(&bad("0201061AFF4C000215")), Err(Rejection::MalformedAdvertisement));
        assert_eq!(p.process(&bad("0201060AFF4C0002150102030405")), Err(Rejection::NotRuuvi));
        assert_eq!(p.process(&bad("05FF99040799")), Err(Rejection::UnsupportedFormat));
        assert_eq!(p.process(&bad("05FF99040512")), Err(Rejection::TooShort));
        let s = stats.snapshot();
        assert_eq!(
            (s.advertisements, s.readings, s.duplicates, s.rejected_no_mac, s.rejected_malformed),
            (10, 3, 2, 1, 1)
        );
        assert_eq!((s.rejected_not_ruuvi, s.rejected_unsupported_format, s.rejected_too_short), (1, 1, 1));
    }

    #[test]
    fn allow_and_deny_lists_from_the_configuration() {
        const OTHER: Mac = Mac([0xC9, 9, 9, 9, 9, 9]);
        let stats = Arc::new(PipelineStats::default());
        let mut only_tag =
            Processor::new(60_000, stats.clone(), TagSettings::default(), Arc::default()).with_tag_lists([TAG], []);
        assert!(only_tag.process(&df5_adv(1, Some(TAG), None, 0)).is_ok());
        assert_eq!(only_tag.process(&df5_adv(1, Some(OTHER), None, 0)), Err(Rejection::Blocked));
        let mut not_tag =
            Processor::new(60_000, stats.clone(), TagSettings::default(), Arc::default()).with_tag_lists([], [TAG]);
        assert_eq!(not_tag.process(&df5_adv(2, Some(TAG), None, 0)), Err(Rejection::Blocked));
        assert!(not_tag.process(&df5_adv(2, Some(OTHER), None, 0)).is_ok());
        assert_eq!(stats.snapshot().rejected_blocked, 2);
    }

    #[test]
    fn ruuvi_air_format_6_is_dropped_while_its_e1_is_heard() {
        let stats = Arc::new(PipelineStats::default());
        let mut p = Processor::new(60_000, stats.clone(), TagSettings::default(), Arc::default());
        let air = Mac([0xCB, 0xB8, 0x33, 0x4C, 0x88, 0x4F]);
        let adv = |hex_data: &str, at: i64| Advertisement {
            address: Some(air),
            data: hex::decode(hex_data).unwrap(),
            rssi: Some(-60),
            received_at: at,
            measured_at: None,
            receiver: Arc::from("test"),
        };
        let df6 = "17FF990406170C5668C79E007000C90501D9FFCD004C884F";
        let e1 = "2BFF9904E1170C5668C79E0065007004BD11CA00C90A0213E0ACFFFFFFDECDEE01FFFFFFFFFFCBB8334C884F";
        assert!(p.process(&adv(df6, 0)).is_ok(), "format 6 alone is used");
        assert!(p.process(&adv(e1, 1_000)).is_ok());
        assert_eq!(p.process(&adv(&df6.replace("CD004C", "CE004C"), 2_000)), Err(Rejection::Superseded));
        assert!(p.process(&adv(&df6.replace("CD004C", "CF004C"), 70_000)).is_ok(), "E1 silent for a window: 6 again");
        assert_eq!(stats.snapshot().superseded_df6, 1);
    }

    #[test]
    fn every_receiver_is_recorded_even_for_duplicates() {
        let heard = Arc::new(HeardBy::default());
        let mut p = Processor::new(60_000, Arc::default(), TagSettings::default(), heard.clone());
        let mut remote = df5_adv(5, Some(TAG), None, 1_000);
        remote.receiver = Arc::from("ruuvi:C8:25:2D:8E:9C:2C");
        remote.rssi = Some(-80);
        assert!(p.process(&df5_adv(5, Some(TAG), None, 1_000)).is_ok());
        assert_eq!(p.process(&remote), Err(Rejection::Duplicate));
        let receivers: Vec<_> =
            heard.for_device("ruuvi-c10203040506").into_iter().map(|h| (h.receiver, h.rssi)).collect();
        assert_eq!(receivers, [("test".to_string(), Some(-60)), ("ruuvi:C8:25:2D:8E:9C:2C".to_string(), Some(-80))]);
    }
}
