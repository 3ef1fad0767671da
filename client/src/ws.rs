//! One WebSocket connection (`GET /rooms/{room}/ws`): publish on it, ping
//! it, and read what the server sends. It does not reconnect: a
//! [`Subscription`](crate::Subscription) does that.
//!
//! Answers to our frames (`ack`, `error`, `pong`) arrive interleaved with
//! the room's messages. [`WsConnection::publish`] and
//! [`WsConnection::ping`] read until their answer and keep whatever else
//! arrives meanwhile for [`WsConnection::next_event`], in order; at most
//! [`WsConnection::MAX_PENDING`] of them, so a busy room cannot grow the
//! client's memory while it waits.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::Url;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as Frame, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wire::ws::{ClientFrame, ServerFrame};
use wire::{ErrorBody, Gap, Message, RoomName};

use crate::client::Client;
use crate::error::{ApiError, Error};
use crate::http::{parse_error_body, retry_after};
use crate::idle::Idle;
use crate::payload::Payload;
use crate::publish::Publish;
use crate::url;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The largest message accepted from the server. Its frames carry one
/// message of at most a few thousand characters; this bounds what a broken
/// or hostile server can make the client buffer.
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The socket's read buffer. tungstenite allocates it up front for every
/// connection (128 KiB by default); frames here are small, and programs
/// such as the load tester hold thousands of connections.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// What the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum WsEvent<M = Message> {
    Message(M),
    Gap(Gap),
    /// A publish was stored (matched to it by `reference`).
    Ack(Ack),
    /// A frame of ours was refused; the connection stays open.
    Error {
        reference: Option<Value>,
        body: ErrorBody,
    },
    Pong {
        reference: Option<Value>,
    },
    /// The server closed the connection with this code (RFC 6455; see
    /// [`wire::close`]) and reason. Nothing follows.
    Closed {
        code: u16,
        reason: String,
    },
}

/// A publish was stored with this id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The publish frame's `ref`.
    pub reference: Option<Value>,
    pub id: u64,
    /// The frame's idempotency key was used before: nothing new was
    /// stored, and `id` is the first message's.
    pub replayed: bool,
}

/// Where the connection stands.
#[derive(Debug)]
enum State {
    Open,
    /// The server's close frame arrived while waiting for an answer; it is
    /// reported by `next_event` once the pending events are.
    Closing {
        code: u16,
        reason: String,
    },
    /// Closed, and said so.
    Done,
}

/// What reading one frame gave.
enum Incoming {
    Text(Utf8Bytes),
    Closed { code: u16, reason: String },
}

/// One open WebSocket.
pub struct WsConnection {
    base: Url,
    socket: Socket,
    state: State,
    /// Frames that arrived while waiting for an answer, oldest first.
    pending: VecDeque<Utf8Bytes>,
    /// The `ref` of our next frame.
    next_reference: u64,
    idle: Idle,
}

impl WsConnection {
    /// The most events kept while waiting for an answer.
    pub const MAX_PENDING: usize = 4096;

