//! A streaming client's view of a room: replay, then live, exactly once.
//!
//! The subscription joins the room's fan-out *before* reading what it must
//! replay, so nothing published meanwhile can fall between the two; anything
//! seen twice is dropped by id (`cursor` is the last id handed out).
//!
//! Slow clients: the queue is bounded. When it is full, the hub drops the
//! subscriber from the fan-out (its queue then closes once drained). The
//! subscription notices, joins again and catches up from the ring or
//! history. If even history no longer reaches back to its cursor, the client
//! is too slow to serve and the subscription ends with
//! [`SubscriptionEnded::TooSlow`]; the client reconnects with its cursor and
//! is told about the gap. A client that takes no data at all never gets to
//! notice; the hub cuts its connection instead (see `Slot::evict`), which is
//! why every message taken from the queue counts as progress.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::entry::{Entry, Gap, Page, Socket};
use super::group::SlotShared;
use super::relay::Relay;
use super::room::Room;
use super::rooms::{READ_BATCH, Rooms};
use crate::broker::BrokerError;

/// A read from the ring or history that outlives the `next()` call that
/// started it.
type Read = Pin<Box<dyn Future<Output = Result<Page, BrokerError>> + Send>>;

/// What a subscription hands its transport next.
#[derive(Debug)]
pub enum Delivery {
    /// `live` is false for replayed messages (their delivery latency says
    /// nothing about the system, so it is not measured).
    Message { entry: Arc<Entry>, live: bool },
    /// The ids between `after` and `resume_from` are gone; say so first.
    Gap(Gap),
}

/// Why a subscription cannot go on. The transport ends the connection and
/// the client reconnects with its cursor.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionEnded {
    #[error("client fell further behind than history reaches")]
    TooSlow,
    #[error("cannot catch up: {0}")]
    Broker(#[from] BrokerError),
}

pub struct Subscription {
    hub: Arc<Rooms>,
    room: Arc<Room>,
    /// Hands this subscriber its messages, on the thread it joined from.
    relay: Arc<Relay>,
    slot: Arc<SlotShared>,
    queue: mpsc::Receiver<Arc<Entry>>,
    socket: Option<Socket>,
    /// The last id handed out.
    cursor: u64,
    /// Read from the ring or history, not yet handed out.
    backlog: VecDeque<Arc<Entry>>,
    /// Whether history must be read before taking from the queue again.
    catching_up: bool,
    /// The catch-up read under way. Kept across calls: when `next()` is
    /// cancelled (a WebSocket frame arrived first), the read resumes instead
    /// of starting over, so a chatty client cannot make the server re-read
    /// history again and again.
    reading: Option<Read>,
    /// Set after being dropped for a full queue: a gap found while catching
    /// up then means the client is too slow, not that history was lost.
    lagged: bool,
}

impl Subscription {
    pub(super) async fn start(
        hub: Arc<Rooms>,
        room: Arc<Room>,
        after: Option<u64>,
        socket: Option<Socket>,
    ) -> Result<Self, BrokerError> {
        let relay = Relay::current(&hub);
        let (room, slot, queue, last) = join(&hub, &relay, room, socket.clone()).await?;
        Ok(Subscription {
            hub,
            room,
            relay,
            slot,
            queue,
            socket,
            cursor: after.unwrap_or(last),
            backlog: VecDeque::new(),
            catching_up: true,
            reading: None,
            lagged: false,
        })
    }

    /// The last id handed out: the client's resume cursor.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The next thing to send. Cancel-safe: state only changes after each
    /// await completes, so it may sit in a `select!`.
    pub async fn next(&mut self) -> Result<Delivery, SubscriptionEnded> {
        loop {
            if let Some(entry) = self.backlog.pop_front() {
                if entry.id() > self.cursor {
                    self.cursor = entry.id();
                    return Ok(Delivery::Message { entry, live: false });
                }
                continue;
            }
            if self.catching_up {
                if let Some(gap) = self.catch_up().await? {
                    return Ok(Delivery::Gap(gap));
                }
                continue;
            }
            let next = self.queue.recv().await;
            if next.is_some() {
                self.slot.took_one();
            }
            match next {
                Some(entry) if entry.id() <= self.cursor => {}
                Some(entry) if entry.id() == self.cursor + 1 => {
                    self.cursor = entry.id();
                    return Ok(Delivery::Message { entry, live: true });
                }
                // A jump: the room's ring started over because ids were lost.
                // History says what is left.
                Some(_) => self.catching_up = true,
                None => self.rejoin().await?,
            }
        }
    }

    /// Reads the next batch after the cursor into the backlog. Caught up once
    /// a read comes back empty.
    async fn catch_up(&mut self) -> Result<Option<Gap>, SubscriptionEnded> {
        let read = match &mut self.reading {
            Some(read) => read,
            unstarted => {
                let (hub, room, cursor) =
                    (Arc::clone(&self.hub), Arc::clone(&self.room), self.cursor);
                unstarted.insert(Box::pin(async move {
                    hub.read_after(&room, cursor, READ_BATCH).await
                }))
            }
        };
        let page = read.as_mut().await;
        self.reading = None;
        let page = page?;
        if page.is_empty() {
            self.catching_up = false;
            self.lagged = false;
            return Ok(None);
        }
        self.backlog.extend(page.entries);
        match page.gap {
            Some(_) if self.lagged => Err(SubscriptionEnded::TooSlow),
            Some(gap) => {
                self.cursor = gap.resume_from - 1;
                Ok(Some(gap))
            }
            None => Ok(None),
        }
    }

    /// Joins the fan-out again after being dropped from it for a full queue.
    async fn rejoin(&mut self) -> Result<(), BrokerError> {
        self.slot.noticed();
        self.room.leave(&self.relay, &self.slot);
        let (room, slot, queue, _) = join(
            &self.hub,
            &self.relay,
            Arc::clone(&self.room),
            self.socket.clone(),
        )
        .await?;
        (self.room, self.slot, self.queue) = (room, slot, queue);
        self.catching_up = true;
        self.lagged = true;
        Ok(())
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("room", &self.room.name)
            .field("cursor", &self.cursor)
            .field("catching_up", &self.catching_up)
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Stands down a slow-client timer that may be running: the
        // connection may live on for another request.
        self.slot.noticed();
        self.room.leave(&self.relay, &self.slot);
    }
}

/// What joining a room's fan-out gives: the room, the slot, its queue and the
/// room's last id at the moment of joining.
type Joined = (Arc<Room>, Arc<SlotShared>, mpsc::Receiver<Arc<Entry>>, u64);

/// Joins the room's fan-out once it knows its position, looking the room up
/// again if it was retired meanwhile (the sweeper drops unused rooms).
async fn join(
    hub: &Rooms,
    relay: &Arc<Relay>,
    mut room: Arc<Room>,
    socket: Option<Socket>,
) -> Result<Joined, BrokerError> {
    loop {
        hub.sync(&room).await?;
        if let Some((slot, queue, last)) = room.join(relay, &hub.policy, socket.clone()) {
            return Ok((room, slot, queue, last));
        }
        room = hub.room(&room.name);
    }
}
