//! Clients that misbehave on purpose, on raw sockets: ones that never read,
//! read slowly, or never finish their request, and a WebSocket that sends
//! frames no client library would (binary, invalid UTF-8, fragments) and
//! reads back the frames exactly as the server wrote them.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use chat_client::Transport;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message as Frame};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Connects to 127.0.0.1:`port` with a receive buffer of `recv_buffer`
/// bytes (so the server's writes back up quickly when the client does not
/// read), sends `request`, and reads nothing.
pub fn slow_socket(port: u16, request: &str, recv_buffer: usize) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .set_recv_buffer_size(recv_buffer)
        .expect("receive buffer size");
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    socket.connect(&address.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream.write_all(request.as_bytes()).expect("request sent");
    stream
}

/// The request that opens the stream of `room` on `transport` (an event
/// stream, or a WebSocket upgrade), replaying what follows `after` first.
pub fn stream_request(transport: Transport, room: &str, after: Option<u64>) -> String {
    let query = after.map(|id| format!("?after={id}")).unwrap_or_default();
    match transport {
        Transport::Sse => format!(
            "GET /rooms/{room}/events{query} HTTP/1.1\r\nHost: localhost\r\n\
             Accept: text/event-stream\r\n\r\n"
        ),
        Transport::Ws => format!(
            "GET /rooms/{room}/ws{query} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        ),
        Transport::LongPoll => panic!("long polling has no stream"),
    }
}

/// Reads from `socket` until it is closed or `within` passes; returns the
/// bytes read and whether the peer closed the connection.
pub fn drain(socket: &mut TcpStream, within: Duration) -> (usize, bool) {
    use std::io::Read;
    let deadline = std::time::Instant::now() + within;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match socket.read(&mut buffer) {
            Ok(0) => return (total, true),
            Ok(read) => total += read,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (total, false);
            }
            Err(_) => return (total, true),
        }
    }
    (total, false)
}

/// Sends `bytes` on a fresh connection to 127.0.0.1:`port` and returns the
/// status code of the answer, or 0 if the server closed the connection
/// without one. Panics if nothing happens within `within` (a hung server).
pub async fn exchange(port: u16, bytes: &[u8], within: Duration) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let talk = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        // The server may answer (and close) before taking everything.
        let _ = stream.write_all(bytes).await;
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => head.extend_from_slice(&buffer[..read]),
            }
        }
        let text = String::from_utf8_lossy(&head);
        text.strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3)?.parse().ok())
            .unwrap_or(0)
    };
    tokio::time::timeout(within, talk)
        .await
        .expect("the server answered or closed in time")
}

/// `ws://` for `base` (`http://host:port`), then `path`.
pub fn websocket_url(base: &str, path: &str) -> String {
    format!("{}{path}", base.replacen("http", "ws", 1))
}

/// A WebSocket (tokio-tungstenite) for tests of the framing itself: it
/// sends any frame it is given, and reads the server's frames back as the
/// JSON they are, to the letter (an absent member stays absent).
#[derive(Debug)]
pub struct RawWebSocket {
    socket: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
}

impl RawWebSocket {
    /// Upgrades `{base}{path}` (`base` is `http://host:port`) with extra
    /// request headers (e.g. `Origin`); the error as it came when refused.
    pub async fn connect(
        base: &str,
        path: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Self, tungstenite::Error> {
        let mut request = websocket_url(base, path).into_client_request()?;
        for (name, value) in headers {
            let value = value.parse().expect("a header value");
            request.headers_mut().insert(*name, value);
        }
        let (socket, _response) = tokio_tungstenite::connect_async(request).await?;
        Ok(RawWebSocket { socket })
    }

    /// Sends any frame, hand-built ones (`Frame::Frame`) included.
    pub async fn send(&mut self, frame: Frame) {
        self.socket.send(frame).await.expect("frame sent");
    }

    pub async fn send_json(&mut self, frame: Value) {
        self.send(Frame::text(frame.to_string())).await;
    }

    /// The next text frame, as JSON; panics if the connection ends first,
    /// or after `within`. Pings are answered on the way.
    pub async fn next_json(&mut self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            match self.next_frame(deadline).await {
                Some(Frame::Text(text)) => {
                    return serde_json::from_str(&text).expect("a JSON text frame");
                }
                Some(Frame::Close(frame)) => panic!("closed ({frame:?}) while waiting for a frame"),
                Some(Frame::Binary(_)) => panic!("the server sent a binary frame"),
                Some(_) => {} // ping (answered by the library), pong
                None => panic!("the connection ended while waiting for a frame"),
            }
        }
    }

    /// The next frame that answers one of ours (an ack, an error, a pong):
    /// the room's messages that arrive meanwhile are passed over.
    pub async fn reply(&mut self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let frame = self
                .next_json(deadline.saturating_duration_since(Instant::now()))
                .await;
            if frame["type"] != "message" {
                return frame;
            }
        }
    }

    /// Reads until the server closes; its close code (1006, as RFC 6455
    /// calls it, when the connection ended without a close frame). Panics
    /// after `within`.
    pub async fn close_code(&mut self, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        loop {
            match self.next_frame(deadline).await {
                Some(Frame::Close(frame)) => return frame.map_or(1005, |frame| frame.code.into()),
                Some(_) => {}
                None => return 1006,
            }
        }
    }

    /// The next frame, `None` once the connection ended or broke.
    async fn next_frame(&mut self, deadline: Instant) -> Option<Frame> {
        tokio::time::timeout_at(deadline, self.socket.next())
            .await
            .expect("a frame in time")
            .and_then(Result::ok)
    }
}
