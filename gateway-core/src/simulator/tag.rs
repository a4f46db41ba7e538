//! One simulated tag: a small physical model that produces realistic measurements over time
//! (day/night temperature and humidity cycles with noise, pressure drift, a draining battery,
//! movement events, wrapping counters, silent periods) and decides how often each advertisement
//! is heard (0–3 times). Deterministic for a given seed; time is passed in.

use std::f64::consts::TAU;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::encode::{df5_advertisement, e1_advertisement, encode_df5, encode_e1, Df5Values, E1Values};
use crate::config::{SimulatedKind, SimulatorConfig, TagProfile};
use crate::ruuvi::Mac;

const MS_PER_HOUR: f64 = 3_600_000.0;

pub struct SimTag {
    pub mac: Mac,
    pub kind: SimulatedKind,
    profile: TagProfile,
    rng: ChaCha8Rng,
    interval_ms: f64,
    drop_probability: f64,
    duplicate_probability: f64,
    silence_probability: f64,
    silence_duration_ms: f64,
    /// Signal strength of this tag at the receiver, before per-packet fading.
    base_rssi: f64,
    sequence: u32,
    movement_counter: u8,
    battery: f64,
    pressure: f64,
    temperature_noise: f64,
    humidity_noise: f64,
    co2: f64,
    pm2_5: f64,
    moving_until: i64,
    silent_until: i64,
}

/// One advertisement as transmitted, and how many times the receiver hears it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmission {
    pub bytes: Vec<u8>,
    pub receptions: Vec<i16>,
}

impl SimTag {
    pub fn new(index: usize, seed: u64, config: &SimulatorConfig) -> SimTag {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let profile =
            config.tag_profiles.get(index).cloned().unwrap_or_else(|| generated_profile(index, config.air_every));
        let mut mac = [0u8; 6];
        rng.fill(&mut mac);
        // Ruuvi tags use random static addresses: the two most significant bits are set.
        mac[0] |= 0xC0;
        let sequence_limit = match profile.kind {
            SimulatedKind::Tag => 65_534,
            SimulatedKind::Air => 0xFF_FFFE,
        };
        // Every third tag starts just below the wrap so that wrap-around happens within a minute.
        let sequence = if index % 3 == 0 { sequence_limit - 30 } else { rng.random_range(0..sequence_limit) };
        let silence_every_ms = config.silence_every.as_millis() as f64;
        let interval_ms = config.interval.as_millis() as f64;
        SimTag {
            mac: Mac(mac),
            kind: profile.kind,
            rng,
            interval_ms,
            drop_probability: config.drop_probability,
            duplicate_probability: config.duplicate_probability,
            silence_probability: if silence_every_ms > 0.0 { interval_ms / silence_every_ms } else { 0.0 },
            silence_duration_ms: config.silence_duration.as_millis() as f64,
            base_rssi: -45.0 - (index % 7) as f64 * 7.0,
            sequence,
            movement_counter: (index * 37 % 255) as u8,
            battery: profile.battery,
            pressure: 101_325.0 + (index as f64 * 173.0) % 1500.0 - 750.0,
            temperature_noise: 0.0,
            humidity_noise: 0.0,
            co2: 450.0,
            pm2_5: 4.0,
            moving_until: 0,
            silent_until: 0,
            profile,
        }
    }

    /// Advances the model to `now_ms` and returns the advertisement sent then, or `None` while
    /// the tag is out of range.
    pub fn transmit(&mut self, now_ms: i64) -> Option<Transmission> {
        if now_ms < self.silent_until {
            return None;
        }
        if self.rng.random_bool(self.silence_probability.min(1.0)) {
            let duration = self.silence_duration_ms * self.rng.random_range(0.5..1.5);
            self.silent_until = now_ms + duration as i64;
            return None;
        }
        let bytes = match self.kind {
            SimulatedKind::Tag => self.next_df5(now_ms),
            SimulatedKind::Air => self.next_e1(now_ms),
        };
        let copies = self.reception_count();
        let receptions =
            (0..copies).map(|_| (self.base_rssi + self.gaussian() * 3.0).round().clamp(-100.0, -20.0) as i16).collect();
        Some(Transmission { bytes, receptions })
    }

