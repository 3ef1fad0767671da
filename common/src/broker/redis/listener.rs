//! The subscription task: hears the live channels of the rooms the hub
//! wants, and only those, and feeds what it hears to the hub.
//!
//! It follows the hub's [`Interest`]: whenever the wanted rooms change it
//! subscribes to the new ones and unsubscribes from the dropped ones.
//! Every room whose subscription starts (or starts again) is announced with
//! [`Feed::Watching`], so the hub catches it up from history: pub/sub is
//! at-most-once, and nothing published before a subscription is heard.
//!
//! - On one Redis: a dedicated pub/sub connection (`SUBSCRIBE`), which this
//!   task reconnects with backoff; it pings Redis every second to notice one
//!   that stopped answering, and after every reconnect subscribes again to
//!   everything wanted.
//! - On a Redis Cluster: sharded pub/sub (`SSUBSCRIBE`) on the cluster
//!   connection, which sends each room's subscription to the shard holding
//!   the room and moves it after a failover or a slot move by itself; its
//!   confirmations (pushes) say when a room's messages flow again.
//!
//! If the hub does not keep up for a second (its feed stays full), the
//! subscription is dropped and made again, which catches every room up from
//! history, instead of buffering without bound.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{Client, PushInfo, PushKind, Value};
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{mpsc, watch};

use super::keys::Keys;
use super::stored;
use crate::backoff::Backoff;
use crate::broker::{BrokerError, BrokerMetrics, Feed, Interest};
use crate::message::RoomName;

/// How long connecting (or reconnecting) the subscription may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the subscription pings Redis (and, on a cluster, retries
/// subscriptions that failed). A Redis that stops answering without closing
/// the socket (paused, partitioned) is noticed this fast.
const PING_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the task waits for room in a full feed before it gives up,
/// drops the subscription and lets the hub re-sync from history.
const FEED_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Channels per `SUBSCRIBE`: after a reconnect an instance may hold
/// thousands of rooms.
const SUBSCRIBE_BATCH: usize = 512;

/// Where the task hears from.
pub(super) enum Source {
    /// One Redis: the task makes its own pub/sub connections.
    Single(Client),
    /// A cluster: the shared cluster connection, and the pushes it receives.
    Cluster {
        connection: ClusterConnection,
        pushes: Pushes,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Single(_) => "Source::Single",
            Source::Cluster { .. } => "Source::Cluster",
        })
    }
}

/// The pushes (messages, subscription confirmations) a cluster connection
/// receives, through a bounded queue: the connection hands them over
/// without waiting, so when the queue is full a push is lost, which this
/// remembers; the task then starts every subscription over (and the hub
/// catches every room up from history).
#[derive(Debug)]
pub(super) struct Pushes {
    receiver: mpsc::Receiver<PushInfo>,
    overflowed: Arc<AtomicBool>,
}

impl Pushes {
    /// The queue, and what the cluster connection pushes into.
    pub(super) fn new(
        capacity: usize,
    ) -> (
        Self,
        impl Fn(PushInfo) -> Result<(), ()> + Send + Sync + 'static,
    ) {
        let (sender, receiver) = mpsc::channel(capacity);
        let overflowed = Arc::new(AtomicBool::new(false));
        let lost = Arc::clone(&overflowed);
        let push = move |push: PushInfo| {
            sender.try_send(push).map_err(|_| {
                lost.store(true, Ordering::Release);
            })
        };
        (
            Pushes {
                receiver,
                overflowed,
            },
            push,
        )
    }

    /// Whether a push was lost since the last call.
    fn overflowed(&self) -> bool {
        self.overflowed.swap(false, Ordering::AcqRel)
    }
}

/// The task's state.
pub(super) struct Listener {
    pub(super) keys: Keys,
    pub(super) interest: Arc<Interest>,
    pub(super) feed: mpsc::Sender<Feed>,
    /// True while the task hears Redis; readiness needs it, since an
    /// instance that cannot hear messages must not take clients.
    pub(super) connected: Arc<watch::Sender<bool>>,
    pub(super) metrics: BrokerMetrics,
}

/// Why a live subscription ended.
#[derive(Debug)]
enum Lost {
    /// Redis closed the connection (restart, `CLIENT KILL`, network).
    Closed,
    /// Redis stopped answering pings, or a command failed.
    Silent,
    /// The hub did not keep up; re-syncing from history is cheaper than
    /// buffering without bound.
    FeedFull,
    /// The hub is gone: the service is stopping.
    HubGone,
}

impl Listener {
    pub(super) async fn run(self, source: Source) {
        match source {
            Source::Single(client) => self.run_single(client).await,
            Source::Cluster { connection, pushes } => self.run_cluster(connection, pushes).await,
        }
        self.connected.send_replace(false);
        self.metrics.rooms_subscribed.set(0);
    }

