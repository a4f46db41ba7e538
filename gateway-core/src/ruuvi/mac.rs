//! A Bluetooth MAC address, printed the way Ruuvi tools print it (`CB:B8:33:4C:88:4F`).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Lower-case hex without separators, as used in device ids (`cbb8334c884f`).
    pub fn compact(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02X}:{b:02X}:{c:02X}:{d:02X}:{e:02X}:{g:02X}")
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("'{0}' is not a MAC address; expected six hex bytes such as CB:B8:33:4C:88:4F")]
pub struct ParseMacError(String);

impl FromStr for Mac {
    type Err = ParseMacError;

    /// Accepts `CB:B8:33:4C:88:4F`, `cb-b8-33-4c-88-4f` and `cbb8334c884f`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits: String = s.chars().filter(|c| !matches!(c, ':' | '-')).collect();
        let mut bytes = [0u8; 6];
        match hex::decode_to_slice(&digits, &mut bytes) {
            Ok(()) => Ok(Mac(bytes)),
            Err(_) => Err(ParseMacError(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_accepted_spelling() {
        for input in ["CB:B8:33:4C:88:4F", "cb-b8-33-4c-88-4f", "cbb8334c884f"] {
            let mac: Mac = input.parse().unwrap();
            assert_eq!(mac.to_string(), "CB:B8:33:4C:88:4F");
            assert_eq!(mac.compact(), "cbb8334c884f");
        }
        for bad in ["", "CB:B8:33:4C:88", "zz:b8:33:4c:88:4f", "CB:B8:33:4C:88:4F:00"] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}
