//! What the service says about itself: its `/metrics` before and after a
//! run, and where the room stands.

use chat_client::{Client, RoomName};
use serde::Serialize;

/// Figures from a service's `/metrics` (`None` when it has none, e.g. when
/// the URL is a gateway that sends `/metrics` to any instance).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Snapshot {
    pub resident_bytes: Option<f64>,
    pub cpu_seconds: Option<f64>,
    pub connected_clients: Option<f64>,
}

pub async fn snapshot(client: &reqwest::Client, base: &str) -> Snapshot {
    let Ok(response) = client.get(format!("{base}/metrics")).send().await else {
        return Snapshot::default();
    };
    let Ok(text) = response.text().await else {
        return Snapshot::default();
    };
    let value = |name: &str| {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find(|line| line.split(['{', ' ']).next() == Some(name))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    };
    Snapshot {
        resident_bytes: value("process_resident_memory_bytes"),
        cpu_seconds: value("process_cpu_seconds_total"),
        connected_clients: value("chat_connected_clients"),
    }
}

/// The room's last id, so subscribers start exactly there.
pub async fn last_id(client: &Client, room: &RoomName) -> Result<u64, String> {
    let history = client
        .history(room, None, Some(1))
        .await
        .map_err(|err| format!("the room's history: {err}"))?;
    Ok(history.messages.last().map_or(0, |message| message.id))
}
