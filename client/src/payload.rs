//! How a message is handed over: parsed, or as the server's JSON.
//!
//! Most programs want a [`Message`]. A relay that forwards the JSON as it
//! came can ask for [`RawMessage`]. A program that receives very many
//! messages and reads few of their fields (a load tester) can implement
//! [`Payload`] for its own type that borrows only those fields from the
//! JSON: the subscription parses each message into that type only. (Measured
//! here: a `Message` costs about 300 ns to parse, a two-field borrowing type
//! about 210 ns, a `RawMessage` about 380 ns, since it keeps a copy of the
//! JSON and reads the id from it.)

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use wire::Message;

/// A message as a subscription hands it over: read from the message's JSON
/// (the `data` of an SSE event or a WebSocket `message` frame, an element of
/// a poll answer's `messages`), with the id the subscription keeps its
/// cursor by.
pub trait Payload: DeserializeOwned + Send + 'static {
    /// The message's id (its `id` field).
    fn id(&self) -> u64;
}

impl Payload for Message {
    fn id(&self) -> u64 {
        self.id
    }
}

/// A message kept as the JSON the server sent, with only its id read: for
/// passing messages on unchanged.
#[derive(Debug, Clone)]
pub struct RawMessage {
    id: u64,
    json: Box<RawValue>,
}

impl RawMessage {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The message's JSON, exactly as the server sent it.
    pub fn json(&self) -> &str {
        self.json.get()
    }

    /// The message, parsed.
    pub fn parse(&self) -> Result<Message, serde_json::Error> {
        serde_json::from_str(self.json.get())
    }
}

impl<'de> Deserialize<'de> for RawMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Id {
            id: u64,
        }

        let json = Box::<RawValue>::deserialize(deserializer)?;
        let Id { id } = serde_json::from_str(json.get()).map_err(serde::de::Error::custom)?;
        Ok(RawMessage { id, json })
    }
}

impl Payload for RawMessage {
    fn id(&self) -> u64 {
        self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{"id":7,"room":"a","author":"x","message":"hi","ts":1,"via":"sse"}"#;

    #[test]
    fn a_raw_message_keeps_the_json_and_reads_the_id() {
        let raw: RawMessage = serde_json::from_str(JSON).expect("a message");
        assert_eq!((raw.id(), raw.json()), (7, JSON));
        assert_eq!(raw.parse().map(|m| m.message).ok().as_deref(), Some("hi"));
    }

    #[test]
    fn a_raw_message_needs_an_id() {
        assert!(serde_json::from_str::<RawMessage>(r#"{"message":"hi"}"#).is_err());
    }

    #[test]
    fn raw_messages_read_inside_an_answer() {
        let answer: wire::PollAnswer<RawMessage> =
            serde_json::from_str(&format!(r#"{{"messages":[{JSON}],"cursor":7}}"#))
                .expect("a poll answer");
        assert_eq!(answer.messages[0].json(), JSON);
    }
}
