//! The writer: the upgrade's response body (see the module docs of
//! [`super`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::session::{SessionEvent, StreamSession};
use futures_util::Stream;
use tokio::sync::mpsc;
use wire::close;
use wire::ws::ServerFrame;

use super::{Liveness, Reply};
use crate::frame;

/// A client that has sent nothing (not even a pong) for this many heartbeats
/// after a ping is presumed gone. Two, not one: the ping may wait behind a
/// backlog of messages that a slow but healthy client is still reading.
const PONG_TIMEOUT_HEARTBEATS: u32 = 2;

struct Writer {
    session: StreamSession,
    replies: mpsc::Receiver<Reply>,
    liveness: Arc<Liveness>,
    pong_timeout: Duration,
    /// When the oldest ping the client has not answered (with a pong or any
    /// other frame) was sent, in the liveness clock's milliseconds.
    unanswered_ping: Option<u64>,
}

/// What the writer does next.
enum Next {
    Write(Bytes),
    /// Write this close frame, then end (once the client answers it, see
    /// [`CLOSE_HANDSHAKE_TIMEOUT`]).
    Close(Bytes),
    /// The connection is gone (the reader ended with it): end.
    End,
}

/// How long a close frame of the server's own (a goodbye, a silent
/// client) waits for the client's answering close before the TCP
/// connection ends anyway (RFC 6455, 7.1.1: the server ends it once the
/// handshake is done). Ending it at once would leave a client that was
/// still reading its backlog writing pongs into a reset connection, and
/// never reading the close code that tells it how to reconnect. At most
/// half the shutdown timeout, so that a shutdown's goodbyes are answered
/// before the server stops waiting for its connections.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the writer stands.
enum State {
    Open(Box<Writer>),
    /// The close frame is written: wait (without the session, so the
    /// client no longer counts, nor holds its room) for the client's close,
    /// or the reader's end, or the timeout.
    Closing {
        replies: mpsc::Receiver<Reply>,
        deadline: tokio::time::Instant,
    },
}

/// The writer, as the stream of bytes the HTTP server writes to the socket.
pub(super) fn outgoing(
    session: StreamSession,
    replies: mpsc::Receiver<Reply>,
    liveness: Arc<Liveness>,
    heartbeat: Duration,
    shutdown_timeout: Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Unpin + 'static {
    let close_wait = CLOSE_HANDSHAKE_TIMEOUT.min(shutdown_timeout / 2);
    let writer = Writer {
        session,
        replies,
        liveness,
        pong_timeout: heartbeat * PONG_TIMEOUT_HEARTBEATS,
        unanswered_ping: None,
    };
    Box::pin(futures_util::stream::unfold(
        State::Open(Box::new(writer)),
        move |state| async move {
            match state {
                State::Open(mut writer) => match writer.next().await {
                    Next::Write(bytes) => Some((Ok(bytes), State::Open(writer))),
                    Next::Close(bytes) => {
                        writer.liveness.close();
                        let closing = State::Closing {
                            replies: writer.replies,
                            deadline: tokio::time::Instant::now() + close_wait,
                        };
                        Some((Ok(bytes), closing))
                    }
                    Next::End => None,
                },
                State::Closing {
                    mut replies,
                    deadline,
                } => {
                    answered(&mut replies, deadline).await;
                    None
                }
            }
        },
    ))
}

/// Resolves when the client has answered the close (the reader queued its
/// close, or ended with the connection), or at `deadline`. Nothing more is
/// written after a close frame, so any other reply is dropped.
async fn answered(replies: &mut mpsc::Receiver<Reply>, deadline: tokio::time::Instant) {
    let answer = async {
        while let Some(reply) = replies.recv().await {
            if matches!(reply, Reply::Close(_)) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, answer).await;
}

impl Writer {
    async fn next(&mut self) -> Next {
        loop {
            // The reader's replies first: an answer should not wait behind a
            // backlog of messages.
            let next = tokio::select! {
                biased;
                reply = self.replies.recv() => match reply {
                    Some(Reply::Frame(bytes)) => Some(Next::Write(bytes)),
                    Some(Reply::Close(reason)) => Some(Next::Close(frame::close(reason))),
                    None => Some(Next::End),
                },
                event = self.session.next() => self.on_session(event),
            };
            if let Some(next) = next {
                return next;
            }
        }
    }

    fn on_session(&mut self, event: SessionEvent) -> Option<Next> {
        match event {
            SessionEvent::Message(entry) => Some(Next::Write(entry.frame().clone())),
            SessionEvent::Gap(gap) => Some(Next::Write(frame::reply(&ServerFrame::<()>::Gap(gap)))),
            SessionEvent::Heartbeat => self.on_heartbeat(),
            SessionEvent::End(ending) => {
                log::debug!(
                    "closing a WebSocket at id {}: {}",
                    self.session.cursor(),
                    ending.goodbye().reason
                );
                Some(Next::Close(frame::close(frame::goodbye(ending.goodbye()))))
            }
        }
    }

    /// Pings, or closes a client that has not answered the last ping for
    /// the pong timeout.
    fn on_heartbeat(&mut self) -> Option<Next> {
        let now = self.liveness.now();
        match self.unanswered_ping {
            Some(sent) if self.liveness.heard_since(sent) => self.unanswered_ping = None,
            Some(sent) => {
                let timeout = u64::try_from(self.pong_timeout.as_millis()).unwrap_or(u64::MAX);
                if now.saturating_sub(sent) >= timeout {
                    return Some(Next::Close(frame::close(frame::goodbye(close::NO_PONG))));
                }
                return Some(Next::Write(frame::ping()));
            }
            None => {}
        }
        self.unanswered_ping = Some(now);
        Some(Next::Write(frame::ping()))
    }
}
