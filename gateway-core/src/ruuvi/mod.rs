//! Ruuvi BLE advertisement decoding: pure functions, no I/O.
//!
//! `ad` walks the BLE AD structures and finds Ruuvi manufacturer data (company id 0x0499),
//! `formats` decodes each data format into a [`Measurement`] whose JSON field names and units follow
//! the Ruuvi Gateway's decoded output, and `derived` adds the values users ask for (dew point,
//! absolute humidity, air density, total acceleration, IAQS). Every "not available" sentinel becomes
//! [`Field::Unavailable`] (JSON `null`); fields a format does not carry are [`Field::Absent`] (omitted).

mod ad;
mod derived;
mod field;
mod formats;
mod mac;
mod measurement;

pub use ad::{find_ruuvi_payload, AdError};
pub use derived::{add_derived_values, iaqs_rating};
pub use field::Field;
pub use formats::{decode_payload, DataFormat, DecodeError};
pub use mac::{Mac, ParseMacError};
pub use measurement::Measurement;

/// Ruuvi Innovations Ltd's Bluetooth SIG company identifier.
pub const RUUVI_COMPANY_ID: u16 = 0x0499;

/// Decodes raw advertisement bytes (a sequence of AD structures, as a scanner or a Ruuvi Gateway
/// relays them) into a measurement with derived values.
pub fn decode_advertisement(ad_bytes: &[u8]) -> Result<Measurement, DecodeError> {
    let payload = find_ruuvi_payload(ad_bytes).map_err(DecodeError::Advertisement)?;
    let mut measurement = decode_payload(payload)?;
    add_derived_values(&mut measurement);
    Ok(measurement)
}

/// Decodes whatever a person pastes while debugging a tag: raw AD bytes, the manufacturer data
/// starting with the company id (`9904…`), or a bare payload starting with the format byte.
pub fn decode_any(bytes: &[u8]) -> Result<Measurement, DecodeError> {
    let payload = match find_ruuvi_payload(bytes) {
        Ok(payload) => payload,
        Err(ad_error) => {
            let company = RUUVI_COMPANY_ID.to_le_bytes();
            let bare = bytes.strip_prefix(&company[..]).unwrap_or(bytes);
            match bare.first() {
                Some(&format) if DataFormat::from_byte(format).is_some() => bare,
                Some(&format) => return Err(DecodeError::Unrecognized { advertisement: ad_error, format }),
                None => return Err(DecodeError::Advertisement(ad_error)),
            }
        }
    };
    let mut measurement = decode_payload(payload)?;
    add_derived_values(&mut measurement);
    Ok(measurement)
}

#[cfg(test)]
mod tests;
