//! An SSE client that behaves like a browser's `EventSource`: it parses the
//! stream with a real SSE parser, remembers the last event id, and can
//! reconnect with `Last-Event-ID`.

use std::pin::Pin;
use std::time::Duration;

use common::Message;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::header::HeaderMap;

/// What an event on the stream meant.
#[derive(Debug, Clone, PartialEq)]
pub enum SseEvent {
    Message(Message),
    Gap {
        after: u64,
        resume_from: u64,
    },
    /// The token the stream was opened with expired; the stream ends.
    Expired,
}

/// Where a connection starts.
#[derive(Debug, Clone, Copy)]
pub enum Resume {
    /// Only messages published from now on.
    Live,
    /// `Last-Event-ID: n` (how a browser reconnects).
    Header(u64),
    /// `?after=n` (a first connect).
    After(u64),
    /// `?last_event_id=n`.
    LastEventIdParam(u64),
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// One open event stream.
pub struct SseStream {
    pub status: u16,
    pub headers: HeaderMap,
    events: Events,
    /// The id of the last event that carried one, as a browser keeps it.
    pub last_event_id: Option<u64>,
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("last_event_id", &self.last_event_id)
            .finish_non_exhaustive()
    }
}

impl SseStream {
    /// Opens `GET {base}/rooms/{room}/events`; panics unless `200`.
    pub async fn connect(base: &str, room: &str, resume: Resume) -> Self {
        let stream = Self::open(&crate::app::stream_client(), base, room, resume).await;
        assert_eq!(stream.status, 200, "event stream refused");
        stream
    }

    pub async fn open(client: &reqwest::Client, base: &str, room: &str, resume: Resume) -> Self {
        Self::open_with(client, base, room, resume, None).await
    }

    /// As [`Self::open`], with `?token=` (as a browser's `EventSource`
    /// carries its token).
    pub async fn open_with_token(
        client: &reqwest::Client,
        base: &str,
        room: &str,
        resume: Resume,
        token: &str,
    ) -> Self {
        Self::open_with(client, base, room, resume, Some(token)).await
    }

    async fn open_with(
        client: &reqwest::Client,
        base: &str,
        room: &str,
        resume: Resume,
        token: Option<&str>,
    ) -> Self {
        let mut params = match resume {
            Resume::After(id) => vec![format!("after={id}")],
            Resume::LastEventIdParam(id) => vec![format!("last_event_id={id}")],
            Resume::Live | Resume::Header(_) => Vec::new(),
        };
        params.extend(token.map(|token| format!("token={token}")));
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        };
        let mut request = client
            .get(format!("{base}/rooms/{room}/events{query}"))
            .header("accept", "text/event-stream");
        if let Resume::Header(id) = resume {
            request = request.header("last-event-id", id.to_string());
        }
        let Ok(response) = request.send().await else {
            // Refused or reset: status 0, a stream that has ended.
            let events: Events = Box::pin(futures_util::stream::empty());
            return SseStream {
                status: 0,
                headers: HeaderMap::new(),
                events,
                last_event_id: None,
            };
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let events: Events = Box::pin(response.bytes_stream().eventsource());
        SseStream {
            status,
            headers,
            events,
            last_event_id: None,
        }
    }

    /// The next event: `Ok(None)` when the server ended the stream, `Err`
    /// when the connection broke.
    pub async fn next_or_end(&mut self) -> Result<Option<SseEvent>, ()> {
        match self.events.next().await {
            None => Ok(None),
            Some(Err(_)) => Err(()),
            Some(Ok(event)) => Ok(Some(self.understand(event))),
        }
    }

    /// The next event, `None` when the server ended the stream (or the
    /// connection broke). Panics if nothing comes `within`.
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        tokio::time::timeout(within, self.next_or_end())
            .await
            .unwrap_or_else(|_| panic!("no event within {within:?}"))
            .unwrap_or(None)
    }

    fn understand(&mut self, event: Event) -> SseEvent {
        if let Ok(id) = event.id.parse() {
            self.last_event_id = Some(id);
        }
        match event.event.as_str() {
            "message" => {
                SseEvent::Message(serde_json::from_str(&event.data).expect("a Message in data"))
            }
            "gap" => {
                let gap: serde_json::Value = serde_json::from_str(&event.data).expect("gap data");
                SseEvent::Gap {
                    after: gap["after"].as_u64().expect("after"),
                    resume_from: gap["resume_from"].as_u64().expect("resume_from"),
                }
            }
            "expired" => SseEvent::Expired,
            other => panic!("unexpected event {other:?}: {event:?}"),
        }
    }

    /// The next `count` messages; panics on a gap, an end, or if they take
    /// longer than `within`.
    pub async fn messages(&mut self, count: usize, within: Duration) -> Vec<Message> {
        let deadline = tokio::time::Instant::now() + within;
        let mut messages = Vec::with_capacity(count);
        while messages.len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left.max(Duration::from_millis(1))).await {
                Some(SseEvent::Message(message)) => messages.push(message),
                other => panic!(
                    "expected a message after {} of {count}, got {other:?}",
                    messages.len()
                ),
            }
        }
        messages
    }
}

