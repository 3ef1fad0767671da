//! Authentication and authorization (docs/API.md, "Authentication and
//! authorization"): a thin layer in front of every room route.
//!
//! Off unless a key is configured (`JWT_SECRET` or `JWT_PUBLIC_KEY_FILE`):
//! then every room route needs a token (`Authorization: Bearer`, or
//! `?token=` for browsers' `EventSource` and `WebSocket`), verified once per
//! request or connection ([`token`]), whose claims say which rooms it may
//! read and publish in ([`claims`]). The [`Caller`] extractor does this and
//! derives the client the per-client budgets apply to: the token's subject,
//! else the address. A backend may publish with `X-Api-Key` instead.

mod caller;
pub mod claims;
pub mod token;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use self::caller::{Access, Caller};
pub use self::claims::{Audience, Claims, Grant, RoomPattern};
pub use self::token::{Refused, TokenKey, Verifier};

/// The shared key backends publish with (`PUBLISH_API_KEY`), kept as its
/// SHA-256 digest.
#[derive(Clone)]
pub struct ApiKey([u8; 32]);

impl std::fmt::Debug for ApiKey {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

impl ApiKey {
    pub fn new(key: &str) -> Self {
        ApiKey(Sha256::digest(key.as_bytes()).into())
    }

    /// Compares digests in constant time, so the time an answer takes tells
    /// nothing about how much of a guess was right, nor how long the key is.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        self.0.ct_eq(&presented).into()
    }
}

/// The auth settings: verification on when a key is configured.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// `None`: auth is off, anyone may read and publish.
    pub verifier: Option<Verifier>,
    pub api_key: Option<ApiKey>,
}

impl AuthSettings {
    pub fn is_on(&self) -> bool {
        self.verifier.is_some()
    }
}
