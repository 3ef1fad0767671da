//! The message model and the validation of everything a client may send.
//!
//! Inputs are parsed at the edge into newtypes ([`RoomName`], [`Author`],
//! [`MessageText`]) so that code further in never sees an unchecked value.
//! The rules are the public contract's (docs/API.md, "Message"); each has a
//! unit test below.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// Why a client-supplied value was refused. Each variant maps to one error
/// code of the public API ([`ValidationError::code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationError {
    Room,
    Author,
    MessageMissing,
    MessageEmpty,
    MessageTooLong {
        max: usize,
    },
    /// A control character other than newline, carriage return or tab.
    MessageControl,
    /// An `Idempotency-Key` (or WebSocket `key`) of the wrong shape.
    IdempotencyKey,
    /// Not one of the services' names (only read from storage, never from
    /// clients).
    Via,
}

impl ValidationError {
    /// The error code a client sees for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            ValidationError::Room => ErrorCode::InvalidRoom,
            ValidationError::Author => ErrorCode::InvalidAuthor,
            ValidationError::MessageMissing
            | ValidationError::MessageEmpty
            | ValidationError::MessageTooLong { .. }
            | ValidationError::MessageControl => ErrorCode::InvalidMessage,
            ValidationError::IdempotencyKey => ErrorCode::InvalidIdempotencyKey,
            ValidationError::Via => ErrorCode::InvalidJson,
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValidationError::Room => {
                f.write_str("room name must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
            }
            ValidationError::Author => f.write_str(
                "author must be 1-64 characters after trimming, without control characters",
            ),
            ValidationError::MessageMissing => f.write_str("message is required"),
            ValidationError::MessageEmpty => {
                f.write_str("message must not be empty or only whitespace")
            }
            ValidationError::MessageTooLong { max } => {
                write!(f, "message is longer than {max} characters")
            }
            ValidationError::MessageControl => f.write_str(
                "message must not contain control characters other than newline, carriage \
                 return and tab",
            ),
            ValidationError::IdempotencyKey => f.write_str(
                "an idempotency key must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':' or '-'",
            ),
            ValidationError::Via => f.write_str("via must be longpoll, sse or ws"),
        }
    }
}

impl std::error::Error for ValidationError {}

/// A room name: 1-64 characters of `[A-Za-z0-9_-]`.
///
/// Cheap to clone (an `Arc<str>`): the hub keys its rooms by it and every
/// message carries one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomName(Arc<str>);