/// An SSE client on a raw socket with a small receive buffer, for tests of
/// clients that read slowly or not at all: it reads only when told to.
#[derive(Debug)]
pub struct RawSseClient {
    socket: std::net::TcpStream,
}

/// What a [`RawSseClient`] read once it started reading.
#[derive(Debug)]
pub struct RawSseRead {
    pub messages: Vec<Message>,
    pub gaps: Vec<(u64, u64)>,
    /// The server ended the response (the chunked body's last chunk).
    pub ended_cleanly: bool,
    /// The connection closed (cleanly or not) before `within` ran out.
    pub closed: bool,
    pub bytes: usize,
}

impl RawSseClient {
    /// Sends `GET path` on a socket whose receive buffer is `recv_buffer`
    /// bytes, and does not read the answer yet.
    pub fn connect(port: u16, path: &str, recv_buffer: usize) -> Self {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n");
        RawSseClient {
            socket: crate::raw::slow_socket(port, &request, recv_buffer),
        }
    }

    /// Reads until the response ends, the connection closes, `messages`
    /// messages have arrived, or `within` passes; then parses.
    pub fn read_for(self, within: Duration, messages: usize) -> RawSseRead {
        self.read_paced(within, messages, 64 * 1024, Duration::ZERO)
    }

    /// Like [`Self::read_for`], but at most `chunk` bytes at a time with a
    /// `pause` after each: a slow but steady reader.
    pub fn read_paced(
        mut self,
        within: Duration,
        messages: usize,
        chunk: usize,
        pause: Duration,
    ) -> RawSseRead {
        use std::io::Read;
        let deadline = std::time::Instant::now() + within;
        let mut raw = Vec::new();
        let mut buffer = vec![0u8; chunk];
        let mut closed = false;
        let mut counter = MessageCounter::default();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            match self.socket.read(&mut buffer) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(read) => {
                    raw.extend_from_slice(&buffer[..read]);
                    if raw.ends_with(b"\r\n0\r\n\r\n") || counter.complete(&raw) >= messages {
                        break;
                    }
                    std::thread::sleep(pause);
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        parse_raw_response(&raw, closed)
    }
}

/// Counts message events as bytes arrive, scanning each byte once.
#[derive(Debug, Default)]
struct MessageCounter {
    scanned: usize,
    marks: usize,
    last_mark: Option<usize>,
}

impl MessageCounter {
    const MARK: &[u8] = b"\nevent: message\n";

    /// How many message events have fully arrived in `raw` (the last one
    /// counts once the blank line after it is there).
    fn complete(&mut self, raw: &[u8]) -> usize {
        let from = self.scanned.saturating_sub(Self::MARK.len() - 1);
        for (offset, window) in raw[from..].windows(Self::MARK.len()).enumerate() {
            if window == Self::MARK {
                self.marks += 1;
                self.last_mark = Some(from + offset);
            }
        }
        self.scanned = raw.len();
        match self.last_mark {
            Some(at)
                if !raw[at + Self::MARK.len()..]
                    .windows(2)
                    .any(|w| w == b"\n\n") =>
            {
                self.marks - 1
            }
            _ => self.marks,
        }
    }
}

/// Splits an HTTP/1.1 chunked response into its SSE events.
fn parse_raw_response(raw: &[u8], closed: bool) -> RawSseRead {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |at| at + 4);
    let (body, ended_cleanly) = dechunk(&raw[head_end..]);
    let text = String::from_utf8_lossy(&body);
    let (mut messages, mut gaps) = (Vec::new(), Vec::new());
    let mut blocks: Vec<&str> = text.split("\n\n").collect();
    blocks.pop(); // what follows the last blank line is not a whole event
    for block in blocks {
        let field = |name: &str| block.lines().find_map(|line| line.strip_prefix(name));
        match (field("event: "), field("data: ")) {
            (Some("message"), Some(data)) => {
                messages.push(serde_json::from_str(data).expect("message data"))
            }
            (Some("gap"), Some(data)) => {
                let gap: serde_json::Value = serde_json::from_str(data).expect("gap data");
                gaps.push((
                    gap["after"].as_u64().unwrap_or(0),
                    gap["resume_from"].as_u64().unwrap_or(0),
                ));
            }
            _ => {}
        }
    }
    RawSseRead {
        messages,
        gaps,
        ended_cleanly,
        closed,
        bytes: raw.len(),
    }
}

/// Decodes a chunked body as far as it is complete; `true` if it ended with
/// the zero-length chunk.
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
            return (body, false);
        };
        if size == 0 {
            return (body, true);
        }
        let start = line_end + 2;
        if rest.len() < start + size + 2 {
            body.extend_from_slice(&rest[start.min(rest.len())..]);
            return (body, false);
        }
        body.extend_from_slice(&rest[start..start + size]);
        rest = &rest[start + size + 2..];
    }
}
