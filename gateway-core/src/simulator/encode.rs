//! Encoders for Ruuvi data formats 5 and E1, used by the simulator to emit the same bytes a real
//! tag would. Out-of-range inputs are clipped to the nearest representable value and `None`
//! becomes the format's "not available" sentinel, as in Ruuvi's reference encoder.

use crate::ruuvi::Mac;

/// One RuuviTag measurement (data format 5).
#[derive(Debug, Clone, PartialEq)]
pub struct Df5Values {
    pub temperature: Option<f64>,
    pub humidity: Option<f64>,
    pub pressure: Option<f64>,
    pub acceleration: [Option<f64>; 3],
    pub voltage: Option<f64>,
    pub tx_power: Option<i32>,
    pub movement_counter: Option<u8>,
    pub sequence: Option<u16>,
    pub mac: Option<Mac>,
}

/// One Ruuvi Air measurement (data format E1).
#[derive(Debug, Clone, PartialEq)]
pub struct E1Values {
    pub temperature: Option<f64>,
    pub humidity: Option<f64>,
    pub pressure: Option<f64>,
    pub pm1_0: Option<f64>,
    pub pm2_5: Option<f64>,
    pub pm4_0: Option<f64>,
    pub pm10_0: Option<f64>,
    pub co2: Option<f64>,
    pub voc: Option<u16>,
    pub nox: Option<u16>,
    pub luminosity: Option<f64>,
    pub sequence: Option<u32>,
    pub calibration_in_progress: bool,
    pub mac: Option<Mac>,
}

fn scaled(value: Option<f64>, scale: f64, offset: f64, min: f64, max: f64, sentinel: i64) -> i64 {
    match value {
        Some(v) if v.is_finite() => ((v - offset) * scale).round().clamp(min, max) as i64,
        _ => sentinel,
    }
}

fn temperature_raw(t: Option<f64>) -> [u8; 2] {
    (scaled(t, 200.0, 0.0, -32767.0, 32767.0, i64::from(i16::MIN)) as i16).to_be_bytes()
}
fn humidity_raw(h: Option<f64>) -> [u8; 2] {
    (scaled(h, 400.0, 0.0, 0.0, 65534.0, 65535) as u16).to_be_bytes()
}
fn pressure_raw(p: Option<f64>) -> [u8; 2] {
    (scaled(p, 1.0, 50_000.0, 0.0, 65534.0, 65535) as u16).to_be_bytes()
}
fn mac_raw(mac: Option<Mac>) -> [u8; 6] {
    mac.map(|m| m.0).unwrap_or([0xFF; 6])
}

pub fn encode_df5(v: &Df5Values) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[0] = 0x05;
    out[1..3].copy_from_slice(&temperature_raw(v.temperature));
    out[3..5].copy_from_slice(&humidity_raw(v.humidity));
    out[5..7].copy_from_slice(&pressure_raw(v.pressure));
    for (i, axis) in v.acceleration.iter().enumerate() {
        let raw = scaled(*axis, 1000.0, 0.0, -32767.0, 32767.0, i64::from(i16::MIN)) as i16;
        out[7 + 2 * i..9 + 2 * i].copy_from_slice(&raw.to_be_bytes());
    }
    let voltage = scaled(v.voltage, 1000.0, 1.6, 0.0, 2046.0, 2047) as u16;
    let tx = match v.tx_power {
        Some(dbm) => ((dbm.clamp(-40, 20) + 40) / 2) as u16,
        None => 31,
    };
    out[13..15].copy_from_slice(&((voltage << 5) | tx).to_be_bytes());
    out[15] = v.movement_counter.map(|m| m.min(254)).unwrap_or(0xFF);
    out[16..18].copy_from_slice(&v.sequence.map(|s| s.min(65534)).unwrap_or(0xFFFF).to_be_bytes());
    out[18..24].copy_from_slice(&mac_raw(v.mac));
    out
}

pub fn encode_e1(v: &E1Values) -> [u8; 40] {
    let mut out = [0xFFu8; 40];
    out[0] = 0xE1;
    out[1..3].copy_from_slice(&temperature_raw(v.temperature));
    out[3..5].copy_from_slice(&humidity_raw(v.humidity));
    out[5..7].copy_from_slice(&pressure_raw(v.pressure));
    for (i, pm) in [v.pm1_0, v.pm2_5, v.pm4_0, v.pm10_0].iter().enumerate() {
        let raw = scaled(*pm, 10.0, 0.0, 0.0, 10_000.0, 65535) as u16;
        out[7 + 2 * i..9 + 2 * i].copy_from_slice(&raw.to_be_bytes());
    }
    out[15..17].copy_from_slice(&(scaled(v.co2, 1.0, 0.0, 0.0, 40_000.0, 65535) as u16).to_be_bytes());
    let voc = v.voc.map(|x| x.min(500)).unwrap_or(0x1FF);
    let nox = v.nox.map(|x| x.min(500)).unwrap_or(0x1FF);
    out[17] = (voc >> 1) as u8;
    out[18] = (nox >> 1) as u8;
    let lux = scaled(v.luminosity, 100.0, 0.0, 0.0, 14_428_400.0, 0xFF_FFFF) as u32;
    out[19..22].copy_from_slice(&lux.to_be_bytes()[1..]);
    // 22..25 reserved (FF)
    let seq = v.sequence.map(|s| s.min(0xFF_FFFE)).unwrap_or(0xFF_FFFF);
    out[25..28].copy_from_slice(&seq.to_be_bytes()[1..]);
    out[28] = u8::from(v.calibration_in_progress) | (((voc & 1) as u8) << 6) | (((nox & 1) as u8) << 7);
    // 29..34 reserved (FF)
    out[34..40].copy_from_slice(&mac_raw(v.mac));
    out
}

