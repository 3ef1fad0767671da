//! Where a room lives in Redis. Every key and the live channel of one room
//! share the hash tag `{<room>}`, so on Redis Cluster a room lives on one
//! shard: the publish script runs there, and its sharded channel is there.
//!
//! - `<prefix>:{<room>}:seq`: the room's last assigned id;
//! - `<prefix>:{<room>}:history`: a stream capped at `HISTORY_LEN` whose
//!   entry ids are `<message id>-0`, so `XRANGE` by message id is direct;
//! - `<prefix>:{<room>}:idem:<key>`: an idempotency key's first message;
//! - `<prefix>:{<room>}:live`: the channel its messages are published on.

use crate::message::{IdempotencyKey, RoomName};

#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: String) -> Self {
        Keys { prefix }
    }

    pub(super) fn sequence(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:seq", self.prefix)
    }

    pub(super) fn history(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:history", self.prefix)
    }

    /// The record of an idempotency key's first use in the room.
    pub(super) fn idempotency(&self, room: &RoomName, key: &IdempotencyKey) -> String {
        format!("{}:{{{room}}}:idem:{}", self.prefix, key.as_str())
    }

    /// The room's live channel.
    pub(super) fn channel(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:live", self.prefix)
    }

    /// The room a live channel belongs to, if it is one of ours.
    pub(super) fn room_of(&self, channel: &str) -> Option<RoomName> {
        let tagged = channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:live")?;
        RoomName::parse(tagged).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_and_its_channel_name_each_other() {
        let keys = Keys::new("chat".into());
        let room = RoomName::parse("team-a").expect("a room");
        assert_eq!(keys.channel(&room), "chat:{team-a}:live");
        assert_eq!(keys.room_of(&keys.channel(&room)), Some(room));
        assert_eq!(keys.room_of("other:{team-a}:live"), None);
        assert_eq!(keys.room_of("chat:{bad room}:live"), None);
    }
}
