//! The loop behind a subscription: connect, deliver what is new, notice the
//! end, wait a backoff, move to the next base, resume from the cursor.
//!
//! It runs inside the subscription's `next()`, not in a task of its own:
//! nothing happens while the caller is not asking (so a caller that stops
//! reading applies backpressure to the server, like any slow client), and
//! dropping the subscription drops the connection with it.

use std::time::Duration;

use reqwest::Url;
use tokio::time::Instant;
use wire::RoomName;

use super::cursor::Cursor;
use super::link::{Item, Link};
use super::{Disconnect, Event, Start};
use crate::backoff::Retry;
use crate::client::Client;
use crate::payload::Payload;
use crate::transport::Transport;

pub(super) struct Driver<M> {
    client: Client,
    transport: Transport,
    room: RoomName,
    cursor: Cursor,
    /// The base to connect to next (an index into the client's bases,
    /// counting round).
    base_index: usize,
    retry: Retry,
    /// The wait before the next connect, after a disconnection.
    wait: Option<Duration>,
    connection: Option<Connection<M>>,
    /// No connection has been opened yet.
    first: bool,
    /// The last disconnection was final: nothing more will come.
    finished: bool,
}

/// The open connection and what it has shown of its health.
struct Connection<M> {
    link: Link<M>,
    base: Url,
    opened: Instant,
    delivered: bool,
}

impl<M: Payload> Driver<M> {
    pub(super) fn new(client: Client, transport: Transport, room: RoomName, start: Start) -> Self {
        let start = match start {
            Start::Live => None,
            Start::After(id) => Some(id),
        };
        let retry = Retry::new(client.settings().backoff);
        Driver {
            client,
            transport,
            room,
            cursor: Cursor::new(start),
            base_index: 0,
            retry,
            wait: None,
            connection: None,
            first: true,
            finished: false,
        }
    }

    pub(super) fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// The next event; `None` once a disconnection was final.
    pub(super) async fn next(&mut self) -> Option<Event<M>> {
        loop {
            if self.finished {
                return None;
            }
            let Some(connection) = &mut self.connection else {
                // Boxed: connecting takes kilobytes of future (a WebSocket
                // handshake), which would otherwise be part of, and copied
                // with, the future of every event.
                return Some(Box::pin(self.connect()).await);
            };
            // A connection is opened only once the cursor is known.
            let cursor = self.cursor.position().unwrap_or_default();
            match connection.link.next(cursor).await {
                Item::Message(message) => {
                    if self.cursor.accept(message.id()) {
                        connection.delivered = true;
                        return Some(Event::Message(message));
                    }
                }
                Item::Gap(gap) => {
                    self.cursor.gap(gap);
                    connection.delivered = true;
                    return Some(Event::Gap(gap));
                }
                Item::Ended(reason) => {
                    // A connection that delivered, or lasted, was healthy:
                    // the next one starts from the first backoff step. One
                    // that ended at once (a server that accepts and then
                    // drops) keeps backing off.
                    let healthy = connection.delivered
                        || connection.opened.elapsed() >= self.client.settings().backoff.max();
                    let base = connection.base.clone();
                    self.connection = None;
                    return Some(self.ended(base, reason, healthy));
                }
            }
        }
    }

    /// Waits out the backoff, then opens a connection at the next base.
    async fn connect(&mut self) -> Event<M> {
        if let Some(wait) = self.wait.take() {
            tokio::time::sleep(wait).await;
        }
        let base = self.client.base(self.base_index).clone();
        let cursor = match self.cursor.position() {
            Some(cursor) => cursor,
            None => match self.find_live_position(&base).await {
                Ok(cursor) => cursor,
                Err(reason) => return self.ended(base, reason, false),
            },
        };
        match Link::open(
            self.transport,
            &self.client,
            &base,
            &self.room,
            cursor,
            self.first,
        )
        .await
        {
            Ok(link) => {
                self.first = false;
                self.connection = Some(Connection {
                    link,
                    base: base.clone(),
                    opened: Instant::now(),
                    delivered: false,
                });
                Event::Connected { base }
            }
            Err(reason) => self.ended(base, reason, false),
        }
    }

    /// Where the room is now, for a live start: its last id (0 for a room
    /// without messages). The protocol tells a live connection nothing
    /// about where it started, so without this a reconnect before the first
    /// message could not resume exactly; with it, a live start is simply a
    /// start after this id.
    async fn find_live_position(&mut self, base: &Url) -> Result<u64, Disconnect> {
        let history = self
            .client
            .history_at::<M>(base, &self.room, None, Some(1))
            .await?;
        let last = history.messages.last().map_or(0, Payload::id);
        self.cursor.start_at(last);
        Ok(last)
    }

    /// A connection (or an attempt) ended: stop for good, or schedule the
    /// next attempt at the next base.
    fn ended(&mut self, base: Url, reason: Disconnect, healthy: bool) -> Event<M> {
        if reason.is_final() {
            self.finished = true;
        } else {
            if healthy {
                self.retry.reset();
            }
            self.wait = Some(self.retry.next_delay(reason.retry_after()));
            self.base_index += 1;
        }
        Event::Disconnected { base, reason }
    }
}
