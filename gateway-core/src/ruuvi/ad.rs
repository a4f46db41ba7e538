//! Walks BLE advertising data (a sequence of `len, type, data…` AD structures) and returns the
//! Ruuvi payload of the manufacturer-specific AD structure with company id 0x0499.
//! Offsets are never hard-coded: the flags AD may be missing, and E1 puts the MSD first.

use super::RUUVI_COMPANY_ID;

const AD_TYPE_MANUFACTURER_SPECIFIC: u8 = 0xFF;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdError {
    #[error("the advertisement is empty")]
    Empty,
    #[error("AD structure at byte {offset} claims {claimed} bytes but only {available} remain")]
    Truncated { offset: usize, claimed: usize, available: usize },
    #[error("no manufacturer data with Ruuvi's company id 0x0499 in the advertisement")]
    NoRuuviData,
}

/// Returns the bytes after the company id of the first Ruuvi manufacturer-data structure.
pub fn find_ruuvi_payload(ad_bytes: &[u8]) -> Result<&[u8], AdError> {
    if ad_bytes.is_empty() {
        return Err(AdError::Empty);
    }
    let company = RUUVI_COMPANY_ID.to_le_bytes();
    let mut offset = 0;
    while offset < ad_bytes.len() {
        let length = ad_bytes[offset] as usize;
        if length == 0 {
            // A zero length marks the end of significant data (padding follows).
            break;
        }
        let available = ad_bytes.len() - offset - 1;
        if length > available {
            return Err(AdError::Truncated { offset, claimed: length, available });
        }
        let structure = &ad_bytes[offset + 1..offset + 1 + length];
        if let [AD_TYPE_MANUFACTURER_SPECIFIC, c0, c1, payload @ ..] = structure {
            if [*c0, *c1] == company {
                return Ok(payload);
            }
        }
        offset += 1 + length;
    }
    Err(AdError::NoRuuviData)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(hex: &str) -> Vec<u8> {
        hex::decode(hex).unwrap()
    }

    #[test]
    fn finds_the_payload_wherever_the_msd_sits() {
        let cases: &[(&str, &str, Result<&str, AdError>)] = &[
            (
                "DF5 with flags",
                "0201061BFF99040512FC",
                Err(AdError::Truncated { offset: 3, claimed: 27, available: 6 }),
            ),
            ("DF5 without flags", "05FF99040512", Ok("0512")),
            ("flags then MSD", "02010605FF99040512", Ok("0512")),
            ("DF6 with service uuid", "0201060303 98FC05FF99040612", Ok("0612")),
            ("E1 first, uuid after", "05FF9904E1170303 98FC", Ok("E117")),
            ("other company only", "05FF4C000215", Err(AdError::NoRuuviData)),
            ("padding after data", "05FF99040512000000", Ok("0512")),
            ("empty", "", Err(AdError::Empty)),
            ("only padding", "00", Err(AdError::NoRuuviData)),
            ("msd too short for company", "02FF99", Err(AdError::NoRuuviData)),
        ];
        for (name, hex, expected) in cases {
            let input = bytes(&hex.replace(' ', ""));
            let got = find_ruuvi_payload(&input).map(hex::encode_upper);
            let expected = expected.clone().map(str::to_string);
            assert_eq!(got, expected, "{name}");
        }
    }
}
