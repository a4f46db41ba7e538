//! Decoders for Ruuvi data formats 3, 5, C5, 6 and E1 (layouts in shared/reference/ruuvi.md §1).
//! All multi-byte fields are big-endian. Each "not available" sentinel is mapped per field.

use super::{ad::AdError, Field, Mac, Measurement};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// RAWv1 (deprecated, RuuviTag).
    V3,
    /// RAWv2 (RuuviTag).
    V5,
    /// Cut-RAWv2: DF5 without acceleration.
    C5,
    /// Ruuvi Air, BT4-compatible.
    V6,
    /// Ruuvi Air, BT5 extended advertising.
    E1,
}

impl DataFormat {
    pub fn from_byte(byte: u8) -> Option<DataFormat> {
        match byte {
            0x03 => Some(DataFormat::V3),
            0x05 => Some(DataFormat::V5),
            0xC5 => Some(DataFormat::C5),
            0x06 => Some(DataFormat::V6),
            0xE1 => Some(DataFormat::E1),
            _ => None,
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            DataFormat::V3 => 0x03,
            DataFormat::V5 => 0x05,
            DataFormat::C5 => 0xC5,
            DataFormat::V6 => 0x06,
            DataFormat::E1 => 0xE1,
        }
    }

    /// Payload length including the format byte.
    pub fn payload_len(self) -> usize {
        match self {
            DataFormat::V3 => 14,
            DataFormat::V5 => 24,
            DataFormat::C5 => 18,
            DataFormat::V6 => 20,
            DataFormat::E1 => 40,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Advertisement(AdError),
    #[error("neither advertisement data ({advertisement}) nor a Ruuvi payload (data format 0x{format:02X} is not supported)")]
    Unrecognized { advertisement: AdError, format: u8 },
    #[error("the Ruuvi payload is empty")]
    EmptyPayload,
    #[error("data format 0x{0:02X} is not supported (supported: 3, 5, C5, 6, E1)")]
    UnsupportedFormat(u8),
    #[error("data format 0x{format:02X} needs {expected} bytes, got {actual}")]
    TooShort { format: u8, expected: usize, actual: usize },
}

/// Decodes a Ruuvi payload that starts with the data-format byte. Trailing bytes are ignored
/// (some tools append the RSSI). Derived values are not added here.
pub fn decode_payload(payload: &[u8]) -> Result<Measurement, DecodeError> {
    let &format_byte = payload.first().ok_or(DecodeError::EmptyPayload)?;
    let format = DataFormat::from_byte(format_byte).ok_or(DecodeError::UnsupportedFormat(format_byte))?;
    if payload.len() < format.payload_len() {
        return Err(DecodeError::TooShort {
            format: format_byte,
            expected: format.payload_len(),
            actual: payload.len(),
        });
    }
    let bytes = Bytes(payload);
    Ok(match format {
        DataFormat::V3 => decode_v3(bytes),
        DataFormat::V5 => decode_v5(bytes),
        DataFormat::C5 => decode_c5(bytes),
        DataFormat::V6 => decode_v6(bytes),
        DataFormat::E1 => decode_e1(bytes),
    })
}

/// Big-endian field access on a payload whose length was already checked.
#[derive(Clone, Copy)]
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(self, at: usize) -> u8 {
        self.0[at]
    }
    fn u16(self, at: usize) -> u16 {
        u16::from_be_bytes([self.0[at], self.0[at + 1]])
    }
    fn i16(self, at: usize) -> i16 {
        i16::from_be_bytes([self.0[at], self.0[at + 1]])
    }
    fn u24(self, at: usize) -> u32 {
        u32::from_be_bytes([0, self.0[at], self.0[at + 1], self.0[at + 2]])
    }
    fn mac(self, at: usize) -> Field<String> {
        let mut raw = [0u8; 6];
        raw.copy_from_slice(&self.0[at..at + 6]);
        if raw == [0xFF; 6] {
            Field::Unavailable
        } else {
            Field::Value(Mac(raw).to_string())
        }
    }
}

// Field decoders shared by the RAWv2 family (5, C5, 6, E1).

fn temperature(b: Bytes, at: usize) -> Field<f64> {
    Field::unless(b.i16(at), i16::MIN).map(|raw| f64::from(raw) / 200.0)
}

fn humidity(b: Bytes, at: usize) -> Field<f64> {
    Field::unless(b.u16(at), u16::MAX).map(|raw| f64::from(raw) / 400.0)
}

fn pressure(b: Bytes, at: usize) -> Field<f64> {
    Field::unless(b.u16(at), u16::MAX).map(|raw| f64::from(raw) + 50_000.0)
}

fn acceleration(b: Bytes, at: usize) -> Field<f64> {
    Field::unless(b.i16(at), i16::MIN).map(|raw| f64::from(raw) / 1000.0)
}

/// Power info: 11 bits of battery voltage above 1.6 V in mV, 5 bits of TX power in 2 dBm steps.
fn power_info(b: Bytes, at: usize) -> (Field<f64>, Field<i32>) {
    let raw = b.u16(at);
    let voltage = Field::unless(raw >> 5, 0x7FF).map(|mv| (f64::from(mv) + 1600.0) / 1000.0);
    let tx_power = Field::unless(raw & 0x1F, 0x1F).map(|step| i32::from(step) * 2 - 40);
    (voltage, tx_power)
}

fn tenths(b: Bytes, at: usize) -> Field<f64> {
    Field::unless(b.u16(at), u16::MAX).map(|raw| f64::from(raw) / 10.0)
}

/// VOC and NOx indices are 9-bit: eight high bits in their own byte, the LSB in the flags byte.
fn index_9bit(high: u8, flags: u8, lsb_bit: u8) -> Field<u32> {
    let value = (u32::from(high) << 1) | u32::from((flags >> lsb_bit) & 1);
    Field::unless(value, 0x1FF)
}

fn set_flags(m: &mut Measurement, flags: u8) {
    m.flag_calibration_in_progress = Field::Value(flags & 0x01 != 0);
    m.flag_button_pressed = Field::Value(flags & 0x02 != 0);
    m.flag_rtc_running_on_boot = Field::Value(flags & 0x04 != 0);
}

fn decode_v3(b: Bytes) -> Measurement {
    // RAWv1 has no "not available" sentinels; the temperature is sign + magnitude.
    let sign_magnitude = b.u8(2);
    let magnitude = f64::from(sign_magnitude & 0x7F) + f64::from(b.u8(3)) / 100.0;
    let temperature = if sign_magnitude & 0x80 != 0 { -magnitude } else { magnitude };
    Measurement {
        data_format: 3,
        humidity: Field::Value(f64::from(b.u8(1)) / 2.0),
        temperature: Field::Value(round(temperature, 2)),
        pressure: Field::Value(f64::from(b.u16(4)) + 50_000.0),
        accel_x: Field::Value(f64::from(b.i16(6)) / 1000.0),
        accel_y: Field::Value(f64::from(b.i16(8)) / 1000.0),
        accel_z: Field::Value(f64::from(b.i16(10)) / 1000.0),
        voltage: Field::Value(f64::from(b.u16(12)) / 1000.0),
        ..Measurement::default()
    }
}

fn decode_v5(b: Bytes) -> Measurement {
    let (voltage, tx_power) = power_info(b, 13);
    Measurement {
        data_format: 5,
        temperature: temperature(b, 1),
        humidity: humidity(b, 3),
        pressure: pressure(b, 5),
        accel_x: acceleration(b, 7),
        accel_y: acceleration(b, 9),
        accel_z: acceleration(b, 11),
        voltage,
        tx_power,
        movement_counter: Field::unless(b.u8(15), 0xFF).map(u32::from),
        measurement_sequence_number: Field::unless(b.u16(16), u16::MAX).map(u32::from),
        id: b.mac(18),
        ..Measurement::default()
    }
}

fn decode_c5(b: Bytes) -> Measurement {
    let (voltage, tx_power) = power_info(b, 7);
    Measurement {
        data_format: 0xC5,
        temperature: temperature(b, 1),
        humidity: humidity(b, 3),
        pressure: pressure(b, 5),
        voltage,
        tx_power,
        movement_counter: Field::unless(b.u8(9), 0xFF).map(u32::from),
        measurement_sequence_number: Field::unless(b.u16(10), u16::MAX).map(u32::from),
        id: b.mac(12),
        ..Measurement::default()
    }
}

fn decode_v6(b: Bytes) -> Measurement {
    let flags = b.u8(16);
    let luminosity = Field::unless(b.u8(13), 0xFF).map(|code| {
        // Logarithmic code: lux = exp(code · ln(65536) / 254) − 1.
        let lux = (f64::from(code) * 65536f64.ln() / 254.0).exp() - 1.0;
        round(lux, 2)
    });
    let mac3 = &b.0[17..20];
    let mut m = Measurement {
        data_format: 6,
        temperature: temperature(b, 1),
        humidity: humidity(b, 3),
        pressure: pressure(b, 5),
        pm2_5: tenths(b, 7),
        co2: Field::unless(b.u16(9), u16::MAX).map(f64::from),
        voc: index_9bit(b.u8(11), flags, 6),
        nox: index_9bit(b.u8(12), flags, 7),
        luminosity,
        // Byte 14 is reserved in the official docs. The 8-bit sequence has no sentinel.
        measurement_sequence_number: Field::Value(u32::from(b.u8(15))),
        id: if mac3 == [0xFF; 3] {
            Field::Unavailable
        } else {
            Field::Value(format!("{:02X}:{:02X}:{:02X}", mac3[0], mac3[1], mac3[2]))
        },
        ..Measurement::default()
    };
    set_flags(&mut m, flags);
    m
}

fn decode_e1(b: Bytes) -> Measurement {
    let flags = b.u8(28);
    let mut m = Measurement {
        data_format: 0xE1,
        temperature: temperature(b, 1),
        humidity: humidity(b, 3),
        pressure: pressure(b, 5),
        pm1_0: tenths(b, 7),
        pm2_5: tenths(b, 9),
        pm4_0: tenths(b, 11),
        pm10_0: tenths(b, 13),
        co2: Field::unless(b.u16(15), u16::MAX).map(f64::from),
        voc: index_9bit(b.u8(17), flags, 6),
        nox: index_9bit(b.u8(18), flags, 7),
        luminosity: Field::unless(b.u24(19), 0xFF_FFFF).map(|raw| f64::from(raw) / 100.0),
        // Bytes 22–24 and 29–33 are reserved in the official docs.
        measurement_sequence_number: Field::unless(b.u24(25), 0xFF_FFFF),
        id: b.mac(34),
        ..Measurement::default()
    };
    set_flags(&mut m, flags);
    m
}

pub(crate) fn round(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}
