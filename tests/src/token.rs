//! Tokens for the auth tests: claims built up one call at a time, signed
//! with the tests' secret or the key pairs in `tests/fixtures/jwt`.

use std::path::PathBuf;

use common::auth::Claims;
use common::auth::token::{now_secs, sign};
pub use jsonwebtoken::Algorithm;

/// The HS256 secret services under test are configured with.
pub const SECRET: &str = "the tests' shared secret, long enough for HS256";

/// A file of `tests/fixtures/jwt` (`rsa-public.pem`, `ec-private.pem`...).
pub fn key_file(name: &str) -> PathBuf {
    crate::gateway::repository()
        .join("tests/fixtures/jwt")
        .join(name)
}

fn key(name: &str) -> Vec<u8> {
    std::fs::read(key_file(name)).expect("a fixture key")
}

/// A token to be: `Token::for_user("alice").rooms(&["general"]).hs256()`.
#[derive(Debug, Clone)]
pub struct Token(Claims);

impl Token {
    /// Valid for a minute, every room.
    pub fn for_user(sub: &str) -> Self {
        Token(Claims {
            sub: sub.to_owned(),
            exp: Some(now_secs() + 60),
            ..Claims::default()
        })
    }

    pub fn name(mut self, name: &str) -> Self {
        self.0.name = Some(name.to_owned());
        self
    }

    pub fn rooms(mut self, patterns: &[&str]) -> Self {
        self.0.rooms = Some(patterns.iter().map(|p| (*p).to_owned()).collect());
        self
    }

    pub fn read(mut self, patterns: &[&str]) -> Self {
        self.0.read = Some(patterns.iter().map(|p| (*p).to_owned()).collect());
        self
    }

    /// Expires `secs` from now (negative: already expired).
    pub fn expires_in(mut self, secs: i64) -> Self {
        self.0.exp = Some(now_secs().saturating_add_signed(secs));
        self
    }

    /// Valid only `secs` from now.
    pub fn not_before(mut self, secs: u64) -> Self {
        self.0.nbf = Some(now_secs() + secs);
        self
    }

    pub fn issuer(mut self, iss: &str) -> Self {
        self.0.iss = Some(iss.to_owned());
        self
    }

    pub fn audience(mut self, aud: &str) -> Self {
        self.0.aud = Some(aud.into());
        self
    }

    /// Signed HS256 with [`SECRET`].
    pub fn hs256(&self) -> String {
        self.signed(Algorithm::HS256, SECRET.as_bytes())
    }

    /// Signed RS256 with the fixture RSA key.
    pub fn rs256(&self) -> String {
        self.signed(Algorithm::RS256, &key("rsa-private.pem"))
    }

    /// Signed ES256 with the fixture EC key.
    pub fn es256(&self) -> String {
        self.signed(Algorithm::ES256, &key("ec-private.pem"))
    }

    /// HS256 with the RSA *public* key as the secret: the algorithm
    /// confusion attack on an RS256 service.
    pub fn hs256_with_the_public_key(&self) -> String {
        self.signed(Algorithm::HS256, &key("rsa-public.pem"))
    }

    pub fn signed(&self, algorithm: Algorithm, key: &[u8]) -> String {
        sign(&self.0, algorithm, key).expect("the token signs")
    }

    /// Unsigned, `"alg": "none"`.
    pub fn unsigned(&self) -> String {
        let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = base64_url(&serde_json::to_vec(&self.0).expect("claims serialize"));
        format!("{header}.{claims}.")
    }
}

/// Base64url without padding, as JWT segments are.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}
