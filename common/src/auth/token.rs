//! Verifying (and, for development and tests, signing) tokens with the
//! `jsonwebtoken` crate.
//!
//! The algorithm is fixed by the configured key, never taken from the
//! token: `HS256` for a secret, `RS256` or `ES256` (P-256) for a public
//! key, by its type. A token signed any other way is refused, so neither a
//! `none` token nor an `HS256` token signed with an `RS256` service's public
//! key (algorithm confusion) gets in.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use super::claims::{Claims, Grant};

/// How tokens are verified: the configured key and its one algorithm.
#[derive(Clone)]
pub struct TokenKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for TokenKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// `HS256` with a shared secret (`JWT_SECRET`), which must not be
    /// empty.
    pub fn secret(secret: &[u8]) -> Result<Self, String> {
        DecodingKey::from_secret(secret)
            .map(|key| TokenKey {
                algorithm: Algorithm::HS256,
                key,
            })
            .map_err(|_| "a secret that is not empty".to_owned())
    }

    /// `RS256` or `ES256`, from a PEM public key (`JWT_PUBLIC_KEY_FILE`),
    /// by the key's type.
    pub fn public_pem(pem: &[u8]) -> Result<Self, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(TokenKey {
                algorithm: Algorithm::RS256,
                key,
            });
        }
        DecodingKey::from_ec_pem(pem)
            .map(|key| TokenKey {
                algorithm: Algorithm::ES256,
                key,
            })
            .map_err(|_| "a PEM RSA or EC (P-256) public key".to_owned())
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// Verifies tokens: signature, algorithm, `exp` and `nbf` when present,
/// and the configured issuer and audience.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: TokenKey,
    validation: Validation,
}

/// Why a token was refused. The text goes to the client; it never quotes
/// the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was not issued by the expected issuer")]
    Issuer,
    #[error("the token is not meant for this audience")]
    Audience,
    #[error("the token is not signed with the expected algorithm")]
    Algorithm,
    #[error("the token's signature is not valid")]
    Signature,
    #[error("the token is malformed")]
    Malformed,
    #[error("{0}")]
    Claims(String),
}

impl Verifier {
    pub fn new(key: TokenKey, issuer: Option<&str>, audience: Option<&str>) -> Self {
        let mut validation = Validation::new(key.algorithm);
        // `exp` and `nbf` are honoured when present, and only `sub` is
        // required. No leeway: a stream is closed at `exp` exactly, so a
        // token is refused from that moment too.
        validation.set_required_spec_claims(&["sub"]);
        validation.leeway = 0;
        validation.validate_nbf = true;
        match audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        Verifier { key, validation }
    }

    /// The grant of a valid token.
    pub fn verify(&self, token: &str) -> Result<Grant, Refused> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key.key, &self.validation).map_err(
            |err| match err.kind() {
                ErrorKind::ExpiredSignature => Refused::Expired,
                ErrorKind::ImmatureSignature => Refused::NotYetValid,
                ErrorKind::InvalidIssuer => Refused::Issuer,
                ErrorKind::InvalidAudience => Refused::Audience,
                ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => Refused::Issuer,
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => Refused::Audience,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Refused::Algorithm,
                ErrorKind::InvalidSignature => Refused::Signature,
                _ => Refused::Malformed,
            },
        )?;
        let grant =
            Grant::from_claims(data.claims).map_err(|bad| Refused::Claims(bad.to_string()))?;
        // `exp` is in whole seconds and the check above compares whole
        // seconds: a token could pass it for up to a second after the
        // moment a connection holding it is ended. Refuse from that moment.
        if grant
            .expires
            .is_some_and(|expires| expires <= SystemTime::now())
        {
            return Err(Refused::Expired);
        }
        Ok(grant)
    }
}

/// Signs `claims` with `key` (a secret for `HS256`, a PEM private key for
/// `RS256` / `ES256`): what the development command and the tests do.
pub fn sign(claims: &Claims, algorithm: Algorithm, key: &[u8]) -> Result<String, String> {
    let key = match algorithm {
        Algorithm::HS256 => EncodingKey::from_secret(key).map_err(|err| err.to_string())?,
        Algorithm::RS256 => EncodingKey::from_rsa_pem(key).map_err(|err| err.to_string())?,
        Algorithm::ES256 => EncodingKey::from_ec_pem(key).map_err(|err| err.to_string())?,
        other => return Err(format!("{other:?} is not used here")),
    };
    jsonwebtoken::encode(&Header::new(algorithm), claims, &key).map_err(|err| err.to_string())
}

/// Seconds since the epoch, for `exp` and `nbf`.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a test secret that is long enough";

    fn claims() -> Claims {
        Claims {
            sub: "alice".into(),
            exp: Some(now_secs() + 60),
            ..Claims::default()
        }
    }

    fn verifier() -> Verifier {
        Verifier::new(TokenKey::secret(SECRET).expect("a key"), None, None)
    }

    #[test]
    fn a_good_token_grants_its_claims() {
        let token = sign(&claims(), Algorithm::HS256, SECRET).expect("signed");
        assert_eq!(&*verifier().verify(&token).expect("valid").subject, "alice");
    }

    #[test]
    fn exp_and_nbf_are_optional_but_honoured() {
        let forever = Claims {
            exp: None,
            ..claims()
        };
        let token = sign(&forever, Algorithm::HS256, SECRET).expect("signed");
        assert!(verifier().verify(&token).is_ok());
        let expired = Claims {
            exp: Some(now_secs() - 1),
            ..claims()
        };
        let token = sign(&expired, Algorithm::HS256, SECRET).expect("signed");
        assert_eq!(verifier().verify(&token), Err(Refused::Expired));
        let early = Claims {
            nbf: Some(now_secs() + 30),
            ..claims()
        };
        let token = sign(&early, Algorithm::HS256, SECRET).expect("signed");
        assert_eq!(verifier().verify(&token), Err(Refused::NotYetValid));
    }

    #[test]
    fn a_wrong_signature_or_a_malformed_token_is_refused() {
        let token = sign(&claims(), Algorithm::HS256, b"another secret").expect("signed");
        assert_eq!(verifier().verify(&token), Err(Refused::Signature));
        assert_eq!(verifier().verify("not.a.token"), Err(Refused::Malformed));
        assert_eq!(verifier().verify(""), Err(Refused::Malformed));
    }

    #[test]
    fn the_none_algorithm_is_refused() {
        let header = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
        let body = base64_url(r#"{"sub":"mallory"}"#);
        let token = format!("{header}.{body}.");
        assert!(verifier().verify(&token).is_err());
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let key = TokenKey::secret(SECRET).expect("a key");
        let verifier = Verifier::new(key, Some("me"), Some("chat"));
        let token = |iss: Option<&str>, aud: Option<&str>| {
            let claims = Claims {
                iss: iss.map(str::to_owned),
                aud: aud.map(Into::into),
                ..claims()
            };
            sign(&claims, Algorithm::HS256, SECRET).expect("signed")
        };
        assert!(verifier.verify(&token(Some("me"), Some("chat"))).is_ok());
        assert_eq!(
            verifier.verify(&token(Some("you"), Some("chat"))),
            Err(Refused::Issuer)
        );
        assert_eq!(
            verifier.verify(&token(None, Some("chat"))),
            Err(Refused::Issuer)
        );
        assert_eq!(
            verifier.verify(&token(Some("me"), Some("other"))),
            Err(Refused::Audience)
        );
    }

    /// Base64url without padding, as JWT segments are.
    fn base64_url(text: &str) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }
}