impl RoomName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !raw.chars().all(valid_char) {
            return Err(ValidationError::Room);
        }
        Ok(Self(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RoomName {
    type Error = ValidationError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<RoomName> for String {
    fn from(room: RoomName) -> Self {
        room.0.to_string()
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The author of a message: 1-64 characters after trimming, no control
/// characters (a name is shown on one line); `"anonymous"` when not given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author(String);

impl Author {
    pub const MAX_CHARS: usize = 64;
    pub const ANONYMOUS: &'static str = "anonymous";

    /// `None` (the field absent or `null`) means anonymous; a given but blank
    /// name is an error, since the client clearly meant to send one.
    pub fn parse(raw: Option<&str>) -> Result<Self, ValidationError> {
        let Some(raw) = raw else {
            return Ok(Self(Self::ANONYMOUS.to_owned()));
        };
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS || trimmed.chars().any(char::is_control) {
            return Err(ValidationError::Author);
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The text of a message: 1..=`max_chars` characters (Unicode scalar values),
/// not blank, without control characters (Unicode category Cc) other than
/// `\n`, `\r` and `\t`: those are invisible and each costs six bytes of
/// JSON escape in every copy. Kept exactly as sent (leading spaces and
/// newlines matter in a chat, e.g. for pasted code); only the emptiness
/// check trims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    pub fn parse(raw: Option<String>, max_chars: usize) -> Result<Self, ValidationError> {
        let raw = raw.ok_or(ValidationError::MessageMissing)?;
        if raw.trim().is_empty() {
            return Err(ValidationError::MessageEmpty);
        }
        // Counting chars is O(n); the byte length bounds it from below, so the
        // common short message skips the count.
        if raw.len() > max_chars && raw.chars().count() > max_chars {
            return Err(ValidationError::MessageTooLong { max: max_chars });
        }
        let allowed_control = |c: char| matches!(c, '\n' | '\r' | '\t');
        if raw.chars().any(|c| c.is_control() && !allowed_control(c)) {
            return Err(ValidationError::MessageControl);
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An idempotency key: 1-64 characters of `[A-Za-z0-9_.:-]`. The same key
/// in the same room within the idempotency window publishes once; later
/// uses answer with the message stored the first time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || "_.:-".contains(c);
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !raw.chars().all(valid_char) {
            return Err(ValidationError::IdempotencyKey);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The service that accepted a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    #[serde(rename = "longpoll")]
    LongPoll,
    Sse,
    Ws,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::LongPoll => "longpoll",
            Via::Sse => "sse",
            Via::Ws => "ws",
        }
    }
}

impl std::str::FromStr for Via {
    type Err = ValidationError;

    /// `"longpoll"`, `"sse"` or `"ws"`; anything else is not a service.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "longpoll" => Ok(Via::LongPoll),
            "sse" => Ok(Via::Sse),
            "ws" => Ok(Via::Ws),
            _ => Err(ValidationError::Via),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored message, exactly as every transport shows it (API.md, "Message").
/// Field order is the wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Gap-free per room, assigned by the broker; the resume cursor.
    pub id: u64,
    pub room: RoomName,
    pub author: String,
    pub message: String,
    /// Server time of acceptance, milliseconds since the Unix epoch.
    pub ts: u64,
    pub via: Via,
}

/// The body of `POST /rooms/{room}/messages` (and of the seed's
/// `POST /new-messages`, whose extra `id` field is ignored like any unknown
/// field). Must be a JSON object: serde would otherwise also take an array
/// of the fields in order, which no client means.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PublishBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl<'de> Deserialize<'de> for PublishBody {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Fields {
            #[serde(default)]
            author: Option<String>,
            #[serde(default)]
            message: Option<String>,
        }

        struct ObjectOnly;

        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = Fields;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Fields, A::Error> {
                Fields::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        let Fields { author, message } = deserializer.deserialize_map(ObjectOnly)?;
        Ok(PublishBody { author, message })
    }
}

impl PublishBody {
    /// The author and text, validated; the text may be at most `max_chars`
    /// characters long. The text is checked first: a publish without a
    /// message is the more telling mistake.
    pub fn validate(self, max_chars: usize) -> Result<(Author, MessageText), ValidationError> {
        let text = MessageText::parse(self.message, max_chars)?;
        let author = Author::parse(self.author.as_deref())?;
        Ok((author, text))
    }
}

/// A resume cursor older than anything still held, or ahead of the room's
/// sequence: the ids in between will never be delivered. Every transport
/// announces it before what follows (docs/API.md, "Gaps").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The cursor the client asked to resume after.
    pub after: u64,
    /// The first id that will be delivered.
    pub resume_from: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_accepts_every_allowed_character() {
        let name = "Az09_-";
        assert_eq!(
            RoomName::parse(name).map(|r| r.to_string()),
            Ok(name.to_owned())
        );
    }

    #[test]
    fn room_accepts_1_and_64_characters() {
        assert!(RoomName::parse("a").is_ok());
        assert!(RoomName::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn room_rejects_empty_and_65_characters() {
        assert_eq!(RoomName::parse(""), Err(ValidationError::Room));
        assert_eq!(RoomName::parse(&"a".repeat(65)), Err(ValidationError::Room));
    }

    #[test]
    fn room_rejects_other_characters() {
        for bad in ["a b", "a.b", "a/b", "é", "a%20", "a\n", "🙂"] {
            assert_eq!(RoomName::parse(bad), Err(ValidationError::Room), "{bad:?}");
        }
    }

    #[test]
    fn author_defaults_to_anonymous_when_absent() {
        assert_eq!(
            Author::parse(None).map(|a| a.as_str().to_owned()),
            Ok("anonymous".into())
        );
    }

    #[test]
    fn author_is_trimmed_and_counts_characters_not_bytes() {
        let author = Author::parse(Some("  ünïcødé  ")).expect("valid author");
        assert_eq!(author.as_str(), "ünïcødé");
        assert!(Author::parse(Some(&"é".repeat(64))).is_ok());
    }

    #[test]
    fn author_rejects_blank_and_65_characters() {
        assert_eq!(Author::parse(Some("")), Err(ValidationError::Author));
        assert_eq!(Author::parse(Some(" \t ")), Err(ValidationError::Author));
        assert_eq!(
            Author::parse(Some(&"é".repeat(65))),
            Err(ValidationError::Author)
        );
    }

    #[test]
    fn author_length_is_measured_after_trimming() {
        let padded = format!("   {}   ", "a".repeat(64));
        assert!(Author::parse(Some(&padded)).is_ok());
    }

    #[test]
    fn author_rejects_control_characters() {
        assert_eq!(Author::parse(Some("al\nice")), Err(ValidationError::Author));
    }

    #[test]
    fn message_is_required() {
        assert_eq!(
            MessageText::parse(None, 10),
            Err(ValidationError::MessageMissing)
        );
    }

    #[test]
    fn message_rejects_empty_and_whitespace_only() {
        assert_eq!(
            MessageText::parse(Some(String::new()), 10),
            Err(ValidationError::MessageEmpty)
        );
        assert_eq!(
            MessageText::parse(Some(" \n\t ".into()), 10),
            Err(ValidationError::MessageEmpty)
        );
    }

    #[test]
    fn message_accepts_1_and_max_characters_counting_characters_not_bytes() {
        assert!(MessageText::parse(Some("x".into()), 4).is_ok());
        assert!(MessageText::parse(Some("🙂🙂🙂🙂".into()), 4).is_ok());
    }

    #[test]
    fn message_rejects_max_plus_one_characters() {
        assert_eq!(
            MessageText::parse(Some("🙂🙂🙂🙂🙂".into()), 4),
            Err(ValidationError::MessageTooLong { max: 4 })
        );
    }

    #[test]
    fn message_accepts_newlines_carriage_returns_and_tabs() {
        assert!(MessageText::parse(Some("a\r\nb\tc".into()), 100).is_ok());
    }

    #[test]
    fn message_rejects_other_control_characters() {
        for bad in ["a\u{0}b", "\u{7}", "x\u{1b}[31m", "\u{7f}", "a\u{85}b"] {
            assert_eq!(
                MessageText::parse(Some(bad.into()), 100),
                Err(ValidationError::MessageControl),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn idempotency_keys_are_1_to_64_safe_characters() {
        assert!(IdempotencyKey::parse("k-17:retry.2_x").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(64)).is_ok());
        for bad in ["", "has space", "é", "a/b", &"k".repeat(65)] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(ValidationError::IdempotencyKey),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn message_is_kept_exactly_as_sent() {
        let text = "  line one\nline two  ";
        let parsed = MessageText::parse(Some(text.into()), 100).expect("valid text");
        assert_eq!(parsed.as_str(), text);
    }

    #[test]
    fn publish_body_ignores_unknown_fields_like_the_seed_id() {
        let body: PublishBody =
            serde_json::from_str(r#"{"message":"hi","id":1764000000000}"#).expect("valid body");
        let (author, text) = body.validate(4096).expect("valid body");
        assert_eq!(author.as_str(), "anonymous");
        assert_eq!(text.as_str(), "hi");
    }

    #[test]
    fn a_publish_body_without_a_message_is_refused_before_its_author() {
        let body = PublishBody {
            author: Some(" ".into()),
            message: None,
        };
        assert_eq!(body.validate(10), Err(ValidationError::MessageMissing));
    }

    #[test]
    fn publish_body_must_be_an_object() {
        assert!(serde_json::from_str::<PublishBody>(r#"["alice", "hi"]"#).is_err());
        assert!(serde_json::from_str::<PublishBody>(r#""hi""#).is_err());
        assert!(serde_json::from_str::<PublishBody>("{}").is_ok());
    }

    #[test]
    fn message_serializes_in_wire_order_with_lowercase_via() {
        let message = Message {
            id: 42,
            room: RoomName::parse("general").expect("valid room"),
            author: "alice".into(),
            message: "hello".into(),
            ts: 1_764_000_000_000,
            via: Via::LongPoll,
        };
        let json = serde_json::to_string(&message).expect("serializable");
        assert_eq!(
            json,
            r#"{"id":42,"room":"general","author":"alice","message":"hello","ts":1764000000000,"via":"longpoll"}"#
        );
        assert_eq!(serde_json::from_str::<Message>(&json).ok(), Some(message));
    }
}
