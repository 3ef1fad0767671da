//! Subscribers that keep going across failures the way real clients do:
//! the long-poller follows cursors, the SSE client reconnects with
//! `Last-Event-ID`, the WebSocket client reconnects with `?after=`.
//!
//! A subscriber is given several instances of its service (what a load
//! balancer would choose from). When a connection ends, it moves on to the
//! next instance and resumes from its cursor. It records every message
//! exactly as received (duplicates included, so tests can see them), every
//! gap it is told about, and how each connection ended.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common::Message;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::longpoll::PollBody;
use crate::sse::{Resume, SseEvent, SseStream};

/// The three ways to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    LongPoll,
    Sse,
    Ws,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::LongPoll, Transport::Sse, Transport::Ws];

    /// The binary serving this transport.
    pub fn binary(self) -> &'static str {
        match self {
            Transport::LongPoll => "longpoll-svc",
            Transport::Sse => "sse-svc",
            Transport::Ws => "ws-svc",
        }
    }
}

/// How one connection of a subscriber ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnection {
    /// SSE: the server ended the stream (a shutdown says goodbye this way).
    StreamEnded,
    /// WebSocket: a close frame with this code.
    Closed(u16),
    /// Long polling: a held poll answered `204` with `Connection: close`.
    PollReleased,
    /// An error status instead of a stream.
    Status(u16),
    /// The connection failed or broke (refused, reset, cut).
    Failed,
}

/// Everything a subscriber saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub messages: Vec<Message>,
    /// `(after, resume_from)` of each gap announced.
    pub gaps: Vec<(u64, u64)>,
    /// `(instance, how it ended)` of each connection that ended.
    pub disconnections: Vec<(String, Disconnection)>,
}

/// A running subscriber; stops when dropped.
#[derive(Debug)]
pub struct Subscriber {
    pub transport: Transport,
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
    stop: CancellationToken,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A subscriber's own view while it runs.
struct Run {
    transport: Transport,
    bases: Vec<String>,
    room: String,
    cursor: u64,
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
    poll_client: reqwest::Client,
    stream_client: reqwest::Client,
}

impl Subscriber {
    /// Starts receiving `room` after `after` from the first of `bases`.
    pub fn start(transport: Transport, bases: Vec<String>, room: &str, after: u64) -> Self {
        assert!(!bases.is_empty(), "a subscriber needs an instance");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let changed = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let run = Run {
            transport,
            bases,
            room: room.to_owned(),
            cursor: after,
            seen: Arc::clone(&seen),
            changed: Arc::clone(&changed),
            poll_client: crate::app::http_client(),
            stream_client: crate::app::stream_client(),
        };
        let stopped = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = run.forever() => {}
                () = stopped.cancelled() => {}
            }
        });
        Subscriber {
            transport,
            seen,
            changed,
            stop,
        }
    }

    /// A copy of everything seen so far.
    pub fn seen(&self) -> Seen {
        lock(&self.seen).clone()
    }

    /// Waits until `count` messages have arrived; panics after `within`.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Message> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            {
                let seen = lock(&self.seen);
                if seen.messages.len() >= count {
                    return seen.messages.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let seen = self.seen();
                panic!(
                    "{:?} subscriber: {} of {count} messages within {within:?} (last id {:?}, gaps {:?}, \
                     disconnections {:?})",
                    self.transport,
                    seen.messages.len(),
                    seen.messages.last().map(|m| m.id),
                    seen.gaps,
                    seen.disconnections
                );
            }
        }
    }

    /// Waits until a connection has ended in a way `matches` accepts.
    pub async fn wait_for_disconnection(
        &self,
        within: Duration,
        matches: impl Fn(&Disconnection) -> bool,
    ) -> Disconnection {
        crate::eventually(
            within,
            &format!("a {:?} disconnection", self.transport),
            || {
                let found = self
                    .seen()
                    .disconnections
                    .iter()
                    .map(|(_, how)| how.clone())
                    .find(&matches);
                async move { found }
            },
        )
        .await
    }
}

