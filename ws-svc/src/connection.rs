//! One WebSocket connection: a task that owns the socket and everything
//! about it.
//!
//! The loop waits on two things at once, fairly (neither can starve the
//! other): the client's next frame, and what the [`StreamSession`] hands
//! over next (a message, a gap, a heartbeat, or its end: shutdown, a client
//! too far behind). Messages come from the hub through the session's
//! bounded queue, so a slow client is caught up from history (or closed
//! with 1013) and never slows anyone else; actix-ws' own queue of 32 frames
//! sits between this task and the socket. Publishes are handled one at a
//! time, in order, so a client that publishes twice gets increasing ids.

use std::time::Duration;

use actix_web::web;
use actix_ws::{CloseCode, CloseReason, Message as Frame, MessageStream, ProtocolError, Session};
use bytestring::ByteString;
use common::auth::Caller;
use common::http::AppState;
use common::publisher::Publish;
use common::session::{SessionEvent, StreamSession};
use common::{ApiError, RoomName};
use serde_json::Value;
use tokio::time::Instant;
use wire::close::{self, Goodbye};
use wire::message::{IdempotencyKey, PublishBody};
use wire::ws::{ClientFrame, ServerFrame};

use crate::config::WsSettings;
use crate::fragments::{Assembled, FragmentError, Fragments};

/// How long the close handshake may take before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A client that has sent nothing (not even a pong) for this many heartbeats
/// after a ping is presumed gone. Two, not one: the ping may wait behind a
/// backlog of messages that a slow but healthy client is still reading.
const PONG_TIMEOUT_HEARTBEATS: u32 = 2;

pub struct Connection {
    state: web::Data<AppState>,
    /// Who opened the connection: every publish on it is theirs.
    caller: Caller,
    room: RoomName,
    socket: Session,
    frames: MessageStream,
    stream: StreamSession,
    fragments: Fragments,
    /// When the oldest ping that the client has not answered (with a pong or
    /// any other frame) was sent.
    unanswered_ping: Option<Instant>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("room", &self.room)
            .field("cursor", &self.stream.cursor())
            .finish_non_exhaustive()
    }
}

/// What the loop does next.
#[derive(Debug)]
enum Step {
    Continue,
    /// Say goodbye with a close frame.
    Close(Goodbye),
    /// The client closed: answer its close frame with the same code.
    Closed(Option<CloseReason>),
    /// The connection is gone; nothing can be sent any more.
    Gone,
}

/// Something the loop woke up for.
enum Event {
    Frame(Option<Result<Frame, ProtocolError>>),
    Session(SessionEvent),
}

impl Connection {
    pub fn new(
        state: web::Data<AppState>,
        settings: &WsSettings,
        caller: Caller,
        room: RoomName,
        socket: Session,
        frames: MessageStream,
        stream: StreamSession,
    ) -> Self {
        Connection {
            frames: frames.max_frame_size(settings.max_frame_bytes),
            fragments: Fragments::new(settings.max_frame_bytes),
            unanswered_ping: None,
            state,
            caller,
            room,
            socket,
            stream,
        }
    }

    /// Serves the connection until it ends, then says goodbye.
    pub async fn run(mut self) {
        let end = loop {
            let step = match self.next_event().await {
                Event::Frame(frame) => self.on_frame(frame).await,
                Event::Session(event) => self.on_session(event).await,
            };
            if !matches!(step, Step::Continue) {
                break step;
            }
        };
        let reason = match end {
            Step::Close(goodbye) => {
                log::debug!(
                    "closing a WebSocket at id {}: {}",
                    self.stream.cursor(),
                    goodbye.reason
                );
                Some(CloseReason {
                    code: CloseCode::from(goodbye.code),
                    description: Some(goodbye.reason.to_owned()),
                })
            }
            Step::Closed(reason) => reason,
            Step::Continue | Step::Gone => return,
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.socket.close(reason)).await;
    }

