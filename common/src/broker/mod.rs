//! The broker: where messages get their ids, where history lives, and how
//! an instance hears about the messages of the rooms its clients use.
//!
//! Two implementations share one trait:
//! - [`RedisBroker`]: the real one, on one Redis or a Redis Cluster. A
//!   publish is one atomic Lua script on the room's shard (assign the
//!   room's next id, append to the room's capped history stream, publish on
//!   the room's channel), so ids are gap-free per room and a message is in
//!   history before anyone can hear of it. Each instance subscribes to the
//!   channels of the rooms its clients use, and only those.
//! - [`MemoryBroker`]: everything in this process, for running one instance
//!   without Redis. It cannot share messages with another process.
//!
//! The broker does not fan out to clients; it feeds the instance's
//! [`Hub`](crate::hub::Hub) through a bounded [`Feed`]. The hub says which
//! rooms it wants to hear ([`Broker::watch`], [`Broker::unwatch`]); the
//! broker's subscription follows that [`Interest`].

mod interest;
mod memory;
mod redis;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use self::interest::Interest;

pub use self::memory::MemoryBroker;
pub use self::redis::{RedisBroker, RedisSettings, RedisTarget};
use crate::message::{Draft, IdempotencyKey, Message, RoomName};

/// Why the broker could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Not reachable, or not serving right now: retrying later may work.
    #[error("broker unreachable: {0}")]
    Unavailable(#[source] ::redis::RedisError),
    #[error("broker did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The broker answered with an error of its own or with data this
    /// service cannot read: a bug or a misconfiguration, not an outage.
    #[error("broker refused the request: {0}")]
    Rejected(#[source] ::redis::RedisError),
    #[error("broker holds data this service cannot read: {0}")]
    Corrupt(String),
    /// The runtime that runs broker commands is shutting down.
    #[error("broker stopped: the service is shutting down")]
    Stopped,
    /// This instance has not heard the broker for a while (its clients were
    /// sent elsewhere); others may.
    #[error("this instance cannot reach the broker; retry (another instance may answer)")]
    Lost,
}

impl BrokerError {
    /// Whether a client may simply retry later (as opposed to a bug or bad
    /// data, which retrying will not fix).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BrokerError::Unavailable(_)
                | BrokerError::Timeout(_)
                | BrokerError::Stopped
                | BrokerError::Lost
        )
    }
}

/// Error codes with which Redis refuses a command for now, not for good: it
/// is out of memory (`maxmemory` with `noeviction`), a replica or a node
/// in failover, loading its data, or busy with a script. Retrying later
/// works, so the client gets a 503, never a 500.
const REFUSED_FOR_NOW: [&str; 7] = [
    "OOM",
    "READONLY",
    "MASTERDOWN",
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "CLUSTERDOWN",
];

impl From<::redis::RedisError> for BrokerError {
    fn from(err: ::redis::RedisError) -> Self {
        use ::redis::{ErrorKind, ServerErrorKind};
        // Redis (7+) keeps the code of a refusal inside a script.
        if err
            .code()
            .is_some_and(|code| REFUSED_FOR_NOW.contains(&code))
        {
            return BrokerError::Unavailable(err);
        }
        match err.kind() {
            ErrorKind::Parse
            | ErrorKind::UnexpectedReturnType
            | ErrorKind::Server(
                ServerErrorKind::ResponseError
                | ServerErrorKind::ExecAbort
                | ServerErrorKind::CrossSlot
                | ServerErrorKind::NoPerm,
            ) => BrokerError::Rejected(err),
            _ => BrokerError::Unavailable(err),
        }
    }
}

/// What the subscription hands the hub, in the order it arrived.
#[derive(Debug)]
pub enum Feed {
    /// A message as published. Per room, ids only grow, but some may be
    /// missing: pub/sub is at-most-once, so the hub fills holes from history.
    Message(Message),
    /// The room's live messages flow from now on: its subscription started,
    /// or started again (after a reconnect, a failover, a slot move).
    /// Messages published before were not heard, so the hub catches the
    /// room up from history.
    Watching(RoomName),
}

