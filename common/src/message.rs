//! The message model: the wire types (from the `wire` crate), and the
//! [`Draft`] a validated publish becomes before the broker gives it an id.

pub use wire::message::{
    Author, Gap, IdempotencyKey, Message, MessageText, PublishBody, RoomName, ValidationError, Via,
};

/// A validated message that has no id yet: what a publish hands the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub room: RoomName,
    pub author: Author,
    pub text: MessageText,
    pub via: Via,
}

impl Draft {
    /// Validates a publish body for `room`, accepted by the service `via`;
    /// the text may be at most `max_chars` characters long.
    pub fn new(
        room: RoomName,
        body: PublishBody,
        via: Via,
        max_chars: usize,
    ) -> Result<Self, ValidationError> {
        let (author, text) = body.validate(max_chars)?;
        Ok(Draft {
            room,
            author,
            text,
            via,
        })
    }

    /// The message as stored, once the broker gave it an id and a time.
    pub fn stored(&self, id: u64, ts: u64) -> Message {
        Message {
            id,
            room: self.room.clone(),
            author: self.author.as_str().to_owned(),
            message: self.text.as_str().to_owned(),
            ts,
            via: self.via,
        }
    }
}