    fn reception_count(&mut self) -> usize {
        let roll: f64 = self.rng.random();
        if roll < self.drop_probability {
            0
        } else if roll < self.drop_probability + self.duplicate_probability {
            self.rng.random_range(2..=3)
        } else {
            1
        }
    }

    /// Standard normal noise (Box–Muller).
    fn gaussian(&mut self) -> f64 {
        let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }

    /// Hours since midnight UTC, as a fraction.
    fn hour_of_day(now_ms: i64) -> f64 {
        (now_ms.rem_euclid(86_400_000)) as f64 / MS_PER_HOUR
    }

    fn climate(&mut self, now_ms: i64) -> (f64, f64) {
        // Warmest mid-afternoon, coolest before dawn; slow red noise on top.
        let daily = (TAU * (Self::hour_of_day(now_ms) - 9.0) / 24.0).sin();
        self.temperature_noise = 0.995 * self.temperature_noise + 0.03 * self.gaussian();
        self.humidity_noise = 0.99 * self.humidity_noise + 0.1 * self.gaussian();
        let temperature = self.profile.temperature + self.profile.temperature_swing * daily + self.temperature_noise;
        let humidity = (self.profile.humidity - 1.5 * (temperature - self.profile.temperature) + self.humidity_noise)
            .clamp(1.0, 100.0);
        // Weather: pressure drifts slowly around the standard atmosphere.
        self.pressure += self.gaussian() * 1.5 + (101_325.0 - self.pressure) * 0.0005;
        // About 2 µV per advertisement: visible over days, never below the cut-off.
        self.battery = (self.battery - 0.000_002).max(2.0);
        (temperature, humidity)
    }

    fn next_sequence(&mut self, limit: u32) -> u32 {
        self.sequence = if self.sequence >= limit { 0 } else { self.sequence + 1 };
        self.sequence
    }

    fn next_df5(&mut self, now_ms: i64) -> Vec<u8> {
        let (temperature, humidity) = self.climate(now_ms);
        let movement_chance = self.profile.movements_per_hour * self.interval_ms / MS_PER_HOUR;
        if now_ms >= self.moving_until && self.rng.random_bool(movement_chance.clamp(0.0, 1.0)) {
            self.moving_until = now_ms + self.rng.random_range(3_000..10_000);
            self.movement_counter = (self.movement_counter + 1) % 255;
        }
        let acceleration = if now_ms < self.moving_until {
            [0.4, 0.4, 0.6].map(|spread| Some(self.gaussian() * spread + if spread > 0.5 { 1.0 } else { 0.0 }))
        } else {
            [0.0, 0.0, 1.0].map(|rest| Some(rest + self.gaussian() * 0.004))
        };
        let sequence = self.next_sequence(65_534) as u16;
        let values = Df5Values {
            temperature: Some(temperature),
            humidity: Some(humidity),
            pressure: Some(self.pressure),
            acceleration,
            voltage: Some(self.battery),
            tx_power: Some(4),
            movement_counter: Some(self.movement_counter),
            sequence: Some(sequence),
            mac: Some(self.mac),
        };
        df5_advertisement(&encode_df5(&values))
    }

    fn next_e1(&mut self, now_ms: i64) -> Vec<u8> {
        let (temperature, humidity) = self.climate(now_ms);
        let hour = Self::hour_of_day(now_ms);
        let occupied = (7.0..23.0).contains(&hour);
        let co2_target = if occupied { 950.0 } else { 460.0 };
        self.co2 += (co2_target - self.co2) * 0.002 + self.gaussian() * 4.0;
        self.co2 = self.co2.max(400.0);
        // Particles: a low base level with occasional cooking spikes that decay.
        if self.rng.random_bool(0.0005) {
            self.pm2_5 += self.rng.random_range(20.0..60.0);
        }
        self.pm2_5 = (self.pm2_5 + (4.0 - self.pm2_5) * 0.01 + self.gaussian() * 0.2).max(0.0);
        let daylight = ((TAU * (hour - 6.0) / 24.0).sin()).max(0.0);
        let voc = (100.0 + self.gaussian() * 15.0).clamp(1.0, 500.0) as u16;
        let nox = (1.0 + self.gaussian().abs() * 2.0).clamp(1.0, 500.0) as u16;
        let sequence = self.next_sequence(0xFF_FFFE);
        let values = E1Values {
            temperature: Some(temperature),
            humidity: Some(humidity),
            pressure: Some(self.pressure),
            pm1_0: Some(self.pm2_5 * 0.7),
            pm2_5: Some(self.pm2_5),
            pm4_0: Some(self.pm2_5 * 1.1),
            pm10_0: Some(self.pm2_5 * 1.2),
            co2: Some(self.co2),
            voc: Some(voc),
            nox: Some(nox),
            luminosity: Some((daylight * 400.0 + self.gaussian().abs() * 5.0).max(0.0)),
            sequence: Some(sequence),
            calibration_in_progress: false,
            mac: Some(self.mac),
        };
        e1_advertisement(&encode_e1(&values))
    }
}

