//! A WebSocket client for tests (tokio-tungstenite) that behaves like a real
//! one: it answers pings while it reads, keeps the messages it receives
//! apart from the replies to its own frames, and can resume with `after`.

use std::collections::VecDeque;
use std::time::Duration;

use common::Message;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as Frame};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A close frame with this code.
    Closed(u16),
    /// The connection ended without a close frame.
    Dropped,
}

#[derive(Debug)]
pub struct WsClient {
    socket: Socket,
    /// Message frames received while waiting for something else.
    pending_messages: VecDeque<Message>,
    /// Other frames (ack, error, pong, gap) received while waiting for a
    /// message.
    pending_replies: VecDeque<Value>,
    /// The id of the last message received: the cursor to resume with.
    pub last_id: Option<u64>,
}

/// `ws://` URL of a room on a service at `base` (`http://host:port`).
pub fn ws_url(base: &str, room: &str, after: Option<u64>) -> String {
    let mut url = format!("{}/rooms/{room}/ws", base.replacen("http", "ws", 1));
    if let Some(after) = after {
        url.push_str(&format!("?after={after}"));
    }
    url
}

impl WsClient {
    /// Connects; panics if the upgrade is refused.
    pub async fn connect(base: &str, room: &str, after: Option<u64>) -> Self {
        Self::connect_with(&ws_url(base, room, after), &[])
            .await
            .expect("WebSocket upgrade")
    }

    /// Connects over a socket whose receive buffer is `recv_buffer` bytes,
    /// so the server's writes back up quickly while this client does not
    /// read (a slow reader).
    pub async fn connect_slow(
        base: &str,
        room: &str,
        after: Option<u64>,
        recv_buffer: usize,
    ) -> Self {
        let url = ws_url(base, room, after);
        let address: std::net::SocketAddr = base
            .trim_start_matches("http://")
            .parse()
            .expect("base is http://ip:port");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .set_recv_buffer_size(recv_buffer)
            .expect("receive buffer size");
        socket.connect(&address.into()).expect("connect");
        socket.set_nonblocking(true).expect("non-blocking");
        let stream = TcpStream::from_std(socket.into()).expect("a tokio stream");
        let request = url.into_client_request().expect("request");
        let (socket, _response) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
                .await
                .expect("upgrade");
        WsClient {
            socket,
            pending_messages: VecDeque::new(),
            pending_replies: VecDeque::new(),
            last_id: None,
        }
    }

    /// Connects with extra request headers (e.g. `Origin`).
    pub async fn connect_with(
        url: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Self, tungstenite::Error> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, value.parse().expect("header value"));
        }
        let (socket, _response) = tokio_tungstenite::connect_async(request).await?;
        Ok(WsClient {
            socket,
            pending_messages: VecDeque::new(),
            pending_replies: VecDeque::new(),
            last_id: None,
        })
    }

    pub async fn send_json(&mut self, frame: Value) {
        self.send(Frame::text(frame.to_string())).await;
    }

    /// Sends any frame, raw ones included (`Frame::Frame`).
    pub async fn send(&mut self, frame: Frame) {
        self.socket.send(frame).await.expect("frame sent");
    }

    /// The next frame of any kind, `None` once the connection ended.
    /// Answers pings on the way (by reading). Panics after `within`.
    async fn next_frame(&mut self, deadline: Instant) -> Option<Result<Frame, tungstenite::Error>> {
        tokio::time::timeout_at(deadline, self.socket.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no frame in time (pending: {} messages)",
                    self.pending_messages.len()
                )
            })
    }

    /// The next JSON frame that is not a message (ack, error, pong, gap);
    /// messages that arrive meanwhile are kept for [`Self::messages`].
    pub async fn reply(&mut self, within: Duration) -> Value {
        if let Some(reply) = self.pending_replies.pop_front() {
            return reply;
        }
        let deadline = Instant::now() + within;
        loop {
            match self.next_json(deadline).await {
                Ok(value) if value["type"] == "message" => self.keep_message(value),
                Ok(value) => return value,
                Err(ended) => panic!("connection ended ({ended:?}) while waiting for a reply"),
            }
        }
    }

    /// The next `count` messages, in the order received.
    pub async fn messages(&mut self, count: usize, within: Duration) -> Vec<Message> {
        let deadline = Instant::now() + within;
        while self.pending_messages.len() < count {
            match self.next_json(deadline).await {
                Ok(value) if value["type"] == "message" => self.keep_message(value),
                Ok(value) => self.pending_replies.push_back(value),
                Err(ended) => panic!(
                    "connection ended ({ended:?}) after {} of {count} messages",
                    self.pending_messages.len()
                ),
            }
        }
        self.pending_messages.drain(..count).collect()
    }

    /// Publishes and waits for the ack; returns the acked id.
    pub async fn publish(&mut self, reference: &str, author: &str, text: &str) -> u64 {
        self.send_json(
            json!({"type": "publish", "ref": reference, "author": author, "message": text}),
        )
        .await;
        let reply = self.reply(Duration::from_secs(5)).await;
        assert_eq!(reply["type"], "ack", "{reply}");
        assert_eq!(reply["ref"], reference, "{reply}");
        reply["id"].as_u64().expect("an id in the ack")
    }

    /// Messages until the connection ends, and how it ended; panics if it
    /// has not ended within `within`.
    pub async fn all_messages(&mut self, within: Duration) -> (Vec<Message>, Ended) {
        let ended = self.ended(within).await;
        (self.pending_messages.drain(..).collect(), ended)
    }

    /// Reads until the connection ends; returns how. Panics if it has not
    /// ended within `within`.
    pub async fn ended(&mut self, within: Duration) -> Ended {
        let deadline = Instant::now() + within;
        loop {
            match self.next_json(deadline).await {
                Ok(value) if value["type"] == "message" => self.keep_message(value),
                Ok(value) => self.pending_replies.push_back(value),
                Err(ended) => return ended,
            }
        }
    }

    /// Closes from the client's side.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }

    fn keep_message(&mut self, value: Value) {
        let message: Message =
            serde_json::from_value(value["data"].clone()).expect("a Message in data");
        self.last_id = Some(message.id);
        self.pending_messages.push_back(message);
    }

    /// The next text frame as JSON, or how the connection ended.
    async fn next_json(&mut self, deadline: Instant) -> Result<Value, Ended> {
        loop {
            match self.next_frame(deadline).await {
                Some(Ok(Frame::Text(text))) => {
                    return Ok(serde_json::from_str(&text).expect("JSON text frame"));
                }
                Some(Ok(Frame::Close(frame))) => {
                    return Err(Ended::Closed(
                        frame.map_or(1005, |f: CloseFrame| f.code.into()),
                    ));
                }
                Some(Ok(Frame::Binary(_))) => panic!("the server sent a binary frame"),
                Some(Ok(_)) => {} // ping (answered by the library), pong
                Some(Err(_)) | None => return Err(Ended::Dropped),
            }
        }
    }
}
