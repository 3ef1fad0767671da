//! How ws-svc writes a message: `{"type":"message","data":<Message>}`,
//! built once per message when it enters the hub and shared by every
//! connection.

use common::hub::Framed;
use serde_json::value::RawValue;
use wire::ws::ServerFrame;

pub fn message(_: u64, json: &RawValue) -> Framed {
    let frame = ServerFrame::Message { data: json }.to_text();
    // The message is the frame's last member: only the closing brace
    // follows it.
    let json_at = frame.len() - json.get().len() - 1;
    Framed { frame, json_at }
}

#[cfg(test)]
mod tests {
    use common::hub::Entry;
    use common::{Message, RoomName, Via};

    #[test]
    fn a_message_frame_holds_the_message_json() {
        let message = Message {
            id: 7,
            room: RoomName::parse("general").expect("valid room"),
            author: "alice".into(),
            message: "}\"{".into(),
            ts: 1,
            via: Via::Ws,
        };
        let entry = Entry::new(&message, super::message);
        let json =
            r#"{"id":7,"room":"general","author":"alice","message":"}\"{","ts":1,"via":"ws"}"#;
        assert_eq!(
            &**entry.frame(),
            format!(r#"{{"type":"message","data":{json}}}"#)
        );
        assert_eq!(entry.json().get(), json);
    }
}
