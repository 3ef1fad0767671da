//! One WebSocket connection, in two halves that each own one direction.
//!
//! - The **writer** ([`writer`]) is the upgrade's response body: the HTTP
//!   server polls it whenever the socket can take more. It writes what the
//!   [`StreamSession`] hands over (each message's frame, built once for
//!   every connection: delivering a message is writing shared bytes),
//!   the pings, and the replies the reader queues; it ends with a close
//!   frame.
//! - The **reader** ([`reader`]) is a task that reads the client's frames:
//!   it publishes, answers, and queues its replies (acks, errors, pongs, a
//!   close) for the writer through a small bounded queue, so a client that
//!   publishes without reading its answers is slowed down, not buffered.
//!
//! Messages thus go from the hub to the socket with one task wake-up per
//! connection, as in SSE; a slow client is caught up from history (or
//! closed with 1013) by its session and never slows anyone else.
//!
//! [`StreamSession`]: common::session::StreamSession

mod reader;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use actix_web::web;
use actix_ws::{CloseReason, MessageStream};
use bytes::Bytes;
use common::RoomName;
use common::auth::Caller;
use common::http::AppState;
use common::session::StreamSession;
use futures_util::Stream;
use tokio::sync::mpsc;

use self::reader::Reader;
use self::writer::outgoing;
use crate::config::WsSettings;

/// Replies the reader may queue before it waits for the writer.
const REPLIES_QUEUED: usize = 32;

/// What the reader asks the writer to write.
#[derive(Debug)]
enum Reply {
    /// A frame, ready to write.
    Frame(Bytes),
    /// The last frame: close with this reason (an answer to the client's
    /// own close, or a protocol fault), then end.
    Close(Option<CloseReason>),
}

/// When the client last sent anything (a pong, or any frame), seen by the
/// reader and read by the writer to tell a silent client from a live one.
#[derive(Debug)]
struct Liveness {
    started: Instant,
    /// Milliseconds since `started`.
    heard_at: AtomicU64,
    /// Set once the writer has sent a close frame of its own: what the
    /// client sends after that, but its answering close, is not acted on
    /// (RFC 6455, 5.5.1), so nothing is published that no ack would report.
    closing: AtomicBool,
}

impl Liveness {
    fn new() -> Self {
        Liveness {
            started: Instant::now(),
            heard_at: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn heard(&self) {
        self.heard_at.store(self.now(), Ordering::Relaxed);
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn heard_since(&self, at: u64) -> bool {
        self.heard_at.load(Ordering::Relaxed) >= at
    }
}

/// Starts serving an upgraded connection: spawns the reader, and returns
/// the writer, to be the upgrade's response body.
pub fn start(
    state: web::Data<AppState>,
    settings: &WsSettings,
    caller: Caller,
    room: RoomName,
    frames: MessageStream,
    session: StreamSession,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Unpin + 'static {
    let (replies, queued) = mpsc::channel(REPLIES_QUEUED);
    let liveness = std::sync::Arc::new(Liveness::new());
    let heartbeat = state.config.heartbeat;
    let shutdown_timeout = state.config.shutdown_timeout;
    let reader = Reader::new(
        state,
        settings,
        caller,
        room,
        frames,
        replies,
        std::sync::Arc::clone(&liveness),
    );
    actix_web::rt::spawn(reader.run());
    outgoing(session, queued, liveness, heartbeat, shutdown_timeout)
}
