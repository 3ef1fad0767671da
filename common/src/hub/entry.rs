//! What the hub hands out: messages ready for clients ([`Entry`]), pages
//! of them after a cursor ([`Page`]), and the client sockets it may cut.
//!
//! These are the hub's vocabulary; every other hub module builds on them.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
pub use wire::Gap;

use crate::message::Message;

/// A message as one transport writes it: the whole frame (bytes, not
/// necessarily text: a WebSocket frame starts with its binary header), and
/// where the message's JSON sits in it (the frame wraps the JSON, it never
/// rewrites it, so the JSON can be served from the same buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framed {
    pub frame: Vec<u8>,
    /// Byte offset of the message JSON within `frame`.
    pub json_at: usize,
}

/// Frames a message (its id and its JSON, serialized once) for this
/// instance's transport.
pub type Framer = fn(id: u64, json: &RawValue) -> Framed;

/// A message ready for clients: serialized once and framed once, in one
/// buffer (the JSON is a slice of the frame), shared by every recipient.
#[derive(Debug)]
pub struct Entry {
    id: u64,
    /// The message's acceptance time, ms since the epoch.
    ts: u64,
    /// The message as this instance's transport writes it.
    frame: Bytes,
    /// The message as JSON (the API's `Message` object), within `frame`.
    json: Bytes,
}

impl Entry {
    pub fn new(message: &Message, framer: Framer) -> Arc<Self> {
        // A Message is strings and integers only, which always serialize.
        let json = serde_json::value::to_raw_value(message).expect("a Message serializes");
        let Framed { frame, json_at } = framer(message.id, &json);
        let frame = Bytes::from(frame);
        let json_range = json_at..json_at + json.get().len();
        debug_assert_eq!(frame.get(json_range.clone()), Some(json.get().as_bytes()));
        let json = frame.slice(json_range);
        Arc::new(Entry {
            id: message.id,
            ts: message.ts,
            frame,
            json,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// When the message was accepted, ms since the epoch.
    pub fn ts(&self) -> u64 {
        self.ts
    }

    /// The message framed for this instance's transport, ready to write.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The message as JSON, for answers that carry messages (polls,
    /// history) and are serialized around it.
    pub fn json(&self) -> &RawValue {
        // The JSON was produced by serde_json, so it is valid; reading it
        // back only scans it (no allocation, no copy).
        serde_json::from_slice(&self.json).expect("an entry holds valid JSON")
    }

    /// Bytes this entry holds, for the hub's memory accounting.
    pub fn size(&self) -> usize {
        self.frame.len()
    }
}

/// Messages after a cursor, oldest first, and whether some were lost.
#[derive(Debug, Default)]
pub struct Page {
    pub entries: Vec<Arc<Entry>>,
    pub gap: Option<Gap>,
}

impl Page {
    /// The cursor to continue from after this page.
    pub fn cursor(&self, after: u64) -> u64 {
        match (self.entries.last(), self.gap) {
            (Some(last), _) => last.id(),
            (None, Some(gap)) => gap.resume_from - 1,
            (None, None) => after,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.gap.is_none()
    }

    /// The messages as JSON, to serialize an answer around them.
    pub fn json(&self) -> Vec<&RawValue> {
        self.entries.iter().map(|entry| entry.json()).collect()
    }
}

/// A streaming client's socket, as far as the hub needs it: to tell whether
/// the client still takes data, and to cut it off when it does not (see
/// [`crate::http::Disconnector`]).
pub trait ClientSocket: Send + Sync + std::fmt::Debug {
    /// Bytes the kernel still holds for the client: sent but not yet
    /// acknowledged, or not sent yet. `None` if it cannot tell.
    fn unsent_bytes(&self) -> Option<u64>;

    /// Shuts the connection down both ways.
    fn cut(&self);
}

/// A shared [`ClientSocket`].
pub type Socket = Arc<dyn ClientSocket>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{RoomName, Via};

    fn bracketed(_: u64, json: &RawValue) -> Framed {
        Framed {
            frame: format!("<{}>", json.get()).into_bytes(),
            json_at: 1,
        }
    }

    #[test]
    fn the_json_is_served_from_within_the_frame() {
        let message = Message {
            id: 3,
            room: RoomName::parse("a").expect("a room"),
            author: "x".into(),
            message: "hi".into(),
            ts: 9,
            via: Via::Sse,
        };
        let entry = Entry::new(&message, bracketed);
        let json = r#"{"id":3,"room":"a","author":"x","message":"hi","ts":9,"via":"sse"}"#;
        assert_eq!(&entry.frame()[..], format!("<{json}>").as_bytes());
        assert_eq!(entry.json().get(), json);
        assert_eq!((entry.id(), entry.ts()), (3, 9));
    }
}
