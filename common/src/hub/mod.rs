//! The per-instance hub: fans messages out to this instance's clients.
//!
//! The broker feeds the hub every message of every room, in order, through
//! one task ([`ingest`]). Per room the hub keeps a contiguous ring of recent
//! messages, the last id, the streaming subscribers' queues and a wake-up
//! for long polls (see [`room`]). Each message is serialized once, and framed
//! once for this instance's transport, when it enters the hub; every client
//! gets a pointer to the same bytes.
//!
//! Ordering and completeness rest on ids being gap-free per room:
//! - a message whose id skips ahead makes the hub fetch the missing ones from
//!   history before delivering it;
//! - after the subscription reconnects, every room is caught up from
//!   history, and its sequence in Redis is raised back to what this instance
//!   has seen if Redis lost it;
//! - readers ask for "everything after id N"; the ring answers when it
//!   covers N, history otherwise, and a cursor older than history (or newer
//!   than the room's sequence) is answered with an explicit [`Gap`].

mod room;
mod subscription;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytestring::ByteString;
use futures_util::StreamExt;
use prometheus::IntCounter;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::room::{Append, IfBehind, RingRead, Room};
pub use self::subscription::{Delivery, Subscription, SubscriptionEnded};
use crate::backoff::Backoff;
use crate::broker::{Broker, BrokerError, Feed};
use crate::message::{Draft, Message, RoomName};

/// How this instance's transport wraps a message's JSON: the bytes before
/// it and after it (an SSE event's `id:`/`data:` lines, a WebSocket frame's
/// envelope, or nothing for plain JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing {
    pub prefix: String,
    pub suffix: &'static str,
}

/// Frames a message for this instance's transport.
pub type Framer = fn(&Message) -> Framing;

/// A streaming client's socket, as far as the hub needs it: to tell whether
/// the client still takes data, and to cut it off when it does not (see
/// [`crate::http::Disconnector`]).
pub trait ClientSocket: Send + Sync + std::fmt::Debug {
    /// Bytes the kernel still holds for the client: sent but not yet
    /// acknowledged, or not sent yet. `None` if it cannot tell.
    fn unsent_bytes(&self) -> Option<u64>;

    /// Shuts the connection down both ways.
    fn cut(&self);
}

/// A shared [`ClientSocket`].
pub type Socket = Arc<dyn ClientSocket>;

/// A message ready for clients: serialized once and framed once, in one
/// buffer (the JSON is a slice of the frame), shared by every recipient.
#[derive(Debug)]
pub struct Entry {
    pub id: u64,
    /// The message's acceptance time, ms since the epoch.
    pub ts: u64,
    /// The message as this instance's transport writes it.
    pub frame: ByteString,
    /// The message as JSON (the API's `Message` object), within `frame`.
    pub json: ByteString,
}