/// Counters a broker reports into `/metrics`.
#[derive(Debug, Clone)]
pub struct BrokerMetrics {
    /// Times the subscription connection was lost and re-established.
    pub reconnects: prometheus::IntCounter,
    /// Rooms this instance is subscribed to now.
    pub rooms_subscribed: prometheus::IntGauge,
    /// Room subscriptions made (first ones and after reconnects).
    pub subscribes: prometheus::IntCounter,
    /// Room subscriptions dropped because no client here uses the room.
    pub unsubscribes: prometheus::IntCounter,
}

/// A room's sequence as the broker holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    /// The last id the broker had assigned, before any repair.
    pub stored: u64,
    /// The last id now: `max(stored, floor)`.
    pub current: u64,
}

/// How long what the broker stores lives.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Messages kept per room, at least.
    pub history_len: usize,
    /// How long a room's keys live after its last message.
    pub room_ttl: std::time::Duration,
    /// How long an idempotency key is remembered after its first use.
    pub idempotency_window: std::time::Duration,
}

/// A message the broker stored, or had stored already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub message: Message,
    /// The publish carried an idempotency key used before, within the
    /// window: `message` is the one stored then, and nothing new was.
    pub replayed: bool,
}

/// The shared store of ids and history, and the source of live messages.
#[async_trait]
pub trait Broker: Send + Sync + std::fmt::Debug + 'static {
    /// Assigns the room's next id, stores and publishes the message, all in
    /// one step: either everything happened or nothing did.
    ///
    /// With `key`, a key already used in the room within the idempotency
    /// window stores nothing and answers with the message stored then.
    ///
    /// `floor` is the highest id this instance has seen in the room. Ids are
    /// never assigned at or below it, so a room's ids keep growing even if
    /// Redis lost its data (restarted without persistence).
    async fn publish(
        &self,
        draft: &Draft,
        key: Option<&IdempotencyKey>,
        floor: u64,
    ) -> Result<Published, BrokerError>;

    /// The message first stored with `key` in `room`, if the key was used
    /// within the idempotency window. (A publish checks keys itself; this
    /// is for publishes refused before they reach the broker, which must
    /// still answer a replay with its first message.)
    async fn replay(
        &self,
        room: &RoomName,
        key: &IdempotencyKey,
    ) -> Result<Option<Message>, BrokerError>;

    /// Up to `limit` messages with `id > after`, oldest first. Fewer, or a
    /// first id above `after + 1`, means history no longer reaches back.
    async fn read_after(
        &self,
        room: &RoomName,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, BrokerError>;

    /// The latest `limit` messages, oldest first.
    async fn read_latest(&self, room: &RoomName, limit: usize)
    -> Result<Vec<Message>, BrokerError>;

    /// The room's last assigned id, first raised to `floor` if it is lower
    /// (which means the broker lost data). 0 for a room that never had a message.
    async fn sequence(&self, room: &RoomName, floor: u64) -> Result<Sequence, BrokerError>;

    /// Whether the broker can take publishes and deliver messages right now.
    async fn is_ready(&self) -> bool;

    /// Whether this instance hears the broker now (its subscription is
    /// connected), as it changes.
    fn connectivity(&self) -> tokio::sync::watch::Receiver<bool>;

    /// Starts feeding this instance's hub. Called once, by the hub.
    fn feed(&self) -> mpsc::Receiver<Feed>;

    /// The hub's clients use `room`: hear its live messages (a
    /// [`Feed::Watching`] says when they flow). Cheap and idempotent.
    fn watch(&self, room: &RoomName);

    /// No client here uses `room` any more: stop hearing it.
    fn unwatch(&self, room: &RoomName);
}

/// Capacity of the feed between the subscription and the hub. The hub's
/// work per message is a few queue pushes, so this only fills if the process
/// is starved; the subscription then drops and re-syncs from history rather
/// than buffering without bound.
pub(crate) const FEED_CAPACITY: usize = 8192;
