//! The JSON frames of the WebSocket API, in both directions.
//!
//! Client -> server: `publish` (with an optional `ref`, echoed back) and
//! `ping`. Server -> client: `message`, `ack`, `error`, `pong`, `gap`.
//! A frame the client got wrong is answered with an `error` frame carrying
//! its `ref`; the connection stays open.

use bytestring::ByteString;
use common::Message;
use common::hub::{Framing, Gap};
use common::message::PublishBody;
use serde::Serialize;
use serde_json::Value;

/// A frame from the client, understood.
#[derive(Debug)]
pub enum Request {
    Publish {
        reference: Option<Value>,
        body: PublishBody,
    },
    Ping {
        reference: Option<Value>,
    },
}

/// A frame from the client that cannot be understood, and why.
#[derive(Debug, PartialEq)]
pub struct BadFrame {
    pub reference: Option<Value>,
    pub code: &'static str,
    pub detail: String,
}

/// Parses one text frame. The `ref` is taken first, so even a frame with
/// other problems gets its error answered with its `ref`.
pub fn parse(text: &str) -> Result<Request, BadFrame> {
    let bad = |reference: Option<Value>, code, detail: String| BadFrame {
        reference,
        code,
        detail,
    };
    if text.trim().is_empty() {
        return Err(bad(
            None,
            "invalid_json",
            "empty frame; send a JSON object".into(),
        ));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|err| bad(None, "invalid_json", err.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(bad(
            None,
            "invalid_json",
            "a frame must be a JSON object".into(),
        ));
    };
    let reference = object.remove("ref");
    match object.get("type").and_then(Value::as_str) {
        Some("publish") => match serde_json::from_value(Value::Object(object)) {
            Ok(body) => Ok(Request::Publish { reference, body }),
            Err(err) => Err(bad(reference, "invalid_json", err.to_string())),
        },
        Some("ping") => Ok(Request::Ping { reference }),
        Some(other) => Err(bad(
            reference,
            "unknown_type",
            format!("unknown frame type {other:?}; send \"publish\" or \"ping\""),
        )),
        None => Err(bad(
            reference,
            "unknown_type",
            "a frame needs a \"type\": \"publish\" or \"ping\"".into(),
        )),
    }
}

/// What the server sends besides messages (those are framed once per
/// message by [`message_frame`]).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Reply<'a> {
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
        id: u64,
    },
    Error {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
        error: &'a str,
        detail: &'a str,
    },
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
    },
    Gap {
        after: u64,
        resume_from: u64,
    },
}

impl Reply<'_> {
    pub fn to_text(&self) -> ByteString {
        // Strings, numbers and JSON values only: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default().into()
    }
}

impl From<Gap> for Reply<'_> {
    fn from(gap: Gap) -> Self {
        Reply::Gap {
            after: gap.after,
            resume_from: gap.resume_from,
        }
    }
}

/// `{"type":"message","data":<Message>}`, built once per message when it
/// enters the hub and shared by every connection.
pub fn message_frame(_: &Message) -> Framing {
    Framing {
        prefix: r#"{"type":"message","data":"#.to_owned(),
        suffix: "}",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_publish_frame_carries_its_ref_and_body() {
        let Ok(Request::Publish { reference, body }) =
            parse(r#"{"type":"publish","ref":"c1","author":"alice","message":"hi"}"#)
        else {
            panic!("a publish frame");
        };
        assert_eq!(reference, Some(json!("c1")));
        assert_eq!(body.author.as_deref(), Some("alice"));
        assert_eq!(body.message.as_deref(), Some("hi"));
    }

    #[test]
    fn ping_is_understood() {
        assert!(matches!(
            parse(r#"{"type":"ping"}"#),
            Ok(Request::Ping { reference: None })
        ));
    }

    #[test]
    fn malformed_json_is_invalid_json() {
        let err = parse("{nope").expect_err("malformed");
        assert_eq!((err.code, err.reference), ("invalid_json", None));
    }

    #[test]
    fn empty_and_non_object_frames_are_invalid_json() {
        for text in ["", "   ", "[1]", "\"publish\"", "42"] {
            assert_eq!(
                parse(text).expect_err(text).code,
                "invalid_json",
                "{text:?}"
            );
        }
    }

    #[test]
    fn an_unknown_type_keeps_its_ref() {
        let err = parse(r#"{"type":"subscribe","ref":7}"#).expect_err("unknown");
        assert_eq!((err.code, err.reference), ("unknown_type", Some(json!(7))));
        assert_eq!(
            parse(r#"{"ref":"x"}"#).expect_err("no type").code,
            "unknown_type"
        );
    }

    #[test]
    fn a_publish_with_a_wrong_field_type_keeps_its_ref() {
        let err = parse(r#"{"type":"publish","ref":"c9","message":5}"#).expect_err("bad type");
        assert_eq!(
            (err.code, err.reference),
            ("invalid_json", Some(json!("c9")))
        );
    }

    #[test]
    fn replies_follow_the_contract() {
        let reference = json!("c1");
        assert_eq!(
            &*Reply::Ack {
                reference: Some(&reference),
                id: 42
            }
            .to_text(),
            r#"{"type":"ack","ref":"c1","id":42}"#
        );
        assert_eq!(
            &*Reply::Ack {
                reference: None,
                id: 1
            }
            .to_text(),
            r#"{"type":"ack","id":1}"#
        );
        assert_eq!(
            &*Reply::Pong { reference: None }.to_text(),
            r#"{"type":"pong"}"#
        );
        assert_eq!(
            &*Reply::Error {
                reference: Some(&reference),
                error: "invalid_message",
                detail: "empty"
            }
            .to_text(),
            r#"{"type":"error","ref":"c1","error":"invalid_message","detail":"empty"}"#
        );
        assert_eq!(
            &*Reply::from(Gap {
                after: 3,
                resume_from: 9
            })
            .to_text(),
            r#"{"type":"gap","after":3,"resume_from":9}"#
        );
    }
}
