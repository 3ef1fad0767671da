//! What a token says and what it allows: its claims, the room patterns in
//! them, and the [`Grant`] they amount to once verified.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::message::{Author, RoomName};

/// A token's claims (docs/API.md, "Authentication and authorization").
/// Also what the development command signs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, 1-64 characters: the client, for per-client limits.
    pub sub: String,
    /// Expiry, seconds since the epoch; honoured when present.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numeric_date"
    )]
    pub exp: Option<u64>,
    /// Not before, seconds since the epoch; honoured when present.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numeric_date"
    )]
    pub nbf: Option<u64>,
    /// The display name its messages carry; `sub` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Patterns of rooms the user may read and publish in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Patterns of rooms the user may only read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// One audience, or several (RFC 7519 allows both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// A token's `aud`: a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl From<&str> for Audience {
    fn from(audience: &str) -> Self {
        Audience::One(audience.to_owned())
    }
}

/// A NumericDate (RFC 7519): seconds since the epoch, possibly with a
/// fraction, which is dropped.
fn numeric_date<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    let seconds = Option::<f64>::deserialize(deserializer)?;
    seconds
        .map(|seconds| {
            if seconds.is_finite() && seconds >= 0.0 {
                // Dates fit in u64 seconds for billions of years.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(seconds as u64)
            } else {
                Err(serde::de::Error::custom("a date must be a positive number"))
            }
        })
        .transpose()
}

/// A room pattern: a room name, a prefix ending in `*` (`team-*`), or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomPattern {
    Exact(RoomName),
    /// Every room whose name starts with this (empty: every room).
    Prefix(String),
}

impl RoomPattern {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.strip_suffix('*') {
            Some("") => Some(RoomPattern::Prefix(String::new())),
            // The prefix must be the start of a valid room name.
            Some(prefix) => RoomName::parse(prefix)
                .ok()
                .map(|_| RoomPattern::Prefix(prefix.to_owned())),
            None => RoomName::parse(raw).ok().map(RoomPattern::Exact),
        }
    }

    pub fn matches(&self, room: &RoomName) -> bool {
        match self {
            RoomPattern::Exact(name) => name == room,
            RoomPattern::Prefix(prefix) => room.as_str().starts_with(prefix.as_str()),
        }
    }
}

/// What a verified token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's `sub`.
    pub subject: Arc<str>,
    /// The author of what it publishes: its `name`, or else its `sub`.
    pub author: Author,
    /// Rooms it may read and publish in; `None` (with `read` also `None`):
    /// every room.
    rooms: Option<Vec<RoomPattern>>,
    /// Rooms it may only read.
    read: Option<Vec<RoomPattern>>,
    /// When the token expires, if it does.
    pub expires: Option<SystemTime>,
}

/// Why a token's claims are unusable, though its signature is good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadClaims {
    #[error("the token's sub must be 1-64 characters")]
    Subject,
    #[error("the token's name must be 1-64 characters without control characters")]
    Name,
    #[error("the token's room pattern {0:?} is not a room name, a prefix ending in *, or *")]
    Pattern(String),
}