    /// Hands one live message to the hub, if it is one: the payload must be a
    /// Message of the channel's own room (anyone who reaches Redis can
    /// publish on it).
    async fn deliver(&self, channel: &str, payload: &[u8]) -> Result<(), Lost> {
        let Some(room) = self.keys.room_of(channel) else {
            log::warn!("ignoring a message on unexpected channel {channel}");
            return Ok(());
        };
        let message = match stored::payload(payload) {
            Ok(message) if message.room == room => message,
            Ok(message) => {
                log::warn!(
                    "ignoring a message of room {} on the channel of room {room} (forged?)",
                    message.room
                );
                return Ok(());
            }
            Err(err) => {
                log::warn!("ignoring an unreadable message on {channel}: {err}");
                return Ok(());
            }
        };
        self.send(Feed::Message(message)).await
    }

    async fn send(&self, item: Feed) -> Result<(), Lost> {
        match self.feed.send_timeout(item, FEED_SEND_TIMEOUT).await {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(_)) => Err(Lost::FeedFull),
            Err(SendTimeoutError::Closed(_)) => Err(Lost::HubGone),
        }
    }

    /// Rooms wanted but not subscribed, and subscribed but not wanted.
    fn difference(&self, subscribed: &HashSet<RoomName>) -> (Vec<RoomName>, Vec<RoomName>) {
        let wanted = self.interest.snapshot();
        let start = wanted.difference(subscribed).cloned().collect();
        let stop = subscribed.difference(&wanted).cloned().collect();
        (start, stop)
    }

    fn count(&self, subscribed: &HashSet<RoomName>) {
        self.metrics
            .rooms_subscribed
            .set(i64::try_from(subscribed.len()).unwrap_or(i64::MAX));
    }

    // One Redis.

    async fn run_single(&self, client: Client) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut was_up = false;
        loop {
            match connect(&client).await {
                Ok((sink, stream)) => {
                    backoff.reset();
                    log::info!("subscription connected to Redis");
                    self.connected.send_replace(true);
                    was_up = true;
                    let lost = self.listen_single(sink, stream).await;
                    self.connected.send_replace(false);
                    self.metrics.rooms_subscribed.set(0);
                    if matches!(lost, Lost::HubGone) {
                        return;
                    }
                    self.metrics.reconnects.inc();
                    log::warn!("Redis subscription lost ({lost:?}); reconnecting");
                }
                Err(err) if was_up => {
                    log::warn!("Redis unreachable, retrying: {err}");
                    was_up = false;
                }
                Err(err) => log::debug!("Redis still unreachable: {err}"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = self.feed.closed() => return,
            }
        }
    }

    async fn listen_single(&self, mut sink: PubSubSink, mut stream: PubSubStream) -> Lost {
        let mut subscribed = HashSet::new();
        if let Err(lost) = self.reconcile_single(&mut sink, &mut subscribed).await {
            return lost;
        }
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                message = stream.next() => match message {
                    Some(message) => {
                        self.deliver(message.get_channel_name(), message.get_payload_bytes()).await
                    }
                    None => Err(Lost::Closed),
                },
                () = self.interest.changed() => {
                    self.reconcile_single(&mut sink, &mut subscribed).await
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(PING_TIMEOUT, sink.ping::<Value>());
                    match pong.await {
                        Ok(Ok(_)) => Ok(()),
                        _ => Err(Lost::Silent),
                    }
                }
                () = self.feed.closed() => Err(Lost::HubGone),
            };
            if let Err(lost) = step {
                return lost;
            }
        }
    }

    async fn reconcile_single(
        &self,
        sink: &mut PubSubSink,
        subscribed: &mut HashSet<RoomName>,
    ) -> Result<(), Lost> {
        let (start, stop) = self.difference(subscribed);
        for batch in start.chunks(SUBSCRIBE_BATCH) {
            let channels: Vec<String> = batch.iter().map(|room| self.keys.channel(room)).collect();
            sink.subscribe(channels).await.map_err(|err| {
                log::warn!("cannot subscribe: {err}");
                Lost::Silent
            })?;
            for room in batch {
                subscribed.insert(room.clone());
                self.metrics.subscribes.inc();
                self.send(Feed::Watching(room.clone())).await?;
            }
        }
        for batch in stop.chunks(SUBSCRIBE_BATCH) {
            let channels: Vec<String> = batch.iter().map(|room| self.keys.channel(room)).collect();
            sink.unsubscribe(channels).await.map_err(|err| {
                log::warn!("cannot unsubscribe: {err}");
                Lost::Silent
            })?;
            for room in batch {
                subscribed.remove(room);
                self.metrics.unsubscribes.inc();
            }
        }
        self.count(subscribed);
        Ok(())
    }

    // A cluster.

    async fn run_cluster(&self, mut connection: ClusterConnection, mut pushes: Pushes) {
        let mut subscribed = HashSet::new();
        let mut tick = tokio::time::interval(PING_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                push = pushes.receiver.recv() => match push {
                    Some(_) if pushes.overflowed() => Err(Lost::FeedFull),
                    Some(push) => self.on_push(push, &mut subscribed).await,
                    None => Err(Lost::HubGone),
                },
                () = self.interest.changed() => {
                    self.reconcile_cluster(&mut connection, &mut subscribed).await
                }
                _ = tick.tick() => {
                    self.check_cluster(&mut connection).await;
                    // Subscriptions that failed (a shard down, a failover
                    // under way) are retried.
                    self.reconcile_cluster(&mut connection, &mut subscribed).await
                }
                () = self.feed.closed() => Err(Lost::HubGone),
            };
            match step {
                Ok(()) => {}
                Err(Lost::HubGone) => return,
                Err(lost) => {
                    // A node's connection dropped (its subscriptions with
                    // it), or the hub did not keep up: subscribe to every
                    // room again, which catches each up from history.
                    log::warn!("cluster subscriptions lost ({lost:?}); subscribing again");
                    self.metrics.reconnects.inc();
                    subscribed.clear();
                    self.count(&subscribed);
                    let _ = self
                        .reconcile_cluster(&mut connection, &mut subscribed)
                        .await;
                }
            }
        }
    }

    async fn on_push(
        &self,
        push: PushInfo,
        subscribed: &mut HashSet<RoomName>,
    ) -> Result<(), Lost> {
        let text = |value: Option<&Value>| match value {
            Some(Value::BulkString(bytes)) => Some(bytes.clone()),
            Some(Value::SimpleString(text)) => Some(text.clone().into_bytes()),
            _ => None,
        };
        let room_of = |value: Option<&Value>| {
            text(value).and_then(|channel| self.keys.room_of(&String::from_utf8_lossy(&channel)))
        };
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                let (Some(channel), Some(payload)) =
                    (text(push.data.first()), text(push.data.get(1)))
                else {
                    return Ok(());
                };
                self.deliver(&String::from_utf8_lossy(&channel), &payload)
                    .await
            }
            // A room's subscription (re)started: at first, and again when
            // the cluster connection subscribes again by itself.
            PushKind::SSubscribe => match room_of(push.data.first()) {
                Some(room) => self.send(Feed::Watching(room)).await,
                None => Ok(()),
            },
            // The server dropped a room's subscription (its slot moved):
            // subscribe again, on the shard that has it now.
            PushKind::SUnsubscribe => {
                if let Some(room) = room_of(push.data.first()) {
                    if self.interest.snapshot().contains(&room) {
                        subscribed.remove(&room);
                        self.interest_changed();
                    }
                }
                Ok(())
            }
            PushKind::Disconnection => Err(Lost::Closed),
            _ => Ok(()),
        }
    }

    /// Makes the task reconcile at its next turn.
    fn interest_changed(&self) {
        self.interest.nudge();
    }

    async fn reconcile_cluster(
        &self,
        connection: &mut ClusterConnection,
        subscribed: &mut HashSet<RoomName>,
    ) -> Result<(), Lost> {
        let (start, stop) = self.difference(subscribed);
        // One room per command: a sharded subscription names channels of
        // one slot.
        for room in start {
            let subscribing = connection.ssubscribe(self.keys.channel(&room));
            match tokio::time::timeout(PING_TIMEOUT, subscribing).await {
                Ok(Ok(())) => {
                    subscribed.insert(room.clone());
                    self.metrics.subscribes.inc();
                    self.send(Feed::Watching(room)).await?;
                }
                Ok(Err(err)) => {
                    log::debug!("cannot subscribe to room {room} yet: {err}");
                    break;
                }
                Err(_) => break,
            }
        }
        for room in stop {
            let unsubscribing = connection.sunsubscribe(self.keys.channel(&room));
            if let Ok(Ok(())) = tokio::time::timeout(PING_TIMEOUT, unsubscribing).await {
                subscribed.remove(&room);
                self.metrics.unsubscribes.inc();
            }
        }
        self.count(subscribed);
        Ok(())
    }

    /// Whether the cluster answers, for readiness.
    async fn check_cluster(&self, connection: &mut ClusterConnection) {
        let command = redis::cmd("PING");
        let ping = command.query_async::<Value>(connection);
        let up = matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(_)));
        let was = self.connected.send_replace(up);
        if was && !up {
            log::warn!("Redis Cluster not answering");
        } else if !was && up {
            log::info!("Redis Cluster answering");
        }
    }
}

async fn connect(client: &Client) -> Result<(PubSubSink, PubSubStream), BrokerError> {
    let connecting = async {
        let pubsub = client.get_async_pubsub().await?;
        Ok::<_, redis::RedisError>(pubsub.split())
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(result) => result.map_err(BrokerError::from),
        Err(_) => Err(BrokerError::Timeout(CONNECT_TIMEOUT)),
    }
}
