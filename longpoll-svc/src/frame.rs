//! How a message waits in the hub for polls: as the answer that carries it
//! alone.
//!
//! Each client of a busy room polls after the last message it got, so most
//! polls are answered with exactly the next message, the same answer for
//! every client. That answer is built once, when the message enters the
//! hub, and written to every such poll as it is. An answer with several
//! messages (or a gap) is serialized around each message's JSON, which sits
//! within.

use common::hub::{Entry, Framed, Page};
use serde_json::value::RawValue;

const BEFORE_MESSAGE: &str = r#"{"messages":["#;
const BEFORE_CURSOR: &str = r#"],"cursor":"#;

/// `{"messages":[<json>],"cursor":<id>}`: the poll answer with this message
/// alone (a [`wire::PollAnswer`] without a gap, as serde writes one).
pub fn alone(id: u64, json: &RawValue) -> Framed {
    let cursor = id.to_string();
    let mut frame = String::with_capacity(
        BEFORE_MESSAGE.len() + json.get().len() + BEFORE_CURSOR.len() + cursor.len() + 1,
    );
    frame.push_str(BEFORE_MESSAGE);
    frame.push_str(json.get());
    frame.push_str(BEFORE_CURSOR);
    frame.push_str(&cursor);
    frame.push('}');
    Framed {
        frame: frame.into_bytes(),
        json_at: BEFORE_MESSAGE.len(),
    }
}

/// The page's answer when it is one message and nothing else, ready made.
pub fn ready_answer(page: &Page) -> Option<&Entry> {
    match (page.entries.as_slice(), page.gap) {
        ([only], None) => Some(only),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use common::{Message, RoomName, Via};
    use wire::PollAnswer;

    use super::*;

    fn message(id: u64, text: &str) -> Message {
        Message {
            id,
            room: RoomName::parse("general").expect("valid room"),
            author: "alice".into(),
            message: text.into(),
            ts: 1_700_000_000_000,
            via: Via::LongPoll,
        }
    }

    #[test]
    fn a_message_alone_is_the_answer_serde_would_write() {
        let message = message(42, "quote \" backslash \\ newline \n é");
        let entry = Entry::new(&message, alone);
        let serialized = serde_json::to_vec(&PollAnswer {
            messages: vec![message.clone()],
            cursor: 42,
            gap: false,
        })
        .expect("serializes");
        assert_eq!(&entry.frame()[..], &serialized[..]);
        let json = serde_json::to_string(&message).expect("serializes");
        assert_eq!(entry.json().get(), json);
    }

    #[test]
    fn only_a_page_of_one_message_without_a_gap_is_ready_made() {
        let one = Entry::new(&message(1, "a"), alone);
        let two = Entry::new(&message(2, "b"), alone);
        let page = |entries: Vec<_>, gap| Page { entries, gap };
        let gap = Some(common::hub::Gap {
            after: 0,
            resume_from: 2,
        });
        assert!(ready_answer(&page(vec![one.clone()], None)).is_some());
        assert!(ready_answer(&page(vec![one.clone()], gap)).is_none());
        assert!(ready_answer(&page(vec![one, two], None)).is_none());
        assert!(ready_answer(&page(vec![], None)).is_none());
    }
}