    /// Connects and upgrades, within the client's connect timeout. With
    /// `after`, the server first replays every message after it. A refused
    /// upgrade is [`Error::Api`] with the status and error body.
    pub async fn connect(
        client: &Client,
        base: &Url,
        room: &RoomName,
        after: Option<u64>,
    ) -> Result<Self, Error> {
        let address = url::websocket(base, room, after, client.token());
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES))
            .read_buffer_size(READ_BUFFER_BYTES);
        let settings = client.settings();
        let connecting =
            tokio_tungstenite::connect_async_with_config(address.as_str(), Some(config), true);
        let (socket, _response) = tokio::time::timeout(settings.connect_timeout, connecting)
            .await
            .map_err(|_| Error::Timeout {
                base: base.clone(),
                after: settings.connect_timeout,
            })?
            .map_err(|err| refused(base, err))?;
        Ok(WsConnection {
            base: base.clone(),
            socket,
            state: State::Open,
            pending: VecDeque::new(),
            next_reference: 1,
            idle: Idle::new(settings.idle_timeout),
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Publishes over the socket and waits for the answer: the `ack` with
    /// the stored id, or [`Error::Rejected`] with the server's error frame.
    /// The frame carries the publish's idempotency key (a fresh one when
    /// none was given).
    pub async fn publish(&mut self, publish: Publish) -> Result<Ack, Error> {
        let (body, key) = publish.into_parts();
        let reference = self.reference();
        let frame = ClientFrame::Publish {
            reference: Some(reference.clone()),
            author: body.author,
            message: body.message,
            key: Some(key.to_string()),
        };
        match self.request(&frame, &reference).await? {
            ServerFrame::Ack {
                reference,
                id,
                replayed,
            } => Ok(Ack {
                reference,
                id,
                replayed,
            }),
            ServerFrame::Error { error, detail, .. } => {
                Err(Error::Rejected(ErrorBody { error, detail }))
            }
            _ => Err(Error::protocol(
                &self.base,
                "a publish answered with neither ack nor error",
            )),
        }
    }

    /// Sends a `ping` frame and waits for its `pong`; the round trip.
    pub async fn ping(&mut self) -> Result<Duration, Error> {
        let started = Instant::now();
        let reference = self.reference();
        let frame = ClientFrame::Ping {
            reference: Some(reference.clone()),
        };
        match self.request(&frame, &reference).await? {
            ServerFrame::Pong { .. } => Ok(started.elapsed()),
            ServerFrame::Error { error, detail, .. } => {
                Err(Error::Rejected(ErrorBody { error, detail }))
            }
            _ => Err(Error::protocol(
                &self.base,
                "a ping answered with neither pong nor error",
            )),
        }
    }

    /// Drops the events kept while waiting for answers, and says how many:
    /// for a connection used only to publish, whose room's messages are of
    /// no interest.
    pub fn discard_pending(&mut self) -> usize {
        let discarded = self.pending.len();
        self.pending.clear();
        discarded
    }

    /// Sends any text as a frame: for tests of what servers do with frames
    /// that break the protocol.
    pub async fn send_text(&mut self, raw: &str) -> Result<(), Error> {
        self.send(Frame::text(raw)).await
    }

    /// The next event, with messages parsed into [`Message`]s.
    pub async fn next_event(&mut self) -> Result<Option<WsEvent>, Error> {
        self.next_event_as().await
    }

    /// The next event: events kept while waiting for answers first, then
    /// what arrives. After [`WsEvent::Closed`] (or an `Err` when the
    /// connection broke without a close frame), `Ok(None)`.
    pub async fn next_event_as<M: Payload>(&mut self) -> Result<Option<WsEvent<M>>, Error> {
        if let Some(text) = self.pending.pop_front() {
            return self.parse(&text).map(Some);
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Open => self.state = State::Open,
            State::Closing { code, reason } => return Ok(Some(WsEvent::Closed { code, reason })),
            State::Done => return Ok(None),
        }
        match self.read().await {
            Ok(Some(Incoming::Text(text))) => self.parse(&text).map(Some),
            Ok(Some(Incoming::Closed { code, reason })) => {
                self.state = State::Done;
                Ok(Some(WsEvent::Closed { code, reason }))
            }
            Ok(None) => {
                self.state = State::Done;
                Ok(None)
            }
            Err(err) => {
                self.state = State::Done;
                Err(err)
            }
        }
    }

    /// Closes from our side (code 1000) and waits a few seconds at most
    /// for the server to close too.
    pub async fn close(mut self) -> Result<(), Error> {
        let frame = tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        match self.socket.close(Some(frame)).await {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => {}
            Err(err) => return Err(self.broken(err)),
        }
        let draining = async { while let Some(Ok(_)) = self.socket.next().await {} };
        // A server that never answers the close is its problem, not ours.
        let _ =
            tokio::time::timeout(self.idle.period().min(Duration::from_secs(5)), draining).await;
        Ok(())
    }

    /// A fresh `ref` for one of our frames.
    fn reference(&mut self) -> Value {
        let reference = Value::String(format!("c{}", self.next_reference));
        self.next_reference += 1;
        reference
    }

    /// Sends `frame` and reads until the answer carrying `reference`,
    /// keeping everything else for `next_event`.
    async fn request(
        &mut self,
        frame: &ClientFrame,
        reference: &Value,
    ) -> Result<ServerFrame<IgnoredAny>, Error> {
        // A frame holds strings and JSON values only, which always
        // serialize (as `ServerFrame::to_text` relies on too).
        let text = serde_json::to_string(frame).unwrap_or_default();
        self.send(Frame::text(text)).await?;
        loop {
            if self.pending.len() >= Self::MAX_PENDING {
                return Err(Error::Backlog(Self::MAX_PENDING));
            }
            match self.read().await? {
                Some(Incoming::Text(text)) => {
                    if let Some(answer) = answer_to(&text, reference) {
                        return Ok(answer);
                    }
                    self.pending.push_back(text);
                }
                Some(Incoming::Closed { code, reason }) => {
                    self.state = State::Closing {
                        code,
                        reason: reason.clone(),
                    };
                    return Err(Error::Closed { code, reason });
                }
                None => {
                    self.state = State::Done;
                    return Err(Error::Closed {
                        code: 1006,
                        reason: "the connection ended without a close frame".into(),
                    });
                }
            }
        }
    }

    async fn send(&mut self, frame: Frame) -> Result<(), Error> {
        if !matches!(self.state, State::Open) {
            return Err(Error::Closed {
                code: 1000,
                reason: "the connection is closed".into(),
            });
        }
        self.socket
            .send(frame)
            .await
            .map_err(|err| self.broken(err))
    }

    /// The next text frame or close, `None` when the connection ended
    /// without one. Control frames are handled on the way (tungstenite
    /// answers pings as it reads).
    async fn read(&mut self) -> Result<Option<Incoming>, Error> {
        loop {
            let Some(frame) = self.idle.watch(self.socket.next()).await else {
                return Err(Error::Timeout {
                    base: self.base.clone(),
                    after: self.idle.period(),
                });
            };
            match frame {
                Some(Ok(Frame::Text(text))) => return Ok(Some(Incoming::Text(text))),
                Some(Ok(Frame::Close(frame))) => {
                    // tungstenite queued its answering close frame; send it
                    // now, since nothing may read this socket again.
                    let _ = self.socket.flush().await;
                    let (code, reason) = frame.map_or((1005, String::new()), |frame| {
                        (u16::from(frame.code), frame.reason.to_string())
                    });
                    return Ok(Some(Incoming::Closed { code, reason }));
                }
                Some(Ok(Frame::Binary(_))) => {
                    return Err(Error::protocol(
                        &self.base,
                        "a binary frame; the API sends JSON text",
                    ));
                }
                Some(Ok(Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_))) => {}
                Some(Err(tungstenite::Error::ConnectionClosed)) | None => return Ok(None),
                Some(Err(err)) => return Err(self.broken(err)),
            }
        }
    }

    fn parse<M: Payload>(&self, text: &str) -> Result<WsEvent<M>, Error> {
        parse_frame(text).map_err(|err| Error::protocol(&self.base, format!("{err}: {text}")))
    }

    fn broken(&self, err: tungstenite::Error) -> Error {
        Error::WebSocket {
            base: self.base.clone(),
            source: Box::new(err),
        }
    }
}