impl Entry {
    pub fn new(message: &Message, framer: Framer) -> Arc<Self> {
        // A Message is strings and integers only, which always serialize.
        let json = serde_json::to_string(message).unwrap_or_default();
        let Framing { prefix, suffix } = framer(message);
        let mut buffer = String::with_capacity(prefix.len() + json.len() + suffix.len());
        buffer.push_str(&prefix);
        buffer.push_str(&json);
        buffer.push_str(suffix);
        let frame = ByteString::from(buffer);
        let json = frame.slice_ref(&frame[prefix.len()..prefix.len() + json.len()]);
        Arc::new(Entry {
            id: message.id,
            ts: message.ts,
            frame,
            json,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }
}

/// A resume cursor older than anything still held, or ahead of the room's
/// sequence: the ids in between will never be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The cursor the client asked to resume after.
    pub after: u64,
    /// The first id that will be delivered.
    pub resume_from: u64,
}

/// Messages after a cursor, oldest first, and whether some were lost.
#[derive(Debug, Default)]
pub struct Page {
    pub entries: Vec<Arc<Entry>>,
    pub gap: Option<Gap>,
}

impl Page {
    /// The cursor to continue from after this page.
    pub fn cursor(&self, after: u64) -> u64 {
        match (self.entries.last(), self.gap) {
            (Some(last), _) => last.id(),
            (None, Some(gap)) => gap.resume_from - 1,
            (None, None) => after,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.gap.is_none()
    }
}

/// Counters the hub reports into `/metrics`.
#[derive(Debug, Clone)]
pub struct HubMetrics {
    /// Streaming clients dropped from the fan-out because their queue was full.
    pub slow_clients: IntCounter,
    /// Of those, the ones that took no data at all and were disconnected.
    pub slow_clients_disconnected: IntCounter,
}

/// Sizes and timings of the hub.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Recent messages kept per room.
    pub ring_len: usize,
    /// Messages a streaming subscriber may have waiting.
    pub queue_len: usize,
    /// How long a subscriber dropped for a full queue has to start taking
    /// data again before its connection is cut.
    pub slow_client_timeout: Duration,
    /// How long an unused room stays in memory after its last message.
    pub room_idle: Duration,
}

/// The settings every room applies, bundled with the counters it bumps.
#[derive(Debug)]
struct Policy {
    ring_len: usize,
    queue_len: usize,
    slow_client_timeout: Duration,
    metrics: HubMetrics,
}

/// How many messages one replay or catch-up read asks for.
pub const READ_BATCH: usize = 500;
/// How often unused rooms are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Rooms re-synced at once after a reconnect.
const RESYNC_CONCURRENCY: usize = 16;
/// Reads of a gap from history before giving up on it.
const GAP_FILL_ATTEMPTS: u32 = 2;

/// A cloneable handle to the instance's hub.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    broker: Arc<dyn Broker>,
    rooms: Mutex<HashMap<RoomName, Arc<Room>>>,
    framer: Framer,
    policy: Policy,
    room_idle: Duration,
    /// Stops the ingest and sweeper tasks when the last handle is dropped.
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Hub {
    /// Creates the hub and starts listening to the broker. Must be called
    /// within a Tokio runtime, which runs the hub's tasks.
    pub fn start(
        broker: Arc<dyn Broker>,
        settings: HubSettings,
        framer: Framer,
        metrics: HubMetrics,
    ) -> Hub {
        let feed = broker.subscribe();
        let inner = Arc::new(Inner {
            broker,
            rooms: Mutex::new(HashMap::new()),
            framer,
            policy: Policy {
                ring_len: settings.ring_len,
                queue_len: settings.queue_len,
                slow_client_timeout: settings.slow_client_timeout,
                metrics,
            },
            room_idle: settings.room_idle,
            stop: CancellationToken::new(),
        });
        tokio::spawn(ingest(Arc::downgrade(&inner), feed, inner.stop.clone()));
        tokio::spawn(sweep(Arc::downgrade(&inner), inner.stop.clone()));
        Hub { inner }
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// Stores and publishes a message; every instance's hub (this one
    /// included) receives it through the broker.
    pub async fn publish(&self, draft: &Draft) -> Result<Message, BrokerError> {
        let floor = self
            .inner
            .rooms()
            .get(&draft.room)
            .and_then(|room| room.last())
            .unwrap_or(0);
        self.inner.broker.publish(draft, floor).await
    }

    /// The room's last id as this instance knows it.
    pub async fn last_id(&self, room: &RoomName) -> Result<u64, BrokerError> {
        let room = self.inner.synced_room(room).await?;
        Ok(room.last().unwrap_or(0))
    }

    /// Up to `limit` messages with `id > after`, oldest first, with a
    /// [`Gap`] if some of them are gone for good.
    pub async fn read_after(
        &self,
        room: &RoomName,
        after: u64,
        limit: usize,
    ) -> Result<Page, BrokerError> {
        let room = self.inner.synced_room(room).await?;
        self.inner.read_after(&room, after, limit).await
    }

    /// The latest `limit` messages, oldest first.
    pub async fn latest(
        &self,
        room: &RoomName,
        limit: usize,
    ) -> Result<Vec<Arc<Entry>>, BrokerError> {
        let room = self.inner.synced_room(room).await?;
        if let Some(entries) = room.latest(limit) {
            return Ok(entries);
        }
        let stored = self.inner.broker.read_latest(&room.name, limit).await?;
        // Normally history holds everything the ring does; after Redis lost
        // data the ring may know newer messages, so take the union.
        let mut by_id: BTreeMap<u64, Arc<Entry>> = stored
            .into_iter()
            .map(|message| (message.id, Entry::new(&message, self.inner.framer)))
            .collect();
        if let Some(recent) = room.latest(usize::MAX) {
            by_id.extend(recent.into_iter().map(|entry| (entry.id(), entry)));
        }
        let skip = by_id.len().saturating_sub(limit);
        Ok(by_id.into_values().skip(skip).collect())
    }

    /// Resolves once the room holds a message with `id > after`.
    /// Cancel-safe: dropping the future drops the wait and nothing else.
    pub async fn wait_beyond(&self, room: &RoomName, after: u64) {
        let mut last_id = loop {
            if let Some(receiver) = self.inner.room(room).watch() {
                break receiver;
            }
        };
        // The sender lives as long as the room, which our receiver keeps in
        // the hub (a watched room is never retired), so this cannot fail.
        let _ = last_id.wait_for(|&last| last > after).await;
    }

    /// Subscribes to a room's messages after `after` (or, without it, after
    /// the room's current last id): replay from the ring or history, then
    /// live, without gap or duplicate. With `socket`, a client that takes no
    /// data at all is cut off; see [`HubSettings::slow_client_timeout`].
    pub async fn subscribe(
        &self,
        room: &RoomName,
        after: Option<u64>,
        socket: Option<Socket>,
    ) -> Result<Subscription, BrokerError> {
        let room = self.inner.room(room);
        Subscription::start(Arc::clone(&self.inner), room, after, socket).await
    }

    /// Rooms this instance currently holds (for tests and metrics).
    pub fn room_count(&self) -> usize {
        self.inner.rooms().len()
    }
}

impl Inner {
    fn rooms(&self) -> MutexGuard<'_, HashMap<RoomName, Arc<Room>>> {
        // Only lookups and inserts happen under this lock; nothing can be
        // left half-done by a panic, so a poisoned lock is still usable.
        self.rooms
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The room, created (unsynced) if this instance has not seen it.
    fn room(&self, name: &RoomName) -> Arc<Room> {
        let mut rooms = self.rooms();
        Arc::clone(
            rooms
                .entry(name.clone())
                .or_insert_with(|| Arc::new(Room::new(name.clone()))),
        )
    }

    async fn synced_room(&self, name: &RoomName) -> Result<Arc<Room>, BrokerError> {
        let room = self.room(name);
        self.sync(&room).await?;
        Ok(room)
    }

    /// Makes sure the room knows its position, asking the broker if no
    /// message has told it yet.
    async fn sync(&self, room: &Room) -> Result<(), BrokerError> {
        if !room.is_synced() {
            let sequence = self.broker.sequence(&room.name, 0).await?;
            room.sync_to(sequence.current);
        }
        Ok(())
    }

    async fn read_after(&self, room: &Room, after: u64, limit: usize) -> Result<Page, BrokerError> {
        let (ring_head, last) = match room.read(after, limit) {
            RingRead::Served(entries) => return Ok(Page { entries, gap: None }),
            RingRead::AtEnd => return Ok(Page::default()),
            RingRead::Ahead => return Ok(self.read_ahead(room, after).await),
            RingRead::Older { head, last } => (head, last),
        };
        let stored = self.broker.read_after(&room.name, after, limit).await?;
        let stored_first = stored.first().map(|message| message.id);
        let entries =
            |stored: Vec<Message>| stored.iter().map(|m| Entry::new(m, self.framer)).collect();
        if stored_first == Some(after + 1) {
            return Ok(Page {
                entries: entries(stored),
                gap: None,
            });
        }
        // History no longer reaches back to the cursor. Serve from whichever
        // of ring and history starts earlier (the ring's head was taken
        // with the same look, so it is still contiguous), and say where.
        let ring_first = ring_head.first().map(|entry| entry.id());
        let page = match (ring_first, stored_first) {
            (Some(ring_first), stored_first) if stored_first.is_none_or(|s| ring_first <= s) => {
                Page {
                    entries: ring_head,
                    gap: Some(Gap {
                        after,
                        resume_from: ring_first,
                    }),
                }
            }
            (_, Some(stored_first)) => Page {
                entries: entries(stored),
                gap: Some(Gap {
                    after,
                    resume_from: stored_first,
                }),
            },
            (_, None) => Page {
                entries: Vec::new(),
                gap: Some(Gap {
                    after,
                    resume_from: last + 1,
                }),
            },
        };
        Ok(page)
    }

    /// A cursor beyond this instance's last id: either this instance is a
    /// moment behind (the client heard of a newer message elsewhere), or the
    /// cursor is from before Redis lost its data. The broker's sequence tells.
    async fn read_ahead(&self, room: &Room, after: u64) -> Page {
        match self.broker.sequence(&room.name, 0).await {
            Ok(sequence) if sequence.current < after => Page {
                entries: Vec::new(),
                gap: Some(Gap {
                    after,
                    resume_from: sequence.current + 1,
                }),
            },
            // Behind, or the broker cannot say right now: wait for news.
            _ => Page::default(),
        }
    }

    /// Takes one message from the broker and delivers it, and any messages
    /// pub/sub missed before it, in order.
    async fn accept(&self, message: Message) {
        let room = self.room(&message.room);
        let entry = Entry::new(&message, self.framer);
        let Append::Behind { last } = room.append(&entry, &self.policy, IfBehind::Report) else {
            return;
        };
        let id = entry.id();
        let filled = self.fill(&room.name, last, id).await;
        let filled = filled
            .iter()
            .filter(|m| m.id < id)
            .map(|m| Entry::new(m, self.framer));
        self.deliver_in_order(&room, filled.chain(std::iter::once(entry)));
    }

    /// The messages between `last` and `next` from history. A failed read is
    /// retried once: giving up means the ring starts over at `next` and
    /// clients are told of a gap that may not be real, but every room waits
    /// on this task meanwhile.
    async fn fill(&self, room: &RoomName, last: u64, next: u64) -> Vec<Message> {
        let missing = usize::try_from(next - last - 1).unwrap_or(usize::MAX);
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
        for attempt in 1..=GAP_FILL_ATTEMPTS {
            match self.broker.read_after(room, last, missing).await {
                Ok(found) => return found,
                Err(err) if attempt == GAP_FILL_ATTEMPTS => {
                    log::warn!(
                        "room {room}: cannot fetch ids {}..{next} from history: {err}",
                        last + 1
                    );
                }
                Err(_) => tokio::time::sleep(backoff.next_delay()).await,
            }
        }
        Vec::new()
    }

    /// Appends messages known to be in id order; where one does not follow
    /// on (its predecessors are gone from history), the ring starts over.
    fn deliver_in_order(&self, room: &Room, entries: impl Iterator<Item = Arc<Entry>>) {
        for entry in entries {
            if let Append::Restarted { last } = room.append(&entry, &self.policy, IfBehind::Restart)
            {
                log::warn!(
                    "room {}: ids {}..{} are gone from history; clients resuming there get a gap",
                    room.name,
                    last + 1,
                    entry.id()
                );
            }
        }
    }

    /// After a (re)subscription: for every room held, raise the broker's
    /// sequence back to what this instance has seen (Redis may have lost
    /// it) and fetch what pub/sub missed while it was down.
    /// Returns whether every room was re-synced.
    async fn resync(&self) -> bool {
        let rooms: Vec<Arc<Room>> = self.rooms().values().cloned().collect();
        let failures = std::sync::atomic::AtomicUsize::new(0);
        futures_util::stream::iter(rooms)
            .for_each_concurrent(RESYNC_CONCURRENCY, |room| {
                let failures = &failures;
                async move {
                    if let Err(err) = self.resync_room(&room).await {
                        log::warn!("room {}: re-sync failed, will retry: {err}", room.name);
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
            .await;
        failures.into_inner() == 0
    }

    async fn resync_room(&self, room: &Room) -> Result<(), BrokerError> {
        let Some(last) = room.last() else {
            return Ok(());
        };
        let sequence = self.broker.sequence(&room.name, last).await?;
        if sequence.stored < last {
            log::warn!(
                "room {}: the broker's sequence was {} but this instance has seen id {last}; \
                 it lost data, and ids continue from {}",
                room.name,
                sequence.stored,
                last + 1
            );
        }
        loop {
            let after = room.last().unwrap_or(last);
            let batch = self
                .broker
                .read_after(&room.name, after, READ_BATCH)
                .await?;
            let complete = batch.len() < READ_BATCH;
            self.deliver_in_order(room, batch.into_iter().map(|m| Entry::new(&m, self.framer)));
            if complete {
                return Ok(());
            }
        }
    }

    fn retire_idle_rooms(&self) {
        self.rooms()
            .retain(|_, room| !room.retire_if_idle(self.room_idle));
    }
}

/// The one task that takes the broker's feed, so each room's messages are
/// appended in order by one writer. Re-syncs after a reconnect run in a
/// task of their own (see [`resync_until_done`]), so live messages keep
/// flowing meanwhile; appends check contiguity under the room's lock, so the
/// two never deliver a message twice or out of order.
async fn ingest(hub: Weak<Inner>, mut feed: mpsc::Receiver<Feed>, stop: CancellationToken) {
    let mut resync: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let item = tokio::select! {
            item = feed.recv() => item,
            () = stop.cancelled() => None,
        };
        let (Some(item), Some(inner)) = (item, hub.upgrade()) else {
            break;
        };
        match item {
            Feed::Message(message) => inner.accept(message).await,
            Feed::Resubscribed => {
                // A newer reconnect makes an unfinished re-sync moot.
                if let Some(previous) = resync.take() {
                    previous.abort();
                }
                resync = Some(tokio::spawn(resync_until_done(
                    Weak::clone(&hub),
                    stop.clone(),
                )));
            }
        }
    }
    if let Some(resync) = resync {
        resync.abort();
    }
}

/// Re-syncs every room, retrying with backoff until all succeed (Redis may
/// answer the subscription before it answers commands again).
async fn resync_until_done(hub: Weak<Inner>, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let Some(inner) = hub.upgrade() else { return };
        if inner.resync().await {
            return;
        }
        drop(inner);
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Drops rooms nobody uses, so memory follows the rooms in use rather than
/// every room name ever asked for.
async fn sweep(hub: Weak<Inner>, stop: CancellationToken) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(hub) = hub.upgrade() else { return };
        hub.retire_idle_rooms();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::broker::MemoryBroker;
    use crate::message::{Author, MessageText, Via};

    /// A socket whose unsent bytes the test moves, and that counts cuts.
    #[derive(Debug, Default)]
    struct FakeSocket {
        unsent: AtomicU64,
        cuts: AtomicU64,
    }

    impl ClientSocket for FakeSocket {
        fn unsent_bytes(&self) -> Option<u64> {
            Some(self.unsent.load(Ordering::Relaxed))
        }

        fn cut(&self) {
            self.cuts.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn plain(_: &Message) -> Framing {
        Framing {
            prefix: String::new(),
            suffix: "",
        }
    }

    fn hub(queue_len: usize, slow_client_timeout: Duration) -> Hub {
        let counter = |name: &str| IntCounter::new(name, "test").expect("a counter");
        Hub::start(
            Arc::new(MemoryBroker::new(100)),
            HubSettings {
                ring_len: 10,
                queue_len,
                slow_client_timeout,
                room_idle: Duration::from_secs(600),
            },
            plain,
            HubMetrics {
                slow_clients: counter("slow"),
                slow_clients_disconnected: counter("cut"),
            },
        )
    }

    fn draft(room: &RoomName, text: &str) -> Draft {
        Draft {
            room: room.clone(),
            author: Author::parse(None).expect("anonymous"),
            text: MessageText::parse(Some(text.into()), 100).expect("text"),
            via: Via::Sse,
        }
    }

    /// A subscriber that is never asked for a message, while five are
    /// published: its queue of 2 fills, and it is dropped from the fan-out.
    async fn overflowing_subscriber(hub: &Hub, socket: &Arc<FakeSocket>) -> Subscription {
        let room = RoomName::parse("lagging").expect("a room");
        let socket = Arc::clone(socket) as Socket;
        let subscription = hub
            .subscribe(&room, None, Some(socket))
            .await
            .expect("subscribed");
        for n in 0..5 {
            hub.publish(&draft(&room, &n.to_string()))
                .await
                .expect("published");
        }
        subscription
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_client_is_cut_only_once_it_stops_making_progress() {
        let hub = hub(2, Duration::from_secs(1));
        let socket = Arc::new(FakeSocket::default());
        let _subscription = overflowing_subscriber(&hub, &socket).await;

        // While the kernel's queue for it keeps moving (it reads, slowly),
        // it is left alone, however long that takes.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            socket.unsent.fetch_add(4096, Ordering::Relaxed);
        }
        assert_eq!(
            socket.cuts.load(Ordering::Relaxed),
            0,
            "a reading client is not cut"
        );

        // Once nothing moves for a whole timeout, it is cut.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(socket.cuts.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscriber_that_ends_stands_its_slow_client_timer_down() {
        let hub = hub(2, Duration::from_secs(1));
        let socket = Arc::new(FakeSocket::default());
        let subscription = overflowing_subscriber(&hub, &socket).await;
        tokio::time::sleep(Duration::from_millis(100)).await;

        // The stream ends (the connection may live on for another request).
        drop(subscription);
        tokio::time::sleep(Duration::from_secs(5)).await;

        assert_eq!(socket.cuts.load(Ordering::Relaxed), 0);
    }
}
