//! One WebSocket connection: a task that owns the session and everything
//! about it.
//!
//! The loop waits on four things at once, fairly (none can starve the
//! others): shutdown, the client's next frame, the subscription's next
//! message, and the ping timer. Messages come from
//! the hub through the subscription's bounded queue, so a slow client is
//! caught up from history (or closed with 1013) and never slows anyone
//! else; actix-ws' own queue of 32 frames sits between this task and the
//! socket. Publishes are handled one at a time, in order, so a client that
//! publishes twice gets increasing ids.

use std::time::Duration;

use actix_web::web;
use actix_ws::{CloseCode, CloseReason, Message as Frame, MessageStream, ProtocolError, Session};
use bytestring::ByteString;
use common::RoomName;
use common::close::{self, Goodbye};
use common::http::AppState;
use common::hub::{Delivery, Subscription, SubscriptionEnded};
use common::metrics::ConnectionGuard;
use common::rate_limit::{ConnectionLimiter, Rate};
use tokio::time::{Instant, Interval};

use crate::fragments::{Assembled, FragmentError, Fragments};
use crate::protocol::{self, Reply, Request};

/// How long the close handshake may take before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A client that has sent nothing (not even a pong) for this many heartbeats
/// after a ping is presumed gone. Two, not one: the ping may wait behind a
/// backlog of messages that a slow but healthy client is still reading.
const PONG_TIMEOUT_HEARTBEATS: u32 = 2;

pub struct Connection {
    state: web::Data<AppState>,
    room: RoomName,
    session: Session,
    frames: MessageStream,
    subscription: Subscription,
    limiter: Option<ConnectionLimiter>,
    fragments: Fragments,
    /// When the oldest ping that the client has not answered (with a pong or
    /// any other frame) was sent.
    unanswered_ping: Option<Instant>,
    /// Counts the client as connected for as long as the task runs.
    _connected: ConnectionGuard,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("room", &self.room)
            .field("cursor", &self.subscription.cursor())
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
    ShuttingDown,
    Frame(Option<Result<Frame, ProtocolError>>),
    Delivery(Result<Delivery, SubscriptionEnded>),
    PingDue,
}

impl Connection {
    pub fn new(
        state: web::Data<AppState>,
        room: RoomName,
        session: Session,
        frames: MessageStream,
        subscription: Subscription,
    ) -> Self {
        let config = &state.config;
        Connection {
            frames: frames.max_frame_size(config.ws_max_frame_bytes),
            fragments: Fragments::new(config.ws_max_frame_bytes),
            limiter: Rate::new(config.ws_publish_rate_per_sec, config.ws_publish_burst)
                .map(ConnectionLimiter::new),
            unanswered_ping: None,
            _connected: state.metrics.connection(),
            state,
            room,
            session,
            subscription,
        }
    }

    /// Serves the connection until it ends, then says goodbye.
    pub async fn run(mut self) {
        let mut ping = ping_timer(self.state.config.heartbeat);
        let end = loop {
            let step = match self.next_event(&mut ping).await {
                Event::ShuttingDown => Step::Close(close::RESTART),
                Event::Frame(frame) => self.on_frame(frame).await,
                Event::Delivery(delivery) => self.on_delivery(delivery).await,
                Event::PingDue => self.on_ping_due().await,
            };
            if !matches!(step, Step::Continue) {
                break step;
            }
        };
        let reason = match end {
            Step::Close(goodbye) => {
                log::debug!(
                    "closing a WebSocket at id {}: {}",
                    self.subscription.cursor(),
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
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.session.close(reason)).await;
    }

    async fn next_event(&mut self, ping: &mut Interval) -> Event {
        let Connection {
            state,
            frames,
            subscription,
            ..
        } = self;
        if state.shutdown.is_cancelled() {
            return Event::ShuttingDown;
        }
        // Unbiased: a client that keeps sending cannot starve its own
        // deliveries or the pings, nor a busy room its frames.
        tokio::select! {
            () = state.shutdown.cancelled() => Event::ShuttingDown,
            frame = frames.recv() => Event::Frame(frame),
            delivery = subscription.next() => Event::Delivery(delivery),
            _ = ping.tick() => Event::PingDue,
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
            Frame::Ping(payload) => match self.session.pong(&payload).await {
                Ok(()) => Step::Continue,
                Err(_) => Step::Gone,
            },
            Frame::Pong(_) | Frame::Nop => Step::Continue,
            Frame::Close(reason) => Step::Closed(reason),
        }
    }

    async fn on_text(&mut self, text: &str) -> Step {
        let reply = match protocol::parse(text) {
            Err(bad) => Reply::Error {
                reference: bad.reference.as_ref(),
                error: bad.code,
                detail: &bad.detail,
            }
            .to_text(),
            Ok(Request::Ping { reference }) => Reply::Pong {
                reference: reference.as_ref(),
            }
            .to_text(),
            Ok(Request::Publish { reference, body }) => {
                let published = match self.limiter.as_ref().map(ConnectionLimiter::check) {
                    Some(Err(retry_after)) => Err(common::ApiError::RateLimited { retry_after }),
                    _ => self.state.publish(self.room.clone(), body).await,
                };
                match published {
                    Ok(message) => Reply::Ack {
                        reference: reference.as_ref(),
                        id: message.id,
                    }
                    .to_text(),
                    Err(err) => Reply::Error {
                        reference: reference.as_ref(),
                        error: err.code(),
                        detail: &err.to_string(),
                    }
                    .to_text(),
                }
            }
        };
        self.send(reply).await
    }

    async fn on_delivery(&mut self, delivery: Result<Delivery, SubscriptionEnded>) -> Step {
        match delivery {
            Ok(Delivery::Message { entry, live }) => {
                let step = self.send(entry.frame.clone()).await;
                self.state.metrics.record_delivery(entry.ts, live);
                step
            }
            Ok(Delivery::Gap(gap)) => self.send(Reply::from(gap).to_text()).await,
            Err(ended) => {
                log::info!(
                    "closing a WebSocket at id {}: {ended}",
                    self.subscription.cursor()
                );
                Step::Close(match ended {
                    SubscriptionEnded::TooSlow => close::TRY_AGAIN,
                    SubscriptionEnded::Broker(_) => close::CANNOT_CATCH_UP,
                })
            }
        }
    }

    async fn on_ping_due(&mut self) -> Step {
        let timeout = self.state.config.heartbeat * PONG_TIMEOUT_HEARTBEATS;
        match self.unanswered_ping {
            Some(sent) if sent.elapsed() >= timeout => return Step::Close(close::NO_PONG),
            Some(_) => {}
            None => self.unanswered_ping = Some(Instant::now()),
        }
        match self.session.ping(b"").await {
            Ok(()) => Step::Continue,
            Err(_) => Step::Gone,
        }
    }

    async fn send(&mut self, text: ByteString) -> Step {
        match self.session.text(text).await {
            Ok(()) => Step::Continue,
            Err(_) => Step::Gone,
        }
    }
}

fn ping_timer(every: Duration) -> Interval {
    let mut timer = tokio::time::interval_at(Instant::now() + every, every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}
