//! The per-instance hub: fans messages out to this instance's clients.
//!
//! The broker feeds the hub every message of every room, in order, through
//! one task ([`ingest`]). Per room the hub keeps a contiguous ring of recent
//! messages, the last id, and its clients grouped by the thread serving them
//! (see [`room`] and [`group`]): a message wakes each such thread's
//! [`relay`] once, which hands that thread's streaming subscribers and held
//! polls what they are owed. Each message is serialized once, and framed
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

mod entry;
mod group;
mod relay;
mod room;
mod rooms;
mod subscription;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

pub use self::entry::{ClientSocket, Entry, Framed, Framer, Gap, Page, Socket};
use self::relay::Relay;
pub use self::room::HubMetrics;
use self::room::{HubMemory, Policy, Wait};
use self::rooms::Rooms;
pub use self::subscription::{Delivery, Subscription, SubscriptionEnded};
use crate::backoff::Backoff;
use crate::broker::{Broker, BrokerError, Feed, Published};
use crate::message::{Draft, IdempotencyKey, RoomName};

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
    /// How long a room no client of this instance uses stays in memory.
    pub room_idle: Duration,
    /// Bytes all rooms may hold (their recent messages and bookkeeping).
    pub memory_budget: usize,
}

/// Freeing this much at once is worth handing the memory back to the
/// system: the allocator keeps freed memory for reuse otherwise, and an
/// instance that once held many rooms would look as big forever.
const RELEASE_AFTER_FREEING: usize = 1 << 20;

/// How long a room no client here uses stays subscribed: short, so an
/// instance soon spends nothing on a room its clients left, yet long enough
/// that clients reconnecting (a page reload, a transport switch) do not
/// make it unsubscribe and subscribe again.
const UNWATCH_GRACE: Duration = Duration::from_secs(5);
/// How often the sweeper looks for rooms to unsubscribe, free, or evict.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A cloneable handle to the instance's hub.
#[derive(Debug, Clone)]
pub struct Hub {
    rooms: Arc<Rooms>,
    /// Stops the ingest and sweeper tasks when the last handle is dropped.
    _stop: Arc<StopOnDrop>,
}

#[derive(Debug)]
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
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
        let feed = broker.feed();
        let policy = Policy {
            ring_len: settings.ring_len,
            queue_len: settings.queue_len,
            slow_client_timeout: settings.slow_client_timeout,
            memory: HubMemory::new(settings.memory_budget, metrics.memory_bytes.clone()),
            metrics,
        };
        let stop = CancellationToken::new();
        let rooms = Arc::new(Rooms::new(
            broker,
            framer,
            policy,
            settings.room_idle,
            stop.clone(),
        ));
        let resyncs = Arc::new(Resyncs::default());
        tokio::spawn(ingest(
            Arc::downgrade(&rooms),
            feed,
            Arc::clone(&resyncs),
            stop.clone(),
        ));
        tokio::spawn(resync_rooms(Arc::downgrade(&rooms), resyncs, stop.clone()));
        tokio::spawn(sweep(Arc::downgrade(&rooms), stop.clone()));
        Hub {
            rooms,
            _stop: Arc::new(StopOnDrop(stop)),
        }
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.rooms.broker
    }

    /// Stores and publishes a message (once per idempotency key); every
    /// instance's hub (this one included) receives it through the broker.
    pub async fn publish(
        &self,
        draft: &Draft,
        key: Option<&IdempotencyKey>,
    ) -> Result<Published, BrokerError> {
        let floor = self.rooms.floor(&draft.room);
        let published = self.rooms.broker.publish(draft, key, floor).await?;
        if self.rooms.get(&draft.room).is_none() {
            // Not held here: remember how far the room got, so this
            // instance's next publish in it never takes a lower id, even if
            // Redis loses the room meanwhile.
            self.rooms.remember_floor(&draft.room, published.message.id);
        }
        Ok(published)
    }

    /// The message first published with `key` in `room`, if the key was
    /// used within the idempotency window.
    pub async fn replay(
        &self,
        room: &RoomName,
        key: &IdempotencyKey,
    ) -> Result<Option<crate::message::Message>, BrokerError> {
        self.rooms.broker.replay(room, key).await
    }

    /// The room's last id as this instance knows it.
    pub async fn last_id(&self, room: &RoomName) -> Result<u64, BrokerError> {
        let room = self.rooms.synced_room(room).await?;
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
        let room = self.rooms.synced_room(room).await?;
        self.rooms.read_after(&room, after, limit).await
    }

    /// The latest `limit` messages, oldest first.
    pub async fn latest(
        &self,
        room: &RoomName,
        limit: usize,
    ) -> Result<Vec<Arc<Entry>>, BrokerError> {
        let room = self.rooms.synced_room(room).await?;
        if let Some(entries) = room.latest(limit) {
            return Ok(entries);
        }
        let stored = self.rooms.broker.read_latest(&room.name, limit).await?;
        // Normally history holds everything the ring does; after Redis lost
        // data the ring may know newer messages, so take the union.
        let mut by_id: BTreeMap<u64, Arc<Entry>> = stored
            .into_iter()
            .map(|message| (message.id, Entry::new(&message, self.rooms.framer)))
            .collect();
        if let Some(recent) = room.latest(usize::MAX) {
            by_id.extend(recent.into_iter().map(|entry| (entry.id(), entry)));
        }
        let skip = by_id.len().saturating_sub(limit);
        Ok(by_id.into_values().skip(skip).collect())
    }

    /// Resolves once the room holds a message with `id > after` (or cannot
    /// say where it stands: the caller's next read meets the error).
    /// Cancel-safe: dropping the future drops the wait and nothing else.
    pub async fn wait_beyond(&self, room: &RoomName, after: u64) {
        let relay = Relay::current(&self.rooms);
        let mut room = self.rooms.room(room);
        let woken = loop {
            if self.rooms.sync(&room).await.is_err() {
                return;
            }
            match room.wait(&relay, after) {
                Wait::Beyond => return,
                Wait::Until(woken) => break woken,
                Wait::Retired => room = self.rooms.room(&room.name),
            }
        };
        // The room holds the wait (a room with a wait is never retired), and
        // wakes it with the next message.
        let _ = woken.await;
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
        let room = self.rooms.room(room);
        Subscription::start(Arc::clone(&self.rooms), room, after, socket).await
    }

    /// Rooms this instance currently holds (for tests and metrics).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }
}