fn lock(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Run {
    /// Connects, reads until the connection ends, moves to the next
    /// instance, and again, for as long as the subscriber lives.
    async fn forever(mut self) {
        let mut index = 0;
        loop {
            let base = self.bases[index % self.bases.len()].clone();
            let ended = match self.transport {
                Transport::LongPoll => self.long_poll(&base).await,
                Transport::Sse => self.event_stream(&base).await,
                Transport::Ws => self.websocket(&base).await,
            };
            lock(&self.seen).disconnections.push((base, ended));
            self.changed.notify_waiters();
            index += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn record(&mut self, message: Message) {
        self.cursor = message.id;
        lock(&self.seen).messages.push(message);
        self.changed.notify_waiters();
    }

    fn record_gap(&mut self, after: u64, resume_from: u64) {
        self.cursor = resume_from - 1;
        lock(&self.seen).gaps.push((after, resume_from));
    }

    /// Polls one instance with each cursor it is given until it fails or
    /// releases the poll for good.
    async fn long_poll(&mut self, base: &str) -> Disconnection {
        loop {
            let url = format!(
                "{base}/rooms/{}/poll?after={}&timeout=5",
                self.room, self.cursor
            );
            let Ok(response) = self.poll_client.get(url).send().await else {
                return Disconnection::Failed;
            };
            let closing = response
                .headers()
                .get("connection")
                .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
            match response.status().as_u16() {
                200 => {
                    let Ok(body) = response.json::<PollBody>().await else {
                        return Disconnection::Failed;
                    };
                    let gap_after = self.cursor;
                    if body.gap {
                        let resume_from = body.messages.first().map_or(body.cursor + 1, |m| m.id);
                        self.record_gap(gap_after, resume_from);
                    }
                    for message in body.messages {
                        self.record(message);
                    }
                    self.cursor = body.cursor;
                }
                204 if closing => return Disconnection::PollReleased,
                204 => {}
                status => return Disconnection::Status(status),
            }
        }
    }

    /// One event stream, resuming with `Last-Event-ID`.
    async fn event_stream(&mut self, base: &str) -> Disconnection {
        let mut stream = SseStream::open(
            &self.stream_client,
            base,
            &self.room,
            Resume::Header(self.cursor),
        )
        .await;
        if stream.status == 0 {
            return Disconnection::Failed;
        }
        if stream.status != 200 {
            return Disconnection::Status(stream.status);
        }
        loop {
            match stream.next_or_end().await {
                Ok(Some(SseEvent::Message(message))) => self.record(message),
                Ok(Some(SseEvent::Gap { after, resume_from })) => {
                    self.record_gap(after, resume_from)
                }
                Ok(Some(SseEvent::Expired)) => {}
                Ok(None) => return Disconnection::StreamEnded,
                Err(()) => return Disconnection::Failed,
            }
        }
    }

    /// One WebSocket session, resuming with `?after=`.
    async fn websocket(&mut self, base: &str) -> Disconnection {
        use tokio_tungstenite::tungstenite::Message as Frame;
        let url = crate::ws::ws_url(base, &self.room, Some(self.cursor));
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url).await else {
            return Disconnection::Failed;
        };
        loop {
            match socket.next().await {
                Some(Ok(Frame::Text(text))) => {
                    let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                        return Disconnection::Failed;
                    };
                    match frame["type"].as_str() {
                        Some("message") => match serde_json::from_value(frame["data"].clone()) {
                            Ok(message) => self.record(message),
                            Err(_) => return Disconnection::Failed,
                        },
                        Some("gap") => self.record_gap(
                            frame["after"].as_u64().unwrap_or(0),
                            frame["resume_from"].as_u64().unwrap_or(1),
                        ),
                        _ => {}
                    }
                }
                Some(Ok(Frame::Close(frame))) => {
                    return Disconnection::Closed(frame.map_or(1005, |frame| frame.code.into()));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Disconnection::Failed,
            }
        }
    }
}