impl fmt::Debug for WsConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsConnection")
            .field("base", &self.base.as_str())
            .field("state", &self.state)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// The fields every server frame is told apart by, borrowed from the text:
/// a message frame's `data` is parsed once, straight into its payload type.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

fn parse_frame<M: Payload>(text: &str) -> Result<WsEvent<M>, serde_json::Error> {
    let envelope: Envelope<'_> = serde_json::from_str(text)?;
    if let ("message", Some(data)) = (envelope.kind.as_ref(), envelope.data) {
        return serde_json::from_str(data.get()).map(WsEvent::Message);
    }
    Ok(
        match serde_json::from_str::<ServerFrame<IgnoredAny>>(text)? {
            ServerFrame::Message { .. } => {
                return Err(serde::de::Error::custom("a message frame without data"));
            }
            ServerFrame::Ack {
                reference,
                id,
                replayed,
            } => WsEvent::Ack(Ack {
                reference,
                id,
                replayed,
            }),
            ServerFrame::Error {
                reference,
                error,
                detail,
            } => WsEvent::Error {
                reference,
                body: ErrorBody { error, detail },
            },
            ServerFrame::Pong { reference } => WsEvent::Pong { reference },
            ServerFrame::Gap(gap) => WsEvent::Gap(gap),
        },
    )
}