/// The one task that takes the broker's feed, so each room's messages are
/// appended in order by one writer. Rooms whose subscription (re)started
/// are caught up from history by a task of their own ([`resync_rooms`]),
/// so live messages keep flowing meanwhile; appends check contiguity under
/// the room's lock, so the two never deliver a message twice or out of
/// order.
async fn ingest(
    hub: Weak<Rooms>,
    mut feed: mpsc::Receiver<Feed>,
    resyncs: Arc<Resyncs>,
    stop: CancellationToken,
) {
    loop {
        let item = tokio::select! {
            item = feed.recv() => item,
            () = stop.cancelled() => None,
        };
        let (Some(item), Some(inner)) = (item, hub.upgrade()) else {
            break;
        };
        match item {
            Feed::Message(message) => {
                inner.policy.metrics.received.inc();
                inner.accept(message).await;
                inner.enforce_budget();
            }
            Feed::Watching(room) => resyncs.request(room),
        }
    }
}

/// Rooms waiting to be caught up from history. A set, not a queue: a room
/// asked for twice is caught up once, and its size follows the rooms held.
#[derive(Debug, Default)]
struct Resyncs {
    /// A std mutex: inserts and a drain, never held across an await.
    pending: Mutex<HashSet<RoomName>>,
    wake: Notify,
}

impl Resyncs {
    fn pending(&self) -> MutexGuard<'_, HashSet<RoomName>> {
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn request(&self, room: RoomName) {
        self.pending().insert(room);
        self.wake.notify_one();
    }
}

/// Catches up the rooms whose subscription (re)started, retrying with
/// backoff those that fail (Redis may answer the subscription before it
/// answers commands again).
async fn resync_rooms(hub: Weak<Rooms>, resyncs: Arc<Resyncs>, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        tokio::select! {
            () = resyncs.wake.notified() => {}
            () = stop.cancelled() => return,
        }
        loop {
            let rooms: Vec<RoomName> = resyncs.pending().drain().collect();
            if rooms.is_empty() {
                backoff.reset();
                break;
            }
            let Some(inner) = hub.upgrade() else { return };
            let failed = inner.resync(rooms).await;
            drop(inner);
            if failed.is_empty() {
                continue;
            }
            resyncs.pending().extend(failed);
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// Hands memory the allocator holds but no longer uses back to the system.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's heap to the
    // kernel; it takes the allocator's own locks and touches no memory in
    // use.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops rooms nobody uses, so memory follows the rooms in use rather than
/// every room name ever asked for.
async fn sweep(hub: Weak<Rooms>, stop: CancellationToken) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(hub) = hub.upgrade() else { return };
        let held_before = hub.memory_used();
        hub.unwatch_unused_rooms(UNWATCH_GRACE);
        hub.retire_idle_rooms(SWEEP_EVERY);
        hub.enforce_budget();
        if hub.memory_used() + RELEASE_AFTER_FREEING < held_before {
            // Off this thread: trimming a large heap takes a while, and
            // this thread also hears the broker.
            tokio::task::spawn_blocking(release_freed_memory);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use prometheus::{IntCounter, IntGauge};

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

    fn plain(_: u64, json: &serde_json::value::RawValue) -> Framed {
        Framed {
            frame: json.get().as_bytes().to_vec(),
            json_at: 0,
        }
    }

    fn hub(queue_len: usize, slow_client_timeout: Duration) -> Hub {
        let counter = |name: &str| IntCounter::new(name, "test").expect("a counter");
        Hub::start(
            Arc::new(MemoryBroker::new(crate::broker::Retention {
                history_len: 100,
                room_ttl: Duration::from_secs(3600),
                idempotency_window: Duration::from_secs(60),
            })),
            HubSettings {
                ring_len: 10,
                queue_len,
                slow_client_timeout,
                room_idle: Duration::from_secs(600),
                memory_budget: 1 << 20,
            },
            plain,
            HubMetrics {
                slow_clients: counter("slow"),
                slow_clients_disconnected: counter("cut"),
                rooms: IntGauge::new("rooms", "test").expect("a gauge"),
                memory_bytes: IntGauge::new("bytes", "test").expect("a gauge"),
                rooms_evicted: counter("evicted"),
                received: counter("received"),
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
            hub.publish(&draft(&room, &n.to_string()), None)
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