/// A legacy advertisement as a RuuviTag sends it: flags, then the manufacturer data.
pub fn df5_advertisement(payload: &[u8; 24]) -> Vec<u8> {
    let mut ad = vec![0x02, 0x01, 0x06, 0x1B, 0xFF, 0x99, 0x04];
    ad.extend_from_slice(payload);
    ad
}

/// An extended advertisement as a Ruuvi Air sends it: manufacturer data, then the service UUID.
pub fn e1_advertisement(payload: &[u8; 40]) -> Vec<u8> {
    let mut ad = vec![0x2B, 0xFF, 0x99, 0x04];
    ad.extend_from_slice(payload);
    ad.extend_from_slice(&[0x03, 0x03, 0x98, 0xFC]);
    ad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruuvi::{decode_advertisement, Field};

    const MAC: Mac = Mac([0xCB, 0xB8, 0x33, 0x4C, 0x88, 0x4F]);

    fn df5(t: f64, h: f64, p: f64, acc: f64, v: f64, tx: i32, mov: u8, seq: u16) -> Df5Values {
        Df5Values {
            temperature: Some(t),
            humidity: Some(h),
            pressure: Some(p),
            acceleration: [Some(acc); 3],
            voltage: Some(v),
            tx_power: Some(tx),
            movement_counter: Some(mov),
            sequence: Some(seq),
            mac: Some(MAC),
        }
    }

    #[test]
    fn df5_reference_encoder_vectors() {
        // ruuvi.endpoints.c: out-of-range inputs clip to the official maximum and minimum vectors.
        let overflow = df5(170.0, 200.0, 200_044.0, 40.0, 3.7, 25, 254, 65534);
        assert_eq!(hex::encode_upper(encode_df5(&overflow)), "057FFFFFFEFFFE7FFF7FFF7FFFFFDEFEFFFECBB8334C884F");
        let underflow = df5(-170.0, -1.0, 49_999.0, -40.0, 1.5, -41, 0, 0);
        assert_eq!(hex::encode_upper(encode_df5(&underflow)), "058001000000008001800180010000000000CBB8334C884F");
        let valid = Df5Values {
            acceleration: [Some(0.004), Some(-0.004), Some(1.036)],
            ..df5(24.3, 53.49, 100_044.0, 0.0, 2.977, 4, 66, 205)
        };
        assert_eq!(hex::encode_upper(encode_df5(&valid)), "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F");
        let unavailable = Df5Values {
            temperature: None,
            humidity: None,
            pressure: None,
            acceleration: [None; 3],
            voltage: None,
            tx_power: None,
            movement_counter: None,
            sequence: None,
            mac: None,
        };
        assert_eq!(hex::encode_upper(encode_df5(&unavailable)), "058000FFFFFFFF800080008000FFFFFFFFFFFFFFFFFFFFFF");
    }

    #[test]
    fn e1_round_trips_through_the_decoder() {
        let values = E1Values {
            temperature: Some(29.5),
            humidity: Some(55.3),
            pressure: Some(101_102.0),
            pm1_0: Some(10.1),
            pm2_5: Some(11.2),
            pm4_0: Some(121.3),
            pm10_0: Some(455.4),
            co2: Some(201.0),
            voc: Some(21),
            nox: Some(5),
            luminosity: Some(13_027.0),
            sequence: Some(14_601_710),
            calibration_in_progress: true,
            mac: Some(MAC),
        };
        let m = decode_advertisement(&e1_advertisement(&encode_e1(&values))).unwrap();
        assert_eq!(m.temperature, Field::Value(29.5));
        assert_eq!(m.pm10_0, Field::Value(455.4));
        assert_eq!(m.voc, Field::Value(21), "odd VOC needs its ninth bit in the flags");
        assert_eq!(m.nox, Field::Value(5));
        assert_eq!(m.luminosity, Field::Value(13_027.0));
        assert_eq!(m.measurement_sequence_number, Field::Value(14_601_710));
        assert_eq!(m.flag_calibration_in_progress, Field::Value(true));
        assert_eq!(m.id, Field::Value(MAC.to_string()));
    }
}
