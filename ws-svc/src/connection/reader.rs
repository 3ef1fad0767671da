//! The reader: a task that reads the client's frames, publishes, and
//! queues its answers for the writer (see the module docs of [`super`]).
//! Publishes are handled one at a time, in order, so a client that
//! publishes twice gets increasing ids.

use std::sync::Arc;

use actix_web::web;
use actix_ws::{Message as Frame, MessageStream, ProtocolError};
use common::auth::Caller;
use common::broker::Published;
use common::http::AppState;
use common::publisher::Publish;
use common::{ApiError, RoomName};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use wire::close::{self, Goodbye};
use wire::message::{IdempotencyKey, PublishBody};
use wire::ws::{ClientFrame, ServerFrame};

use super::{Liveness, Reply};
use crate::config::WsSettings;
use crate::fragments::{Assembled, FragmentError, Fragments};
use crate::frame;

pub(super) struct Reader {
    state: web::Data<AppState>,
    /// Who opened the connection: every publish on it is theirs.
    caller: Caller,
    room: RoomName,
    frames: MessageStream,
    fragments: Fragments,
    replies: mpsc::Sender<Reply>,
    liveness: Arc<Liveness>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

/// What the reader does after a frame.
enum Step {
    Continue,
    /// Close the connection with this code (a protocol fault).
    Close(Goodbye),
    /// The client closed: answer its close frame with the same code.
    Closed(Option<actix_ws::CloseReason>),
    /// The connection (or the writer) is gone.
    Gone,
}

impl Reader {
    pub(super) fn new(
        state: web::Data<AppState>,
        settings: &WsSettings,
        caller: Caller,
        room: RoomName,
        frames: MessageStream,
        replies: mpsc::Sender<Reply>,
        liveness: Arc<Liveness>,
    ) -> Self {
        Reader {
            state,
            caller,
            room,
            frames: frames.max_frame_size(settings.max_frame_bytes),
            fragments: Fragments::new(settings.max_frame_bytes),
            replies,
            liveness,
        }
    }

    /// Reads until the connection ends; asks the writer to close it if the
    /// client broke the protocol or closed.
    pub(super) async fn run(mut self) {
        let end = loop {
            let frame = self.frames.next().await;
            let step = self.on_frame(frame).await;
            if !matches!(step, Step::Continue) {
                break step;
            }
        };
        let reason = match end {
            Step::Close(goodbye) => frame::goodbye(goodbye),
            Step::Closed(reason) => reason,
            Step::Continue | Step::Gone => return,
        };
        // The writer may be gone already; then so is the connection.
        let _ = self.replies.send(Reply::Close(reason)).await;
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
        self.liveness.heard();
        if self.liveness.is_closing() && !matches!(frame, Frame::Close(_)) {
            return Step::Continue;
        }
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
            Frame::Ping(payload) => self.reply(frame::pong(&payload)).await,
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
        self.reply(frame::reply(&reply)).await
    }

    /// Publishes a frame's message through the same path as HTTP: the
    /// client's rate (shared with its HTTP publishes), validation, the
    /// idempotency key.
    async fn publish(&self, body: PublishBody, key: Option<String>) -> Result<Published, ApiError> {
        let key = key.as_deref().map(IdempotencyKey::parse).transpose()?;
        let publish = Publish {
            room: self.room.clone(),
            body,
            key,
        };
        self.state.publisher.publish(&self.caller, publish).await
    }

    async fn reply(&self, frame: bytes::Bytes) -> Step {
        match self.replies.send(Reply::Frame(frame)).await {
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
