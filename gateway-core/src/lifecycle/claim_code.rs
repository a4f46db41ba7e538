//! Claim codes: 50 random bits (CSPRNG) in Crockford base32, shown as `7KQ4M-2XDAB`. Only a keyed
//! hash is stored; what people type is normalised first (case, dashes and spaces, the letters
//! O/I/L read as 0/1/1), so a code read off a small display still works.

use sha2::{Digest, Sha256};

/// Crockford's base32 alphabet: no I, L, O or U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// 10 symbols × 5 bits = 50 bits.
pub const CODE_SYMBOLS: usize = 10;

/// A fresh code, formatted for people.
pub fn generate() -> String {
    let bytes: [u8; CODE_SYMBOLS] = rand::random();
    let symbols: String = bytes.iter().map(|b| ALPHABET[(b & 0x1F) as usize] as char).collect();
    format!("{}-{}", &symbols[..5], &symbols[5..])
}

/// The canonical form of a typed code, or `None` when it cannot be a code at all.
pub fn normalize(typed: &str) -> Option<String> {
    let mut canonical = String::with_capacity(CODE_SYMBOLS);
    for c in typed.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' | '\t' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c if ALPHABET.contains(&(c as u8)) && c.is_ascii() => c,
            _ => return None,
        };
        canonical.push(c);
    }
    (canonical.len() == CODE_SYMBOLS).then_some(canonical)
}

/// SHA-256 of the canonical code under the installation's secret key. Codes carry 50 random bits
/// and attempts are limited, so a fast keyed hash is enough; the key keeps a stolen database
/// from being enough to test codes offline.
pub fn hash(key: &[u8], canonical: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(key);
    hasher.update(canonical.as_bytes());
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_look_right_and_differ() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 11);
        assert_eq!(&a[5..6], "-");
        assert_eq!(normalize(&a).as_deref(), Some(a.replace('-', "").as_str()));
    }

    #[test]
    fn normalisation_table() {
        let cases = [
            ("7KQ4M-2XDAB", Some("7KQ4M2XDAB")),
            ("7kq4m 2xdab", Some("7KQ4M2XDAB")),
            ("7KQ4M2XDAB", Some("7KQ4M2XDAB")),
            ("OIL00-11111", Some("0110011111")),
            ("7KQ4M-2XDA", None),   // too short
            ("7KQ4M-2XDABC", None), // too long
            ("7KQ4M-2XDAU", None),  // U is not in the alphabet
            ("7KQ4M-2XDA!", None),
            ("", None),
        ];
        for (typed, expected) in cases {
            assert_eq!(normalize(typed).as_deref(), expected, "{typed:?}");
        }
    }

    #[test]
    fn hashes_are_keyed() {
        assert_eq!(hash(b"k1", "7KQ4M2XDAB"), hash(b"k1", "7KQ4M2XDAB"));
        assert_ne!(hash(b"k1", "7KQ4M2XDAB"), hash(b"k2", "7KQ4M2XDAB"));
        assert_eq!(hash(b"k1", "X").len(), 64);
    }
}
