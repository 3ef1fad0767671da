//! What the service says about itself: its `/metrics` before and after a
//! run, and where the room stands.

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
pub async fn last_id(client: &reqwest::Client, base: &str, room: &str) -> Result<u64, String> {
    let url = format!("{base}/rooms/{room}/history?limit=1");
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|err| format!("{url}: {err}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|err| format!("{url}: {err}"))?;
    Ok(body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["id"].as_u64())
        .unwrap_or(0))
}
