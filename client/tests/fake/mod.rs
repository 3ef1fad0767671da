//! Scripted servers on free ports, for testing what the client does with
//! answers a real service gives only in bad moments (a `503`, a released
//! poll, a stream that ends, a close code) - in milliseconds and exactly.
//!
//! [`HttpServer`] answers each request with the next of its [`Answer`]s
//! and records what it was asked; [`WsServer`] accepts WebSocket upgrades
//! and plays one script of frames per connection.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::handshake::server::{Request as Upgrade, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use wire::{Message, RoomName, Via};

/// A message of room `room` with this id and text.
pub(crate) fn message(id: u64, text: &str) -> Message {
    Message {
        id,
        room: RoomName::parse("room").expect("a valid room"),
        author: "tester".into(),
        message: text.into(),
        ts: 1_764_000_000_000 + id,
        via: Via::Sse,
    }
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serializable")
}

/// One request as the server read it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) target: String,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// A whole answer with a JSON (or empty) body and extra headers.
    Json {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// A `200` event stream: these bytes, then the end of the stream, or
    /// (`hold`) silence while the connection stays open.
    Events { body: String, hold: bool },
    /// No answer at all: the request is held until the test ends.
    Hold,
}

impl Answer {
    pub(crate) fn json(status: u16, body: String) -> Self {
        Answer::Json {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub(crate) fn empty(status: u16) -> Self {
        Self::json(status, String::new())
    }

    pub(crate) fn with_header(self, name: &'static str, value: &str) -> Self {
        match self {
            Answer::Json {
                status,
                mut headers,
                body,
            } => {
                headers.push((name, value.to_owned()));
                Answer::Json {
                    status,
                    headers,
                    body,
                }
            }
            other => other,
        }
    }
}

/// An `id:` / `event: message` / `data:` block, as sse-svc frames one.
pub(crate) fn event(message: &Message) -> String {
    format!(
        "id: {}\nevent: message\ndata: {}\n\n",
        message.id,
        json(message)
    )
}

type Shared<T> = Arc<Mutex<T>>;

/// A listener on a free loopback port, and its base URL.
async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    (listener, base)
}

fn lock<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A scripted HTTP/1.1 server.
#[derive(Debug)]
pub(crate) struct HttpServer {
    pub(crate) base: String,
    requests: Shared<Vec<Request>>,
    _task: AbortOnDrop,
}

impl HttpServer {
    /// Serves `answers` in order, one per request, on any connection; a
    /// request beyond them is held.
    pub(crate) async fn start(answers: Vec<Answer>) -> Self {
        let (listener, base) = listen().await;
        let requests = Shared::default();
        let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
        let recorded = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                let (answers, recorded) = (Arc::clone(&answers), Arc::clone(&recorded));
                connections.push(AbortOnDrop(tokio::spawn(serve(socket, answers, recorded))));
            }
        });
        HttpServer {
            base,
            requests,
            _task: AbortOnDrop(task),
        }
    }

    pub(crate) fn requests(&self) -> Vec<Request> {
        lock(&self.requests).clone()
    }

    /// Waits until `count` requests have arrived; panics after 5 s.
    pub(crate) async fn wait_for_requests(&self, count: usize) -> Vec<Request> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} requests: {requests:?}",
                requests.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A task that ends with its owner: the servers' and their connections'.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answers the requests of one connection until an answer ends it.
async fn serve(
    mut socket: TcpStream,
    answers: Shared<VecDeque<Answer>>,
    recorded: Shared<Vec<Request>>,
) {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut socket, &mut buffer).await {
        lock(&recorded).push(request);
        let answer = lock(&answers).pop_front().unwrap_or(Answer::Hold);
        match answer {
            Answer::Json {
                status,
                headers,
                body,
            } => {
                let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                if !body.is_empty() {
                    head.push_str("content-type: application/json\r\n");
                }
                let closes = headers.iter().any(|(name, value)| {
                    name.eq_ignore_ascii_case("connection") && value == "close"
                });
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                let written = socket
                    .write_all(format!("{head}\r\n{body}").as_bytes())
                    .await;
                if written.is_err() || closes {
                    return;
                }
            }
            Answer::Events { body, hold } => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                let _ = socket.write_all(format!("{head}{body}").as_bytes()).await;
                if hold {
                    std::future::pending::<()>().await;
                }
                return;
            }
            Answer::Hold => std::future::pending().await,
        }
    }
}

/// Reads one request (head, and a body of `content-length` bytes).
async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0u8; 4096];
        let read = socket.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + 4 + length {
        let mut chunk = [0u8; 4096];
        let read = socket.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = String::from_utf8_lossy(&buffer[head_end + 4..head_end + 4 + length]).into_owned();
    buffer.drain(..head_end + 4 + length);
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

/// What a [`WsServer`] does on one connection: send these text frames,
/// then close with this code.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) frames: Vec<String>,
    pub(crate) close: u16,
}

/// A scripted WebSocket server: one [`Session`] per connection, in order.
#[derive(Debug)]
pub(crate) struct WsServer {
    pub(crate) base: String,
    /// The request target of each upgrade.
    targets: Shared<Vec<String>>,
    _task: AbortOnDrop,
}

impl WsServer {
    pub(crate) async fn start(sessions: Vec<Session>) -> Self {
        let (listener, base) = listen().await;
        let targets: Shared<Vec<String>> = Shared::default();
        let recorded = Arc::clone(&targets);
        let task = tokio::spawn(async move {
            for session in sessions {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let recorded = Arc::clone(&recorded);
                // The callback's shape is tungstenite's, large error and all.
                #[allow(clippy::result_large_err)]
                let record = move |request: &Upgrade, response: Response| {
                    lock(&recorded).push(request.uri().to_string());
                    Ok(response)
                };
                let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(socket, record).await
                else {
                    continue;
                };
                for frame in session.frames {
                    let _ = socket.send(Frame::text(frame)).await;
                }
                let close = CloseFrame {
                    code: session.close.into(),
                    reason: "scripted".into(),
                };
                let _ = socket.close(Some(close)).await;
                while let Some(Ok(_)) = socket.next().await {}
            }
            std::future::pending::<()>().await;
        });
        WsServer {
            base,
            targets,
            _task: AbortOnDrop(task),
        }
    }

    pub(crate) fn targets(&self) -> Vec<String> {
        lock(&self.targets).clone()
    }
}
