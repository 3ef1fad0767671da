//! Every WebSocket frame, both ways (docs/API.md, "WebSocket"). All frames
//! are JSON text objects with a `type`.
//!
//! Client -> server: [`ClientFrame`] (`publish`, `ping`). Server -> client:
//! [`ServerFrame`] (`message`, `ack`, `error`, `pong`, `gap`). A `ref` is
//! any JSON value the client chose; the server echoes it on the answer to
//! that frame, so a client can match answers to requests.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorCode;
use crate::message::{Gap, Message};

/// A frame from the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientFrame {
    /// Publish a message in the socket's room; answered with an `ack` (or an
    /// `error`) carrying the same `ref`.
    Publish {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        author: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// The idempotency key: the same key in the same room within the
        /// idempotency window stores nothing new and is acked with the
        /// first message's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// Answered with `pong` (browsers cannot send ping frames).
    Ping {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
    },
}

/// A frame from the client that cannot be understood, and why. The server
/// answers it with an `error` frame carrying `reference`; the connection
/// stays open.
#[derive(Debug, Clone, PartialEq)]
pub struct BadFrame {
    pub reference: Option<Value>,
    pub code: ErrorCode,
    pub detail: String,
}

impl ClientFrame {
    /// Parses one text frame. The `ref` is taken first, so even a frame with
    /// other problems is answered with its `ref`.
    pub fn parse(text: &str) -> Result<Self, BadFrame> {
        let bad = |reference: Option<Value>, code, detail: String| BadFrame {
            reference,
            code,
            detail,
        };
        if text.trim().is_empty() {
            return Err(bad(
                None,
                ErrorCode::InvalidJson,
                "empty frame; send a JSON object".into(),
            ));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|err| bad(None, ErrorCode::InvalidJson, err.to_string()))?;
        let Value::Object(object) = value else {
            return Err(bad(
                None,
                ErrorCode::InvalidJson,
                "a frame must be a JSON object".into(),
            ));
        };
        let reference = object.get("ref").cloned();
        match object.get("type").and_then(Value::as_str) {
            Some("publish" | "ping") => serde_json::from_value(Value::Object(object))
                .map_err(|err| bad(reference, ErrorCode::InvalidJson, err.to_string())),
            Some(other) => Err(bad(
                reference,
                ErrorCode::UnknownType,
                format!("unknown frame type {other:?}; send \"publish\" or \"ping\""),
            )),
            None => Err(bad(
                reference,
                ErrorCode::UnknownType,
                "a frame needs a \"type\": \"publish\" or \"ping\"".into(),
            )),
        }
    }
}

/// A frame from the server. `M` is how the message of a `message` frame is
/// held: a [`Message`] for clients; servers write a message serialized once
/// (`&RawValue`), so every connection gets the same bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame<M = Message> {
    Message {
        data: M,
    },
    /// The publish with this `ref` was stored with this `id`; `replayed`
    /// when its idempotency key had been used already and nothing new was
    /// stored.
    Ack {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
        id: u64,
        #[serde(default, skip_serializing_if = "crate::answer::is_false")]
        replayed: bool,
    },
    /// The frame with this `ref` was refused; the connection stays open.
    Error {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
        error: ErrorCode,
        detail: String,
    },
    Pong {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
    },
    /// Ids after `after` and before `resume_from` are gone for good.
    Gap(Gap),
}

impl<M: Serialize> ServerFrame<M> {
    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        // Frames hold strings, integers and JSON values only (and `M`, a
        // message or valid JSON already), which always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl From<BadFrame> for ServerFrame {
    fn from(bad: BadFrame) -> Self {
        ServerFrame::Error {
            reference: bad.reference,
            error: bad.code,
            detail: bad.detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use serde_json::value::RawValue;

    use super::*;

    #[test]
    fn a_publish_frame_carries_its_ref_and_body() {
        let frame =
            ClientFrame::parse(r#"{"type":"publish","ref":"c1","author":"alice","message":"hi"}"#);
        assert_eq!(
            frame,
            Ok(ClientFrame::Publish {
                reference: Some(json!("c1")),
                author: Some("alice".into()),
                message: Some("hi".into()),
                key: None,
            })
        );
    }

    #[test]
    fn ping_is_understood() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping { reference: None })
        );
    }