    async fn next_event(&mut self) -> Event {
        // Unbiased: a client that keeps sending cannot starve its own
        // deliveries or the pings, nor a busy room its frames.
        tokio::select! {
            frame = self.frames.recv() => Event::Frame(frame),
            event = self.stream.next() => Event::Session(event),
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<Frame, ProtocolError>>) -> Step {
        let frame = match frame {
            None => return Step::Gone,
            Some(Ok(frame)) => frame,
            Some(Err(ProtocolError::Overflow)) => return Step::Close(close::TOO_BIG),
            Some(Err(ProtocolError::Io(err))) if err.kind() == std::io::ErrorKind::InvalidData => {
                return Step::Close(close::INVALID_UTF8);
            }
            Some(Err(err)) => {
                log::debug!("WebSocket protocol error: {err}");
                return Step::Close(close::PROTOCOL_ERROR);
            }
        };
        // Any frame shows the client is there.
        self.unanswered_ping = None;
        match frame {
            Frame::Text(text) => self.on_text(&text).await,
            Frame::Binary(_) => Step::Close(close::BINARY),
            Frame::Continuation(item) => match self.fragments.push(item) {
                Ok(Assembled::Pending) => Step::Continue,
                Ok(Assembled::Text(bytes)) => match std::str::from_utf8(&bytes) {
                    Ok(text) => self.on_text(text).await,
                    Err(_) => Step::Close(close::INVALID_UTF8),
                },
                Ok(Assembled::Binary) => Step::Close(close::BINARY),
                Err(FragmentError::TooBig) => Step::Close(close::TOO_BIG),
                Err(FragmentError::OutOfOrder) => Step::Close(close::PROTOCOL_ERROR),
            },
            Frame::Ping(payload) => match self.socket.pong(&payload).await {
                Ok(()) => Step::Continue,
                Err(_) => Step::Gone,
            },
            Frame::Pong(_) | Frame::Nop => Step::Continue,
            Frame::Close(reason) => Step::Closed(reason),
        }
    }

    async fn on_text(&mut self, text: &str) -> Step {
        let reply = match ClientFrame::parse(text) {
            Err(bad) => ServerFrame::from(bad),
            Ok(ClientFrame::Ping { reference }) => ServerFrame::Pong { reference },
            Ok(ClientFrame::Publish {
                reference,
                author,
                message,
                key,
            }) => match self.publish(PublishBody { author, message }, key).await {
                Ok(published) => ServerFrame::Ack {
                    reference,
                    id: published.message.id,
                    replayed: published.replayed,
                },
                Err(err) => error_frame(reference, &err),
            },
        };
        self.send(reply.to_text().into()).await
    }

    /// Publishes a frame's message through the same path as HTTP: the
    /// client's rate (shared with its HTTP publishes), validation, the
    /// idempotency key.
    async fn publish(
        &self,
        body: PublishBody,
        key: Option<String>,
    ) -> Result<common::broker::Published, ApiError> {
        let key = key.as_deref().map(IdempotencyKey::parse).transpose()?;
        let publish = Publish {
            room: self.room.clone(),
            body,
            key,
        };
        self.state.publisher.publish(&self.caller, publish).await
    }

    async fn on_session(&mut self, event: SessionEvent) -> Step {
        match event {
            SessionEvent::Message(entry) => self.send(entry.frame().clone()).await,
            SessionEvent::Gap(gap) => {
                self.send(ServerFrame::<()>::Gap(gap).to_text().into())
                    .await
            }
            SessionEvent::Heartbeat => self.on_ping_due().await,
            SessionEvent::End(ending) => Step::Close(ending.goodbye()),
        }
    }

    async fn on_ping_due(&mut self) -> Step {
        let timeout = self.state.config.heartbeat * PONG_TIMEOUT_HEARTBEATS;
        match self.unanswered_ping {
            Some(sent) if sent.elapsed() >= timeout => return Step::Close(close::NO_PONG),
            Some(_) => {}
            None => self.unanswered_ping = Some(Instant::now()),
        }
        match self.socket.ping(b"").await {
            Ok(()) => Step::Continue,
            Err(_) => Step::Gone,
        }
    }

    async fn send(&mut self, text: ByteString) -> Step {
        match self.socket.text(text).await {
            Ok(()) => Step::Continue,
            Err(_) => Step::Gone,
        }
    }
}

/// The `error` frame answering the frame with `reference`.
fn error_frame(reference: Option<Value>, err: &ApiError) -> ServerFrame {
    let body = err.body();
    ServerFrame::Error {
        reference,
        error: body.error,
        detail: body.detail,
    }
}