impl Grant {
    pub fn from_claims(claims: Claims) -> Result<Self, BadClaims> {
        let subject_chars = claims.sub.chars().count();
        if claims.sub.trim().is_empty() || subject_chars > 64 {
            return Err(BadClaims::Subject);
        }
        let author = Author::parse(Some(claims.name.as_deref().unwrap_or(&claims.sub)))
            .map_err(|_| BadClaims::Name)?;
        let patterns = |list: Option<Vec<String>>| -> Result<_, BadClaims> {
            list.map(|list| {
                list.iter()
                    .map(|raw| {
                        RoomPattern::parse(raw).ok_or_else(|| BadClaims::Pattern(raw.clone()))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
        };
        Ok(Grant {
            subject: Arc::from(claims.sub.as_str()),
            author,
            rooms: patterns(claims.rooms)?,
            read: patterns(claims.read)?,
            // An expiry past what this system's clock can hold never comes.
            expires: claims
                .exp
                .and_then(|exp| UNIX_EPOCH.checked_add(Duration::from_secs(exp))),
        })
    }

    fn unrestricted(&self) -> bool {
        self.rooms.is_none() && self.read.is_none()
    }

    fn in_any(patterns: Option<&Vec<RoomPattern>>, room: &RoomName) -> bool {
        patterns.is_some_and(|patterns| patterns.iter().any(|pattern| pattern.matches(room)))
    }

    pub fn may_read(&self, room: &RoomName) -> bool {
        self.unrestricted()
            || Self::in_any(self.rooms.as_ref(), room)
            || Self::in_any(self.read.as_ref(), room)
    }

    pub fn may_publish(&self, room: &RoomName) -> bool {
        self.unrestricted() || Self::in_any(self.rooms.as_ref(), room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).expect("a room")
    }

    fn grant(rooms: Option<&[&str]>, read: Option<&[&str]>) -> Grant {
        let list = |patterns: Option<&[&str]>| {
            patterns.map(|patterns| patterns.iter().map(|p| (*p).to_owned()).collect())
        };
        Grant::from_claims(Claims {
            sub: "alice".into(),
            rooms: list(rooms),
            read: list(read),
            ..Claims::default()
        })
        .expect("valid claims")
    }

    #[test]
    fn an_expiry_beyond_the_clock_never_comes() {
        let grant = Grant::from_claims(Claims {
            sub: "alice".into(),
            exp: Some(u64::MAX),
            ..Claims::default()
        })
        .expect("valid claims");
        assert_eq!(grant.expires, None);
    }

    #[test]
    fn an_exact_pattern_matches_only_its_room() {
        let grant = grant(Some(&["general"]), None);
        assert!(grant.may_read(&room("general")) && grant.may_publish(&room("general")));
        assert!(!grant.may_read(&room("general2")));
    }

    #[test]
    fn a_prefix_pattern_matches_rooms_starting_with_it() {
        let grant = grant(Some(&["team-*"]), None);
        assert!(grant.may_publish(&room("team-a")) && grant.may_publish(&room("team-")));
        assert!(!grant.may_read(&room("teams")));
    }

    #[test]
    fn a_star_matches_every_room() {
        let grant = grant(Some(&["*"]), None);
        assert!(grant.may_publish(&room("anything")));
    }

    #[test]
    fn read_only_rooms_can_be_read_not_published_in() {
        let grant = grant(Some(&["mine"]), Some(&["news", "public-*"]));
        assert!(grant.may_read(&room("news")) && !grant.may_publish(&room("news")));
        assert!(grant.may_read(&room("public-1")) && !grant.may_publish(&room("public-1")));
        assert!(grant.may_publish(&room("mine")));
        assert!(!grant.may_read(&room("other")));
    }

    #[test]
    fn a_token_with_neither_list_may_do_everything() {
        let grant = grant(None, None);
        assert!(grant.may_read(&room("x")) && grant.may_publish(&room("x")));
    }

    #[test]
    fn an_empty_list_allows_nothing() {
        let grant = grant(Some(&[]), None);
        assert!(!grant.may_read(&room("x")));
    }

    #[test]
    fn the_author_is_the_name_or_else_the_subject() {
        let named = Grant::from_claims(Claims {
            sub: "u-17".into(),
            name: Some("Alice".into()),
            ..Claims::default()
        })
        .expect("valid");
        assert_eq!(named.author.as_str(), "Alice");
        assert_eq!(grant(None, None).author.as_str(), "alice");
    }

    #[test]
    fn an_audience_may_be_one_string_or_several_and_dates_may_have_fractions() {
        let claims: Claims = serde_json::from_str(
            r#"{"sub":"a","aud":["chat","other"],"exp":1764000000.5,"nbf":1764000000}"#,
        )
        .expect("valid claims");
        assert_eq!(
            claims.aud,
            Some(Audience::Many(vec!["chat".into(), "other".into()]))
        );
        assert_eq!(
            (claims.exp, claims.nbf),
            (Some(1_764_000_000), Some(1_764_000_000))
        );
        let one: Claims = serde_json::from_str(r#"{"sub":"a","aud":"chat"}"#).expect("valid");
        assert_eq!(one.aud, Some(Audience::One("chat".into())));
    }

    #[test]
    fn unusable_claims_are_refused() {
        let claims = |sub: &str, name: Option<&str>, rooms: &[&str]| Claims {
            sub: sub.into(),
            name: name.map(str::to_owned),
            rooms: Some(rooms.iter().map(|r| (*r).to_owned()).collect()),
            ..Claims::default()
        };
        assert_eq!(
            Grant::from_claims(claims("", None, &[])),
            Err(BadClaims::Subject)
        );
        assert_eq!(
            Grant::from_claims(claims(&"s".repeat(65), None, &[])),
            Err(BadClaims::Subject)
        );
        assert_eq!(
            Grant::from_claims(claims("a", Some("two\nlines"), &[])),
            Err(BadClaims::Name)
        );
        assert_eq!(
            Grant::from_claims(claims("a", None, &["no spaces"])),
            Err(BadClaims::Pattern("no spaces".into()))
        );
        assert_eq!(
            Grant::from_claims(claims("a", None, &["a*b"])),
            Err(BadClaims::Pattern("a*b".into()))
        );
    }
}
