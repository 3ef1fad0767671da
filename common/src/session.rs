//! A streaming client's connection, whatever the transport: an SSE stream or
//! a WebSocket.
//!
//! A [`StreamSession`] owns everything the two have in common: the hub
//! [`Subscription`] (replay from the cursor, then live, each message exactly
//! once), the connected-clients gauge, delivery metrics, the heartbeat
//! timer, shutdown, and the slow-client disconnector (the connection's
//! socket, handed to the hub so it can cut a client that takes nothing).
//! A transport only turns each [`SessionEvent`] into its own bytes and says
//! goodbye its own way when the session [ends](Ending).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::HttpRequest;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use wire::close::{self, Goodbye};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::{AppState, Disconnector};
use crate::hub::{Delivery, Entry, Gap, Socket, Subscription, SubscriptionEnded};
use crate::limits::ConnectionPermit;
use crate::message::RoomName;
use crate::metrics::Metrics;
use crate::quiet::Quiet;

/// What a transport sends next.
#[derive(Debug)]
pub enum SessionEvent {
    /// A message, framed for this transport when it entered the hub.
    Message(Arc<Entry>),
    /// Ids were lost; say so before what follows.
    Gap(Gap),
    /// `HEARTBEAT_SECS` passed: a keep-alive (SSE) or a ping (WebSocket).
    Heartbeat,
    /// The session is over; the transport says goodbye and ends the
    /// connection.
    End(Ending),
}

/// Why a session ends. Every ending asks the client to come back with its
/// cursor; the transport decides how to say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The instance is stopping: reconnect (elsewhere).
    ShuttingDown,
    /// The client fell further behind than history reaches.
    TooSlow,
    /// Catching the client up needs history, which the broker cannot serve
    /// right now.
    HistoryUnavailable,
    /// The token the connection was opened with expired: reconnect with a
    /// fresh one.
    TokenExpired,
    /// This instance lost the broker for longer than its grace: reconnect
    /// elsewhere.
    BrokerLost,
}

impl Ending {
    /// How a WebSocket says it (the close code and reason).
    pub fn goodbye(self) -> Goodbye {
        match self {
            Ending::ShuttingDown => close::RESTART,
            Ending::TooSlow => close::TRY_AGAIN,
            Ending::HistoryUnavailable => close::CANNOT_CATCH_UP,
            Ending::TokenExpired => close::TOKEN_EXPIRED,
            Ending::BrokerLost => close::BROKER_LOST,
        }
    }
}

/// One streaming client's session; see the module docs.
pub struct StreamSession {
    subscription: Subscription,
    heartbeat: Interval,
    /// The endings that come from outside the stream: shutdown, this
    /// instance sending its clients elsewhere, the caller's token expiring
    /// (a timer per connection, not a scan of them all). Made once and
    /// kept (a token's `cancelled()` future registers with the token when
    /// first polled), and [`Quiet`]: it sits beside every delivery in
    /// `next`, and polling a token locks mutexes every connection shares.
    ending: Quiet<Ending>,
    metrics: Metrics,
    /// The client's place among the connections, held as long as the
    /// session lives.
    _permit: ConnectionPermit,
}

impl StreamSession {
    /// Subscribes `caller`, on the connection carrying `request`, to `room`
    /// after `cursor` (or, with none, to what is published from now on).
    /// Fails if the caller may not read the room or hold another connection,
    /// or if the broker cannot say where the room stands (a transient error:
    /// the client should come back shortly).
    pub async fn open(
        state: &AppState,
        request: &HttpRequest,
        caller: &Caller,
        room: &RoomName,
        cursor: Option<u64>,
    ) -> Result<Self, ApiError> {
        caller.may_read(room)?;
        let permit = state.admit(caller.client())?;
        let socket = Disconnector::for_request(request).map(|socket| Arc::new(socket) as Socket);
        let subscription = state.hub.subscribe(room, cursor, socket).await?;
        let every = state.config.heartbeat;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(StreamSession {
            subscription,
            heartbeat,
            ending: Quiet::new(ending_from_outside(state, caller)),
            metrics: state.metrics.clone(),
            _permit: permit,
        })
    }

    /// The last id handed out: the client's resume cursor.
    pub fn cursor(&self) -> u64 {
        self.subscription.cursor()
    }

    /// What to send next. Cancel-safe, so a transport may wait on it beside
    /// other things (a WebSocket's incoming frames); no source can starve
    /// another.
    pub async fn next(&mut self) -> SessionEvent {
        tokio::select! {
            biased;
            ending = &mut self.ending => SessionEvent::End(ending),
            delivery = self.subscription.next() => self.on_delivery(delivery),
            _ = self.heartbeat.tick() => SessionEvent::Heartbeat,
        }
    }

    fn on_delivery(&self, delivery: Result<Delivery, SubscriptionEnded>) -> SessionEvent {
        match delivery {
            Ok(Delivery::Message { entry, live }) => {
                self.metrics.record_delivery(entry.ts(), live);
                SessionEvent::Message(entry)
            }
            Ok(Delivery::Gap(gap)) => SessionEvent::Gap(gap),
            Err(ended) => {
                log::info!("ending a session at id {}: {ended}", self.cursor());
                SessionEvent::End(match ended {
                    SubscriptionEnded::TooSlow => Ending::TooSlow,
                    SubscriptionEnded::Broker(_) => Ending::HistoryUnavailable,
                })
            }
        }
    }
}

/// Resolves with the first of the endings that come from outside a stream:
/// shutdown, evacuation, or the caller's token expiring.
fn ending_from_outside(
    state: &AppState,
    caller: &Caller,
) -> impl Future<Output = Ending> + Send + 'static {
    let shutdown = state.shutdown.clone().cancelled_owned();
    let evacuate = state.evacuation.token().cancelled_owned();
    let expiry = caller
        .expires()
        .map(|at| tokio::time::sleep_until(instant_of(at)));
    async move {
        let expired = async {
            match expiry {
                Some(expiry) => expiry.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shutdown => Ending::ShuttingDown,
            () = evacuate => Ending::BrokerLost,
            () = expired => Ending::TokenExpired,
        }
    }
}

/// The monotonic instant of a wall-clock time (now, if it is past).
pub fn instant_of(at: SystemTime) -> Instant {
    // Further than any timer needs to look (and than `Instant` can add).
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
    Instant::now() + left.min(FAR)
}

impl std::fmt::Debug for StreamSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSession")
            .field("cursor", &self.cursor())
            .finish_non_exhaustive()
    }
}
