//! Subscribers of each transport. Each keeps its cursor, reconnects with it
//! when a connection ends (as real clients do), checks that ids arrive
//! once and in order, and records every message's delivery latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use common::Message;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[value(name = "longpoll")]
    LongPoll,
    Sse,
    Ws,
}

impl Transport {
    pub fn default_port(self) -> u16 {
        match self {
            Transport::LongPoll => 8081,
            Transport::Sse => 8082,
            Transport::Ws => 8083,
        }
    }
}

/// Counts shared by every client, for progress.
#[derive(Debug, Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub delivered: AtomicU64,
    pub published: AtomicU64,
}

/// What one subscriber saw.
#[derive(Debug)]
pub struct Outcome {
    pub received: u64,
    /// Messages at or below the cursor (seen twice, or out of order).
    pub duplicates: u64,
    /// Ids skipped.
    pub missing: u64,
    /// Gaps the server announced.
    pub gaps: u64,
    pub reconnects: u64,
    /// Delivery latency in microseconds.
    pub latency: Histogram<u64>,
}

/// The two fields a subscriber looks at, borrowed from the JSON where it can
/// be: parsing hundreds of thousands of messages a second must not cost the
/// load tester more than the service.
#[derive(Deserialize)]
struct Seen<'a> {
    id: u64,
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
}

struct State {
    cursor: u64,
    outcome: Outcome,
    counters: Arc<Counters>,
}

/// The text a publisher sends: when it was sent, padded to `size`.
pub fn stamped_text(size: usize) -> String {
    let stamp = format!("t={};", now_micros());
    let padding = size.saturating_sub(stamp.len());
    stamp + &"x".repeat(padding)
}

fn now_micros() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

fn sent_at(text: &str) -> Option<u64> {
    text.strip_prefix("t=")?.split(';').next()?.parse().ok()
}

impl State {
    fn observe_json(&mut self, json: &str) {
        if let Ok(seen) = serde_json::from_str::<Seen<'_>>(json) {
            self.observe(seen.id, &seen.message);
        }
    }

    fn observe(&mut self, id: u64, text: &str) {
        let outcome = &mut self.outcome;
        if id <= self.cursor {
            outcome.duplicates += 1;
            return;
        }
        outcome.missing += id - self.cursor - 1;
        self.cursor = id;
        outcome.received += 1;
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(sent) = sent_at(text) {
            let _ = outcome
                .latency
                .record(now_micros().saturating_sub(sent).max(1));
        }
    }

    fn gap(&mut self, resume_from: u64) {
        self.outcome.gaps += 1;
        self.cursor = self.cursor.max(resume_from.saturating_sub(1));
    }
}

