//! A room's messages over any transport, delivered once each and in order
//! across disconnections, restarts and instances.
//!
//! A [`Subscription`] keeps a cursor (the id of the last message it
//! delivered), opens a connection that resumes after it, and when the
//! connection ends, waits a backoff and opens another at the next base,
//! resuming from where it got to. What a new connection replays that was
//! already delivered is dropped (and counted): ids are gap-free, so the
//! cursor alone says what is new. Gaps the server announces are passed on.
//!
//! - `cursor`: the cursor and the duplicate rule;
//! - `link`: one connection of any transport as one sequence;
//! - `driver`: the reconnecting loop;
//! - `handoff`: the loop as a `Stream`.

mod cursor;
mod driver;
mod handoff;
mod link;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use reqwest::Url;
use wire::{Gap, Message, RoomName};

use self::cursor::Progress;
use self::driver::Driver;
use self::handoff::Handoff;
use crate::client::Client;
use crate::error::ApiError;
use crate::payload::Payload;
use crate::transport::Transport;

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the messages published from now on. The subscription first
    /// reads where the room is (its last id, with one history request), so
    /// that even a reconnect before the first message resumes exactly.
    Live,
    /// With the messages after this id (0: the room's whole history that
    /// is still held).
    After(u64),
}

/// What a subscription saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<M = Message> {
    /// A message after the cursor: the next one, unless a gap came first
    /// or ids were skipped by the server.
    Message(M),
    /// Messages after `gap.after` and before `gap.resume_from` are gone for
    /// good (history no longer reaches back, or the room lost its ids).
    Gap(Gap),
    /// A connection is open at `base` (for long polling: polls go there
    /// now).
    Connected { base: Url },
    /// The connection at `base` ended, or could not be opened. Unless
    /// [`Disconnect::is_final`], the subscription reconnects after a
    /// backoff, at the next base.
    Disconnected { base: Url, reason: Disconnect },
}

/// Why a connection ended. More reasons may come (e.g. with
/// authentication), hence `non_exhaustive`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disconnect {
    /// SSE: the server ended the stream (as an instance does when it stops).
    StreamEnded,
    /// WebSocket: a close frame with this code and reason (see
    /// [`wire::close`]).
    Closed { code: u16, reason: String },
    /// Long polling: a held poll answered `204` with `Connection: close`
    /// (the instance is stopping).
    PollReleased,
    /// An error status instead of a stream, a socket or a poll answer.
    Status(ApiError),
    /// The connection failed or broke: refused, reset, silent for too long,
    /// or saying what the API does not allow.
    Failed(String),
}

impl Disconnect {
    /// Whether the subscription stops after this: a WebSocket close code
    /// that says not to reconnect ([`wire::close::reconnects`]), or an
    /// error status that reconnecting cannot change (a `4xx` other than
    /// `408` and `429`: a bad token stays bad).
    pub fn is_final(&self) -> bool {
        match self {
            Disconnect::Closed { code, .. } => !wire::close::reconnects(*code),
            Disconnect::Status(api) => {
                (400..500).contains(&api.status) && !matches!(api.status, 408 | 429)
            }
            Disconnect::StreamEnded | Disconnect::PollReleased | Disconnect::Failed(_) => false,
        }
    }

    /// How long the server asked to be left alone, if it did.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Disconnect::Status(api) => api.retry_after,
            _ => None,
        }
    }
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disconnect::StreamEnded => f.write_str("the server ended the stream"),
            Disconnect::Closed { code, reason } => write!(f, "closed with {code}: {reason}"),
            Disconnect::PollReleased => f.write_str("the instance released the poll"),
            Disconnect::Status(api) => write!(f, "{api}"),
            Disconnect::Failed(detail) => write!(f, "connection failed: {detail}"),
        }
    }
}

/// A running subscription to a room: a [`Stream`] of [`Event`]s that ends
/// only after a final disconnection.
///
/// It does its work while it is polled (there is no background task), so
/// dropping it closes its connection at once.
pub struct Subscription<M = Message> {
    events: Handoff<Event<M>>,
    progress: Arc<Progress>,
}

impl<M: Payload> Subscription<M> {
    fn new(client: Client, transport: Transport, room: RoomName, start: Start) -> Self {
        let mut driver = Driver::new(client, transport, room, start);
        let progress = driver.cursor().progress();
        let events = Handoff::new(|sender| async move {
            while let Some(event) = driver.next().await {
                sender.send(event).await;
            }
        });
        Subscription { events, progress }
    }

    /// The next event; `None` once the subscription has stopped.
    /// Cancel-safe: an unfinished call loses nothing.
    pub async fn next(&mut self) -> Option<Event<M>> {
        self.events.next().await
    }

    /// The id of the last message delivered (or, after a gap, the id just
    /// before where delivery resumes): where a new subscription would start
    /// to go on from here. `None` for a live start whose position is not
    /// known yet.
    pub fn cursor(&self) -> Option<u64> {
        self.progress.cursor()
    }

    /// How many messages the server sent at or below the cursor, which
    /// were dropped. A server of this API never sends any: a count above 0
    /// is a server bug (tests and the load tester check it).
    pub fn duplicates_dropped(&self) -> u64 {
        self.progress.duplicates()
    }
}

impl<M> Stream for Subscription<M> {
    type Item = Event<M>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event<M>>> {
        self.events.poll_next_unpin(cx)
    }
}

impl<M> fmt::Debug for Subscription<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("cursor", &self.progress.cursor())
            .field("duplicates_dropped", &self.progress.duplicates())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Subscribes to `room` over `transport`, with messages parsed into
    /// [`Message`]s. Nothing is sent until the first `next()`.
    pub fn subscribe(&self, transport: Transport, room: &RoomName, start: Start) -> Subscription {
        self.subscribe_as(transport, room, start)
    }

    /// Subscribes with messages handed over as `M`: [`RawMessage`](crate::RawMessage)
    /// for the JSON as it came, or a type of your own that reads only the
    /// fields you need.
    pub fn subscribe_as<M: Payload>(
        &self,
        transport: Transport,
        room: &RoomName,
        start: Start,
    ) -> Subscription<M> {
        Subscription::new(self.clone(), transport, room.clone(), start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> Disconnect {
        Disconnect::Status(ApiError {
            status,
            body: None,
            retry_after: None,
        })
    }

    #[test]
    fn close_codes_that_say_stop_are_final() {
        let closed = |code| Disconnect::Closed {
            code,
            reason: String::new(),
        };
        assert!(closed(1000).is_final());
        assert!(closed(1008).is_final());
        assert!(!closed(1012).is_final());
        assert!(!closed(1013).is_final());
        assert!(!closed(1006).is_final());
    }

    #[test]
    fn client_errors_are_final_but_timeouts_and_rate_limits_are_not() {
        assert!(status(401).is_final());
        assert!(status(403).is_final());
        assert!(!status(408).is_final());
        assert!(!status(429).is_final());
        assert!(!status(503).is_final());
    }

    #[test]
    fn streams_that_end_and_broken_connections_are_not_final() {
        assert!(!Disconnect::StreamEnded.is_final());
        assert!(!Disconnect::PollReleased.is_final());
        assert!(!Disconnect::Failed("reset".into()).is_final());
    }
}
