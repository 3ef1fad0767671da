//! The frames ws-svc writes, encoded once and as bytes ready for the
//! socket (RFC 6455: a server's frames are not masked, so the same bytes
//! serve every connection).
//!
//! A message frame (`{"type":"message","data":<Message>}`, header
//! included) is built once per message when it enters the hub and shared
//! by every connection: delivering it is writing it. Replies, gaps, pings
//! and close frames are built per connection, when they happen.

use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use bytes::{Bytes, BytesMut};
use common::hub::Framed;
use serde::Serialize;
use serde_json::value::RawValue;
use wire::close::Goodbye;
use wire::ws::ServerFrame;

/// The hub's framer for ws-svc: a whole text frame around the message.
pub fn message(_: u64, json: &RawValue) -> Framed {
    let text = ServerFrame::Message { data: json }.to_text();
    let frame = text_frame(&text);
    // The message is the frame's last member: only the closing brace
    // follows it.
    let json_at = frame.len() - json.get().len() - 1;
    Framed {
        frame: frame.to_vec(),
        json_at,
    }
}

/// A server frame (an ack, an error, a pong, a gap) as a text frame.
pub fn reply<M: Serialize>(frame: &ServerFrame<M>) -> Bytes {
    text_frame(&frame.to_text())
}

fn text_frame(text: &str) -> Bytes {
    let mut frame = BytesMut::with_capacity(text.len() + 10);
    Parser::write_message(&mut frame, text, OpCode::Text, true, false);
    frame.freeze()
}

/// A ping with no payload.
pub fn ping() -> Bytes {
    let mut frame = BytesMut::with_capacity(2);
    Parser::write_message(&mut frame, [], OpCode::Ping, true, false);
    frame.freeze()
}

/// A pong echoing the client's ping payload.
pub fn pong(payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 2);
    Parser::write_message(&mut frame, payload, OpCode::Pong, true, false);
    frame.freeze()
}

/// A close frame saying why (or echoing the client's reason).
pub fn close(reason: Option<CloseReason>) -> Bytes {
    let mut frame = BytesMut::with_capacity(128);
    Parser::write_close(&mut frame, reason, false);
    frame.freeze()
}

/// The close reason of a goodbye.
pub fn goodbye(goodbye: Goodbye) -> Option<CloseReason> {
    Some(CloseReason {
        code: CloseCode::from(goodbye.code),
        description: Some(goodbye.reason.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use actix_http::ws::{Codec, Frame};
    use common::hub::Entry;
    use common::{Message, RoomName, Via};
    use tokio_util::codec::Decoder;

    use super::*;

    /// What a client reads from `bytes`: one frame, decoded by actix's own
    /// codec (client side).
    fn decode(bytes: &[u8]) -> Frame {
        let mut buffer = BytesMut::from(bytes);
        let frame = Codec::new()
            .client_mode()
            .decode(&mut buffer)
            .expect("a valid frame")
            .expect("a whole frame");
        assert!(buffer.is_empty(), "exactly one frame");
        frame
    }

    #[test]
    fn a_message_frame_is_a_whole_text_frame_around_the_message_json() {
        let message = Message {
            id: 7,
            room: RoomName::parse("general").expect("valid room"),
            author: "alice".into(),
            message: "}\"{".repeat(100),
            ts: 1,
            via: Via::Ws,
        };
        let entry = Entry::new(&message, super::message);
        let Frame::Text(text) = decode(entry.frame()) else {
            panic!("a text frame");
        };
        let json = entry.json().get();
        assert_eq!(
            std::str::from_utf8(&text).expect("UTF-8"),
            format!(r#"{{"type":"message","data":{json}}}"#)
        );
        let parsed: Message = serde_json::from_str(json).expect("the JSON is the message");
        assert_eq!(parsed, message);
    }

    #[test]
    fn control_frames_are_what_a_client_expects() {
        assert!(matches!(decode(&ping()), Frame::Ping(payload) if payload.is_empty()));
        assert!(matches!(decode(&pong(b"hi")), Frame::Pong(payload) if &payload[..] == b"hi"));
        let Frame::Close(Some(reason)) = decode(&close(goodbye(wire::close::RESTART))) else {
            panic!("a close frame with a reason");
        };
        assert_eq!(u16::from(reason.code), 1012);
    }

    #[test]
    fn a_reply_is_a_text_frame() {
        let frame = reply(&ServerFrame::<()>::Pong { reference: None });
        assert!(matches!(decode(&frame), Frame::Text(text) if &text[..] == br#"{"type":"pong"}"#));
    }
}