/// Starts one subscriber of `room` after `after`; it runs until `stop`.
pub fn spawn(
    transport: Transport,
    url: String,
    room: String,
    after: u64,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> JoinHandle<Outcome> {
    tokio::spawn(async move {
        let latency = Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| {
            Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
        });
        let outcome = Outcome {
            received: 0,
            duplicates: 0,
            missing: 0,
            gaps: 0,
            reconnects: 0,
            latency,
        };
        let mut state = State {
            cursor: after,
            outcome,
            counters,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let mut connected = false;
        while !stop.is_cancelled() {
            let connection = async {
                match transport {
                    Transport::LongPoll => {
                        long_poll(&client, &url, &room, &mut state, &mut connected).await
                    }
                    Transport::Sse => {
                        event_stream(&client, &url, &room, &mut state, &mut connected).await
                    }
                    Transport::Ws => websocket(&url, &room, &mut state, &mut connected).await,
                }
            };
            tokio::select! {
                () = connection => {}
                () = stop.cancelled() => break,
            }
            state.outcome.reconnects += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        state.outcome
    })
}

/// Counts this client as connected, once.
fn mark_connected(state: &State, connected: &mut bool) {
    if !*connected {
        *connected = true;
        state.counters.connected.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Deserialize)]
struct PollBody {
    messages: Vec<Message>,
    cursor: u64,
    #[serde(default)]
    gap: bool,
}

async fn long_poll(
    client: &reqwest::Client,
    url: &str,
    room: &str,
    state: &mut State,
    connected: &mut bool,
) {
    mark_connected(state, connected);
    loop {
        let poll = format!("{url}/rooms/{room}/poll?after={}&timeout=25", state.cursor);
        let Ok(response) = client.get(poll).send().await else {
            return;
        };
        match response.status().as_u16() {
            200 => {
                let Ok(body) = response.json::<PollBody>().await else {
                    return;
                };
                if body.gap {
                    state.gap(body.messages.first().map_or(body.cursor + 1, |m| m.id));
                }
                body.messages
                    .iter()
                    .for_each(|message| state.observe(message.id, &message.message));
                state.cursor = state.cursor.max(body.cursor);
            }
            204 => {}
            _ => return,
        }
    }
}

async fn event_stream(
    client: &reqwest::Client,
    url: &str,
    room: &str,
    state: &mut State,
    connected: &mut bool,
) {
    let request = client
        .get(format!("{url}/rooms/{room}/events"))
        .header("last-event-id", state.cursor.to_string());
    let Ok(response) = request.send().await else {
        return;
    };
    if response.status() != 200 {
        return;
    }
    mark_connected(state, connected);
    let mut body = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        pending.extend_from_slice(&chunk);
        let mut consumed = 0;
        while let Some(end) = find(&pending[consumed..], b"\n\n") {
            on_event(&pending[consumed..consumed + end], state);
            consumed += end + 2;
        }
        pending.drain(..consumed);
    }
}

/// One `text/event-stream` block (without its blank line). A minimal parser
/// for the service's own framing (one `data:` line per event): a general
/// SSE library costs more per event than the service does.
fn on_event(block: &[u8], state: &mut State) {
    let (mut kind, mut data) = (&b""[..], &b""[..]);
    for line in block.split(|&byte| byte == b'\n') {
        if let Some(rest) = line.strip_prefix(b"event: ") {
            kind = rest;
        } else if let Some(rest) = line.strip_prefix(b"data: ") {
            data = rest;
        }
    }
    let Ok(data) = std::str::from_utf8(data) else {
        return;
    };
    match kind {
        b"message" => state.observe_json(data),
        b"gap" => {
            let gap: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            state.gap(gap["resume_from"].as_u64().unwrap_or(0));
        }
        _ => {}
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

async fn websocket(url: &str, room: &str, state: &mut State, connected: &mut bool) {
    let address = format!(
        "{}/rooms/{room}/ws?after={}",
        url.replacen("http", "ws", 1),
        state.cursor
    );
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(address).await else {
        return;
    };
    mark_connected(state, connected);
    while let Some(Ok(frame)) = socket.next().await {
        let Frame::Text(text) = frame else { continue };
        // `{"type":"message","data":<Message>}`: the message is the text
        // between the envelope's prefix and its closing brace.
        if let Some(json) = text
            .strip_prefix(r#"{"type":"message","data":"#)
            .and_then(|rest| rest.strip_suffix('}'))
        {
            state.observe_json(json);
            continue;
        }
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        match frame["type"].as_str() {
            // The same, laid out differently.
            Some("message") => {
                if let (Some(id), Some(text)) = (
                    frame["data"]["id"].as_u64(),
                    frame["data"]["message"].as_str(),
                ) {
                    state.observe(id, text);
                }
            }
            Some("gap") => state.gap(frame["resume_from"].as_u64().unwrap_or(0)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_text_has_the_size_asked_and_says_when_it_was_sent() {
        let text = stamped_text(100);
        assert_eq!(text.len(), 100);
        let sent = sent_at(&text).expect("a stamp");
        assert!(now_micros() - sent < 1_000_000);
    }
}
