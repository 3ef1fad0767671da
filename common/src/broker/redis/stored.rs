//! Reading what Redis holds: history entries (fields, not JSON) and the
//! messages heard live (JSON from the publish script's `cjson`).

use super::super::BrokerError;
use crate::message::{Message, RoomName};

/// Reads one history entry: id `<message id>-0`, fields `a` (author), `m`
/// (text), `t` (ts) and `v` (via).
pub(super) fn entry(
    room: &RoomName,
    entry_id: &str,
    fields: Vec<String>,
) -> Result<Message, BrokerError> {
    let corrupt = |what: &str| {
        BrokerError::Corrupt(format!("history entry {entry_id} of room {room}: {what}"))
    };
    let id = entry_id
        .strip_suffix("-0")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| corrupt("its id is not <message id>-0"))?;
    let (mut author, mut text, mut ts, mut via) = (None, None, None, None);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match name.as_str() {
            "a" => author = Some(value),
            "m" => text = Some(value),
            "t" => ts = value.parse().ok(),
            "v" => via = value.parse().ok(),
            _ => {}
        }
    }
    Ok(Message {
        id,
        room: room.clone(),
        author: author.ok_or_else(|| corrupt("no author"))?,
        message: text.ok_or_else(|| corrupt("no text"))?,
        ts: ts.ok_or_else(|| corrupt("no acceptance time"))?,
        via: via.ok_or_else(|| corrupt("no service"))?,
    })
}

/// Reads a message heard live (or an idempotency record).
pub(super) fn payload(payload: &[u8]) -> Result<Message, BrokerError> {
    serde_json::from_slice(payload)
        .map_err(|err| BrokerError::Corrupt(format!("{err}: {}", String::from_utf8_lossy(payload))))
}
