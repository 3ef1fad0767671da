//! The bodies of the answers that carry messages: a poll's and a history
//! read's.
//!
//! Both are generic over how a message is held. Clients read them as
//! [`Message`]s; servers write them from messages serialized once when they
//! entered the instance (`&RawValue`), so answering a read copies bytes and
//! never serializes a message again.

use serde::{Deserialize, Serialize};

use crate::message::Message;

/// `200` answer of `GET /rooms/{room}/poll`: the messages after the cursor
/// (at most a batch), the cursor to poll with next, and whether some
/// messages before these are gone for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollAnswer<M = Message> {
    pub messages: Vec<M>,
    /// The id to poll after next: the last message's, or where delivery
    /// resumes after a gap.
    pub cursor: u64,
    /// Some messages after the requested cursor are gone (history no longer
    /// reaches back, or the room's ids were lost); `messages` starts after
    /// them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub gap: bool,
}

/// `200` answer of `GET /rooms/{room}/history`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryAnswer<M = Message> {
    pub messages: Vec<M>,
    /// As in a poll: some messages after `after` are gone for good.
    #[serde(default, skip_serializing_if = "is_false")]
    pub gap: bool,
}

// serde's `skip_serializing_if` takes a reference.
pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    #[test]
    fn a_poll_answer_writes_pre_serialized_messages_as_they_are() {
        let stored = r#"{"id":7,"room":"a","author":"x","message":"hi","ts":1,"via":"sse"}"#;
        let raw: &RawValue = serde_json::from_str(stored).expect("valid JSON");
        let answer = PollAnswer {
            messages: vec![raw],
            cursor: 7,
            gap: false,
        };
        assert_eq!(
            serde_json::to_string(&answer).expect("serializable"),
            format!(r#"{{"messages":[{stored}],"cursor":7}}"#)
        );
    }

    #[test]
    fn a_gap_is_written_only_when_there_is_one() {
        let answer: HistoryAnswer<Message> = HistoryAnswer {
            messages: Vec::new(),
            gap: true,
        };
        assert_eq!(
            serde_json::to_string(&answer).expect("serializable"),
            r#"{"messages":[],"gap":true}"#
        );
    }

    #[test]
    fn clients_read_answers_without_a_gap_member() {
        let answer: PollAnswer =
            serde_json::from_str(r#"{"messages":[],"cursor":3}"#).expect("a poll answer");
        assert_eq!(
            answer,
            PollAnswer {
                messages: Vec::new(),
                cursor: 3,
                gap: false
            }
        );
    }
}
