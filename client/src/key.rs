//! Idempotency keys: what makes a publish safe to send again.
//!
//! A publish whose answer was lost (a timeout, a connection cut, an
//! instance gone) may or may not have been stored. Sent again with the same
//! key, in the same room, within the server's idempotency window, it is
//! stored at most once: the server answers the first message again
//! (`200` with `Idempotent-Replayed: true`). So the client gives every
//! publish a key, and every retry of it reuses that key.

use std::fmt;

/// An `Idempotency-Key`: 1-64 characters of `[A-Za-z0-9_.:-]`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// A string that cannot be an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an idempotency key is 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':' or '-'")]
pub struct InvalidKey;

impl IdempotencyKey {
    /// The longest key the server accepts.
    pub const MAX_LEN: usize = 64;
    /// The length of a generated key: 22 characters of a 62-letter alphabet
    /// are about 131 random bits, so two clients never pick the same key.
    const GENERATED_LEN: usize = 22;
    const ALPHABET: &'static [u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

    /// Checks a key chosen by the caller (e.g. derived from its own request
    /// id, so that its own retries, even across restarts, reuse it).
    pub fn parse(raw: &str) -> Result<Self, InvalidKey> {
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !raw.chars().all(valid) {
            return Err(InvalidKey);
        }
        Ok(Self(raw.to_owned()))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self::generate_with(&mut fastrand::Rng::new())
    }

    fn generate_with(rng: &mut fastrand::Rng) -> Self {
        let key = (0..Self::GENERATED_LEN)
            .map(|_| char::from(Self::ALPHABET[rng.usize(..Self::ALPHABET.len())]))
            .collect();
        Self(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn generated_keys_are_valid_keys() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..1000 {
            let key = IdempotencyKey::generate_with(&mut rng);
            assert_eq!(IdempotencyKey::parse(key.as_str()), Ok(key));
        }
    }

    #[test]
    fn generated_keys_differ() {
        let keys: HashSet<_> = (0..1000).map(|_| IdempotencyKey::generate()).collect();
        assert_eq!(keys.len(), 1000);
    }

    #[test]
    fn a_key_accepts_every_allowed_character_and_64_of_them() {
        assert!(IdempotencyKey::parse("Az09_.:-").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(64)).is_ok());
    }

    #[test]
    fn a_key_refuses_empty_65_characters_and_others() {
        for bad in ["", &"k".repeat(65), "a b", "a/b", "é", "a\n"] {
            assert_eq!(IdempotencyKey::parse(bad), Err(InvalidKey), "{bad:?}");
        }
    }
}
