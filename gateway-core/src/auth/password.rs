//! Secrets: argon2id hashing (PHC strings), verification, and generation of random secrets.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use rand::RngExt;

/// argon2id with the crate's defaults (m = 19 MiB, t = 2, p = 1: OWASP's minimum). Slow on
/// purpose; call from a blocking thread.
pub fn hash(secret: &str) -> String {
    Argon2::default()
        .hash_password(secret.as_bytes())
        .expect("argon2id hashing with default parameters cannot fail")
        .to_string()
}

/// Constant-time check of `secret` against a PHC string. A malformed hash never verifies.
pub fn verify(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A random secret of 160 bits, as 40 hex characters (easy to type into firmware configs).
pub fn generate() -> String {
    let bytes: [u8; 20] = rand::rng().random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let secret = generate();
        assert_eq!(secret.len(), 40);
        let phc = hash(&secret);
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains(&secret));
        assert!(verify(&secret, &phc));
        assert!(!verify("wrong", &phc));
        assert!(!verify(&secret, "not a hash"));
        assert_ne!(hash(&secret), phc, "salted");
    }
}