    #[test]
    fn malformed_json_is_invalid_json() {
        let err = ClientFrame::parse("{nope").expect_err("malformed");
        assert_eq!((err.code, err.reference), (ErrorCode::InvalidJson, None));
    }

    #[test]
    fn empty_and_non_object_frames_are_invalid_json() {
        for text in ["", "   ", "[1]", "\"publish\"", "42"] {
            assert_eq!(
                ClientFrame::parse(text).expect_err(text).code,
                ErrorCode::InvalidJson,
                "{text:?}"
            );
        }
    }

    #[test]
    fn an_unknown_type_keeps_its_ref() {
        let err = ClientFrame::parse(r#"{"type":"subscribe","ref":7}"#).expect_err("unknown");
        assert_eq!(
            (err.code, err.reference),
            (ErrorCode::UnknownType, Some(json!(7)))
        );
        assert_eq!(
            ClientFrame::parse(r#"{"ref":"x"}"#)
                .expect_err("no type")
                .code,
            ErrorCode::UnknownType
        );
    }

    #[test]
    fn a_publish_with_a_wrong_field_type_keeps_its_ref() {
        let err = ClientFrame::parse(r#"{"type":"publish","ref":"c9","message":5}"#)
            .expect_err("bad type");
        assert_eq!(
            (err.code, err.reference),
            (ErrorCode::InvalidJson, Some(json!("c9")))
        );
    }

    #[test]
    fn a_client_writes_the_frames_the_server_reads() {
        let frame = ClientFrame::Publish {
            reference: Some(json!("c1")),
            author: None,
            message: Some("hi".into()),
            key: Some("k-1".into()),
        };
        let text = serde_json::to_string(&frame).expect("serializable");
        assert_eq!(
            text,
            r#"{"type":"publish","ref":"c1","message":"hi","key":"k-1"}"#
        );
        assert_eq!(ClientFrame::parse(&text), Ok(frame));
    }

    #[test]
    fn server_frames_follow_the_contract() {
        let reference = Some(json!("c1"));
        let cases: [(ServerFrame, &str); 5] = [
            (
                ServerFrame::Ack {
                    reference: reference.clone(),
                    id: 42,
                    replayed: false,
                },
                r#"{"type":"ack","ref":"c1","id":42}"#,
            ),
            (
                ServerFrame::Ack {
                    reference: None,
                    id: 1,
                    replayed: true,
                },
                r#"{"type":"ack","id":1,"replayed":true}"#,
            ),
            (ServerFrame::Pong { reference: None }, r#"{"type":"pong"}"#),
            (
                ServerFrame::Error {
                    reference,
                    error: ErrorCode::InvalidMessage,
                    detail: "empty".into(),
                },
                r#"{"type":"error","ref":"c1","error":"invalid_message","detail":"empty"}"#,
            ),
            (
                ServerFrame::Gap(Gap {
                    after: 3,
                    resume_from: 9,
                }),
                r#"{"type":"gap","after":3,"resume_from":9}"#,
            ),
        ];
        for (frame, text) in cases {
            assert_eq!(frame.to_text(), text);
            assert_eq!(
                serde_json::from_str::<ServerFrame>(text).expect("readable"),
                frame
            );
        }
    }

    #[test]
    fn a_message_frame_wraps_the_message_json_unchanged() {
        let stored = r#"{"id":7,"room":"a","author":"x","message":"hi","ts":1,"via":"ws"}"#;
        let raw: &RawValue = serde_json::from_str(stored).expect("valid JSON");
        let text = ServerFrame::Message { data: raw }.to_text();
        assert_eq!(text, format!(r#"{{"type":"message","data":{stored}}}"#));
        let frame: ServerFrame = serde_json::from_str(&text).expect("readable");
        let ServerFrame::Message { data } = frame else {
            panic!("a message frame");
        };
        assert_eq!(data.id, 7);
    }
}