/// Varied rooms so a demo looks like a real home.
fn generated_profile(index: usize, air_every: usize) -> TagProfile {
    let is_air = air_every > 0 && index % air_every == air_every - 1;
    let (temperature, swing, humidity, movements) = match index % 5 {
        0 => (21.5, 1.5, 40.0, 2.0), // living room
        1 => (19.0, 1.0, 50.0, 0.5), // bedroom
        2 => (8.0, 6.0, 75.0, 0.2),  // outdoors
        3 => (4.0, 0.4, 60.0, 6.0),  // fridge (door opens often)
        _ => (22.5, 2.5, 35.0, 1.0), // office
    };
    TagProfile {
        name: None,
        kind: if is_air { SimulatedKind::Air } else { SimulatedKind::Tag },
        temperature,
        temperature_swing: swing,
        humidity,
        movements_per_hour: movements,
        battery: 2.9 + (index % 4) as f64 * 0.05,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruuvi::decode_advertisement;

    fn config() -> SimulatorConfig {
        SimulatorConfig { tags: 5, ..SimulatorConfig::default() }
    }

    #[test]
    fn same_seed_same_tags_and_data() {
        let run = |seed| {
            let mut tag = SimTag::new(1, seed, &config());
            (0..200).filter_map(|i| tag.transmit(1_700_000_000_000 + i * 1000)).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn advertisements_decode_with_plausible_values_and_wrapping_sequence() {
        let config = config();
        let mut kinds = Vec::new();
        for index in 0..5 {
            let mut tag = SimTag::new(index, 42, &config);
            kinds.push(tag.kind);
            let mut sequences = Vec::new();
            let mut receptions = 0;
            for i in 0..600 {
                let Some(tx) = tag.transmit(1_700_000_000_000 + i * 1000) else {
                    continue;
                };
                receptions += tx.receptions.len();
                let m = decode_advertisement(&tx.bytes).expect("simulated adverts are valid");
                assert_eq!(m.id.get(), Some(&tag.mac.to_string()));
                let t = m.temperature.value().unwrap();
                assert!((-20.0..40.0).contains(&t), "temperature {t}");
                let h = m.humidity.value().unwrap();
                assert!((0.0..=100.0).contains(&h), "humidity {h}");
                let p = m.pressure.value().unwrap();
                assert!((95_000.0..107_000.0).contains(&p), "pressure {p}");
                sequences.push(m.measurement_sequence_number.value().unwrap());
            }
            assert!(sequences.len() > 400, "tag {index} sent {} of 600", sequences.len());
            assert!(receptions > sequences.len() * 9 / 10, "duplicates roughly offset drops");
            if index % 3 == 0 {
                assert!(sequences.windows(2).any(|w| w[1] < w[0]), "tag {index}: sequence wraps");
            }
        }
        assert!(kinds.contains(&SimulatedKind::Air) && kinds.contains(&SimulatedKind::Tag));
    }

    #[test]
    fn drops_duplicates_and_silences_happen() {
        let config = SimulatorConfig {
            silence_every: std::time::Duration::from_secs(120),
            silence_duration: std::time::Duration::from_secs(30),
            ..config()
        };
        let mut tag = SimTag::new(2, 9, &config);
        let (mut silent, mut dropped, mut duplicated) = (0, 0, 0);
        for i in 0..3_000 {
            match tag.transmit(1_700_000_000_000 + i * 1000) {
                None => silent += 1,
                Some(tx) if tx.receptions.is_empty() => dropped += 1,
                Some(tx) if tx.receptions.len() > 1 => duplicated += 1,
                Some(_) => {}
            }
        }
        assert!(silent > 100 && dropped > 100 && duplicated > 300, "{silent} {dropped} {duplicated}");
    }
}
