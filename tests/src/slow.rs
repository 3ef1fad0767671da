//! Streaming clients that read slowly, or late: each on a socket whose
//! receive buffer is small, so the server's writes back up after a few
//! kilobytes, and reading only when told to. What a real client library
//! never does on purpose, so these stay out of `chat-client`.

use std::io::Read;
use std::time::Duration;

use chat_client::wire::ws::ServerFrame;
use chat_client::{Disconnect, Gap, Message, Transport, wire};
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message as Frame, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::raw::{slow_socket, stream_request, websocket_url};

/// What a slow client read once it started reading.
#[derive(Debug, Default)]
pub struct SlowRead {
    pub messages: Vec<Message>,
    pub gaps: Vec<Gap>,
    /// How the connection ended, if it did before reading stopped: the
    /// server ended the event stream ([`Disconnect::StreamEnded`]), closed
    /// the WebSocket with a code, or dropped the connection
    /// ([`Disconnect::Failed`]).
    pub ended: Option<Disconnect>,
}

/// A slow client of any streaming transport.
#[derive(Debug)]
pub enum SlowClient {
    Sse(SlowEventStream),
    Ws(Box<SlowWebSocket>),
}

impl SlowClient {
    /// Opens the stream of `room` at 127.0.0.1:`port` after `after`, with a
    /// receive buffer of `recv_buffer` bytes, and reads nothing yet.
    pub async fn connect(
        transport: Transport,
        port: u16,
        room: &str,
        after: u64,
        recv_buffer: usize,
    ) -> Self {
        match transport {
            Transport::Sse => {
                SlowClient::Sse(SlowEventStream::connect(port, room, after, recv_buffer))
            }
            Transport::Ws => SlowClient::Ws(Box::new(
                SlowWebSocket::connect(port, room, after, recv_buffer).await,
            )),
            Transport::LongPoll => panic!("a long poll has no stream to fall behind on"),
        }
    }

    /// Reads until the connection ends, `messages` messages have arrived,
    /// or `within` passes.
    pub async fn read(self, within: Duration, messages: usize) -> SlowRead {
        match self {
            SlowClient::Sse(stream) => {
                tokio::task::spawn_blocking(move || stream.read(within, messages))
                    .await
                    .expect("the reader")
            }
            SlowClient::Ws(socket) => socket.read(within, messages).await,
        }
    }
}

/// An event stream on a raw socket (a blocking one: it is read in bursts,
/// as a slow client reads). The response is split into events here, since
/// no SSE parser reads from a socket it does not own.
#[derive(Debug)]
pub struct SlowEventStream {
    socket: std::net::TcpStream,
}

impl SlowEventStream {
    /// Asks for the event stream of `room` after `after` at
    /// 127.0.0.1:`port`, on a socket whose receive buffer is `recv_buffer`
    /// bytes, and does not read the answer yet.
    pub fn connect(port: u16, room: &str, after: u64, recv_buffer: usize) -> Self {
        let request = stream_request(Transport::Sse, room, Some(after));
        SlowEventStream {
            socket: slow_socket(port, &request, recv_buffer),
        }
    }

    /// Reads until the response ends, the connection closes, `messages`
    /// messages have arrived, or `within` passes; then parses.
    pub fn read(self, within: Duration, messages: usize) -> SlowRead {
        self.read_paced(within, messages, 64 * 1024, Duration::ZERO)
    }

    /// Like [`Self::read`], but at most `chunk` bytes at a time with a
    /// `pause` after each: a slow but steady reader.
    pub fn read_paced(
        mut self,
        within: Duration,
        messages: usize,
        chunk: usize,
        pause: Duration,
    ) -> SlowRead {
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

/// Splits an HTTP/1.1 chunked response into its SSE events. `closed`: the
/// connection closed while it was read.
fn parse_raw_response(raw: &[u8], closed: bool) -> SlowRead {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |at| at + 4);
    let (body, ended_cleanly) = dechunk(&raw[head_end..]);
    let text = String::from_utf8_lossy(&body);
    let mut read = SlowRead {
        ended: if ended_cleanly {
            Some(Disconnect::StreamEnded)
        } else {
            closed.then(|| Disconnect::Failed("the connection closed mid-stream".into()))
        },
        ..SlowRead::default()
    };
    let mut blocks: Vec<&str> = text.split("\n\n").collect();
    blocks.pop(); // what follows the last blank line is not a whole event
    for block in blocks {
        let field = |name: &str| block.lines().find_map(|line| line.strip_prefix(name));
        match (field("event: "), field("data: ")) {
            (Some(wire::sse::MESSAGE), Some(data)) => read
                .messages
                .push(serde_json::from_str(data).expect("a message event's data")),
            (Some(wire::sse::GAP), Some(data)) => read
                .gaps
                .push(serde_json::from_str(data).expect("a gap event's data")),
            _ => {}
        }
    }
    read
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

/// A WebSocket (tokio-tungstenite) on a socket with a small receive buffer.
#[derive(Debug)]
pub struct SlowWebSocket {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl SlowWebSocket {
    /// Upgrades to a WebSocket in `room` after `after` at
    /// 127.0.0.1:`port`, on a socket whose receive buffer is `recv_buffer`
    /// bytes, and reads nothing after the upgrade.
    pub async fn connect(port: u16, room: &str, after: u64, recv_buffer: usize) -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .set_recv_buffer_size(recv_buffer)
            .expect("receive buffer size");
        let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        socket.connect(&address.into()).expect("connect");
        socket.set_nonblocking(true).expect("non-blocking");
        let stream = TcpStream::from_std(socket.into()).expect("a tokio stream");
        let url = websocket_url(
            &format!("http://127.0.0.1:{port}"),
            &format!("/rooms/{room}/ws?after={after}"),
        );
        let request = url.into_client_request().expect("request");
        let (socket, _response) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
                .await
                .expect("upgrade");
        SlowWebSocket { socket }
    }

    /// Reads until the connection ends, `messages` messages have arrived,
    /// or `within` passes.
    pub async fn read(mut self, within: Duration, messages: usize) -> SlowRead {
        let deadline = Instant::now() + within;
        let mut read = SlowRead::default();
        while read.messages.len() < messages {
            let Ok(frame) = tokio::time::timeout_at(deadline, self.socket.next()).await else {
                break;
            };
            match frame {
                Some(Ok(Frame::Text(text))) => match parse(&text) {
                    ServerFrame::Message { data } => read.messages.push(data),
                    ServerFrame::Gap(gap) => read.gaps.push(gap),
                    other => panic!("an answer to a frame never sent: {other:?}"),
                },
                Some(Ok(Frame::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |frame| {
                        (frame.code.into(), frame.reason.to_string())
                    });
                    read.ended = Some(Disconnect::Closed { code, reason });
                    break;
                }
                Some(Ok(_)) => {} // ping (answered by the library), pong
                Some(Err(_)) | None => {
                    read.ended = Some(Disconnect::Failed("the connection broke".into()));
                    break;
                }
            }
        }
        read
    }
}

fn parse(text: &Utf8Bytes) -> ServerFrame {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("{err}: {text}"))
}
