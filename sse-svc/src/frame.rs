//! The `text/event-stream` framing (WHATWG HTML, "Server-sent events").
//!
//! A field per line, a blank line ends an event, a line starting with `:` is
//! a comment. Message JSON never contains a raw newline (serde escapes it),
//! so every event's data is one `data:` line.

use bytes::Bytes;
use common::hub::{Framed, Gap};
use serde_json::value::RawValue;
use wire::sse;

/// First bytes of every stream: browsers wait this long before reconnecting.
pub const RETRY: Bytes = Bytes::from_static(b"retry: 3000\n\n");

/// Sent every `HEARTBEAT_SECS`, so proxies and
/// clients see the connection is alive and a vanished client is noticed.
pub const KEEPALIVE: Bytes = Bytes::from_static(b": keepalive\n\n");

/// The stream's last event when its token expired: `event: expired`,
/// `data: {}`.
pub const EXPIRED: Bytes = Bytes::from_static(b"event: expired\ndata: {}\n\n");

/// `id:` / `event: message` / `data:` around one message's JSON; built
/// once per message when it enters the hub.
pub fn message(id: u64, json: &RawValue) -> Framed {
    let prefix = format!("id: {id}\nevent: {}\ndata: ", sse::MESSAGE);
    let json_at = prefix.len();
    Framed {
        frame: (prefix + json.get() + "\n\n").into_bytes(),
        json_at,
    }
}

/// `event: gap`. Its `id:` moves the browser's `Last-Event-ID` to just
/// before `resume_from`, so a reconnect right after it does not announce the
/// same gap again.
pub fn gap(gap: Gap) -> Bytes {
    // Two integers: serialization cannot fail.
    let data = serde_json::to_string(&gap).unwrap_or_default();
    format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        gap.resume_from - 1,
        sse::GAP
    )
    .into()
}

#[cfg(test)]
mod tests {
    use common::hub::Entry;
    use common::{Message, RoomName, Via};

    use super::*;

    #[test]
    fn a_message_is_one_event_with_its_id_and_one_data_line() {
        let message = Message {
            id: 7,
            room: RoomName::parse("general").expect("valid room"),
            author: "alice".into(),
            message: "two\nlines".into(),
            ts: 1,
            via: Via::Sse,
        };
        let entry = Entry::new(&message, super::message);
        assert_eq!(
            &entry.frame()[..],
            "id: 7\nevent: message\ndata: {\"id\":7,\"room\":\"general\",\"author\":\"alice\",\
             \"message\":\"two\\nlines\",\"ts\":1,\"via\":\"sse\"}\n\n"
                .as_bytes()
        );
        assert_eq!(
            &entry.frame()[27..entry.frame().len() - 2],
            entry.json().get().as_bytes(),
            "the JSON is within the frame"
        );
    }

    #[test]
    fn a_gap_says_where_delivery_resumes() {
        let frame = gap(Gap {
            after: 3,
            resume_from: 40,
        });
        assert_eq!(
            &frame[..],
            b"id: 39\nevent: gap\ndata: {\"after\":3,\"resume_from\":40}\n\n"
        );
    }
}