/// The frame if it answers the frame with `reference` (an `ack`, `error` or
/// `pong` carrying it); messages and gaps are never answers, and are not
/// parsed past their type here.
fn answer_to(text: &str, reference: &Value) -> Option<ServerFrame<IgnoredAny>> {
    let envelope: Envelope<'_> = serde_json::from_str(text).ok()?;
    if !matches!(envelope.kind.as_ref(), "ack" | "error" | "pong") {
        return None;
    }
    let frame: ServerFrame<IgnoredAny> = serde_json::from_str(text).ok()?;
    let answers = match &frame {
        ServerFrame::Ack { reference: r, .. }
        | ServerFrame::Error { reference: r, .. }
        | ServerFrame::Pong { reference: r } => r.as_ref() == Some(reference),
        ServerFrame::Message { .. } | ServerFrame::Gap(_) => false,
    };
    answers.then_some(frame)
}

/// A failed connect: a refused upgrade becomes the API error it is.
fn refused(base: &Url, err: tungstenite::Error) -> Error {
    match err {
        tungstenite::Error::Http(response) => Error::Api(ApiError {
            status: response.status().as_u16(),
            body: response.body().as_deref().and_then(parse_error_body),
            retry_after: retry_after(response.headers()),
        }),
        err => Error::WebSocket {
            base: base.clone(),
            source: Box::new(err),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wire::ErrorCode;

    use super::*;

    #[test]
    fn a_message_frame_becomes_its_payload() {
        let text = r#"{"type":"message","data":{"id":7,"room":"a","author":"x","message":"hi","ts":1,"via":"ws"}}"#;
        let WsEvent::Message(message) = parse_frame::<Message>(text).expect("a frame") else {
            panic!("a message");
        };
        assert_eq!((message.id, message.message.as_str()), (7, "hi"));
    }

    #[test]
    fn other_frames_become_their_events() {
        let cases: [(&str, WsEvent); 4] = [
            (
                r#"{"type":"ack","ref":"c1","id":42}"#,
                WsEvent::Ack(Ack {
                    reference: Some(json!("c1")),
                    id: 42,
                    replayed: false,
                }),
            ),
            (
                r#"{"type":"gap","after":3,"resume_from":9}"#,
                WsEvent::Gap(Gap {
                    after: 3,
                    resume_from: 9,
                }),
            ),
            (r#"{"type":"pong"}"#, WsEvent::Pong { reference: None }),
            (
                r#"{"type":"error","ref":5,"error":"invalid_json","detail":"no"}"#,
                WsEvent::Error {
                    reference: Some(json!(5)),
                    body: ErrorBody {
                        error: ErrorCode::InvalidJson,
                        detail: "no".into(),
                    },
                },
            ),
        ];
        for (text, event) in cases {
            assert_eq!(parse_frame::<Message>(text).ok(), Some(event), "{text}");
        }
    }

    #[test]
    fn a_frame_of_no_known_type_is_an_error() {
        assert!(parse_frame::<Message>(r#"{"type":"hello"}"#).is_err());
        assert!(parse_frame::<Message>(r#"{"type":"message"}"#).is_err());
        assert!(parse_frame::<Message>("[]").is_err());
    }

    #[test]
    fn only_a_reply_with_our_ref_answers_our_frame() {
        let ours = json!("c2");
        assert!(answer_to(r#"{"type":"ack","ref":"c2","id":1}"#, &ours).is_some());
        assert!(
            answer_to(
                r#"{"type":"error","ref":"c2","error":"rate_limited","detail":"x"}"#,
                &ours
            )
            .is_some()
        );
        assert!(answer_to(r#"{"type":"ack","ref":"c1","id":1}"#, &ours).is_none());
        assert!(answer_to(r#"{"type":"pong"}"#, &ours).is_none());
        assert!(
            answer_to(
                r#"{"type":"message","data":{"id":1,"room":"a","author":"x","message":"hi","ts":1,"via":"ws"}}"#,
                &ours
            )
            .is_none()
        );
    }
}
