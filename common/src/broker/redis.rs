//! The Redis broker.
//!
//! Keys of one room share the hash tag `{room}`, so the design also holds on
//! Redis Cluster:
//! - `<prefix>:{<room>}:seq`: the room's last assigned id (`INCR`-like, but
//!   set by the publish script so it can never fall below a floor);
//! - `<prefix>:{<room>}:history`: a stream capped at `HISTORY_LEN` whose
//!   entry ids are `<message id>-0`, so `XRANGE` by message id is direct,
//!   and whose fields are the message's author (`a`), text (`m`),
//!   acceptance time (`t`) and service (`v`);
//! - `<prefix>:messages`: the one pub/sub channel every instance listens to.
//!
//! Two kinds of connection: one multiplexed [`ConnectionManager`] for
//! commands (publish, history, sequence), and one dedicated pub/sub
//! connection owned by the subscription task, which reconnects with backoff,
//! pings to notice a silent Redis, and tells the hub to re-sync after every
//! reconnect because pub/sub does not replay what it missed.
//!
//! Every command runs as a task on the runtime that built the broker (the
//! service's main runtime), never on the HTTP worker that asked: the
//! multiplexed connection's driver is spawned wherever the connection is
//! made, and a driver living on a worker's runtime would die with that
//! worker (at shutdown, while other workers still answer requests).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use prometheus::IntCounter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::{Client, Script};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;

use super::{Broker, BrokerError, FEED_CAPACITY, Feed, Published, Retention, Sequence};
use crate::backoff::Backoff;
use crate::message::{Draft, IdempotencyKey, Message, RoomName};

/// The longest any command may take before the caller gets a 503. Below the
/// contract's "publish answers 503 within 2 s when Redis is down".
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long connecting (or reconnecting) to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the subscription pings Redis. A Redis that stops answering
/// without closing the socket (paused, partitioned) is noticed this fast.
const SUBSCRIPTION_PING_EVERY: Duration = Duration::from_secs(1);
const SUBSCRIPTION_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a readiness probe waits for PONG.
const READY_PING_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the subscription waits for room in a full feed before it gives
/// up, drops the subscription and lets the hub re-sync from history.
const FEED_SEND_TIMEOUT: Duration = Duration::from_secs(1);

const LAST_ID_LUA: &str = include_str!("lua/last_id.lua");
const PUBLISH_LUA: &str = include_str!("lua/publish.lua");
const SEQUENCE_LUA: &str = include_str!("lua/sequence.lua");

/// What the Redis broker needs to know.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub key_prefix: String,
    pub retention: Retention,
}

#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn sequence(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:seq", self.prefix)
    }

    fn history(&self, room: &RoomName) -> String {
        format!("{}:{{{room}}}:history", self.prefix)
    }

    /// The record of an idempotency key's first use in the room.
    fn idempotency(&self, room: &RoomName, key: &IdempotencyKey) -> String {
        format!("{}:{{{room}}}:idem:{}", self.prefix, key.as_str())
    }

    fn channel(&self) -> String {
        format!("{}:messages", self.prefix)
    }
}

#[derive(Debug)]
pub struct RedisBroker {
    client: Client,
    commands: ConnectionManager,
    /// Where commands run (see the module docs).
    runtime: Handle,
    keys: Keys,
    retention: Retention,
    publish_script: Arc<Script>,
    sequence_script: Arc<Script>,
    /// Set while the subscription is connected; readiness needs it, since an
    /// instance that cannot hear messages must not take clients.
    subscribed: Arc<AtomicBool>,
    /// Counts lost subscriptions (exported as `broker_reconnects_total`).
    reconnects: IntCounter,
}

impl RedisBroker {
    /// Creates the broker without connecting: the service starts (and
    /// reports not-ready) even while Redis is down, and connects when it can.
    /// Must be called within the Tokio runtime that is to run its commands.
    pub fn new(settings: RedisSettings, reconnects: IntCounter) -> Result<Self, BrokerError> {
        let runtime = Handle::try_current().map_err(|_| BrokerError::Stopped)?;
        let client = Client::open(settings.url.as_str()).map_err(BrokerError::Rejected)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(BrokerError::Rejected)?;
        Ok(RedisBroker {
            client,
            commands,
            runtime,
            keys: Keys {
                prefix: settings.key_prefix,
            },
            retention: settings.retention,
            publish_script: Arc::new(Script::new(&format!("{LAST_ID_LUA}\n{PUBLISH_LUA}"))),
            sequence_script: Arc::new(Script::new(&format!("{LAST_ID_LUA}\n{SEQUENCE_LUA}"))),
            subscribed: Arc::new(AtomicBool::new(false)),
            reconnects,
        })
    }

    /// Runs one command on the broker's runtime with a deadline, so no
    /// caller ever waits longer than `deadline` on a Redis that does not
    /// answer.
    async fn run<T, F>(&self, deadline: Duration, command: F) -> Result<T, BrokerError>
    where
        F: Future<Output = redis::RedisResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        match self
            .runtime
            .spawn(tokio::time::timeout(deadline, command))
            .await
        {
            Ok(Ok(result)) => result.map_err(BrokerError::from),
            Ok(Err(_)) => Err(BrokerError::Timeout(deadline)),
            Err(_) => Err(BrokerError::Stopped),
        }
    }

    async fn range(
        &self,
        room: &RoomName,
        command: redis::Cmd,
    ) -> Result<Vec<Message>, BrokerError> {
        let mut conn = self.commands.clone();
        let entries: Vec<(String, Vec<String>)> = self
            .run(COMMAND_TIMEOUT, async move {
                command.query_async(&mut conn).await
            })
            .await?;
        entries
            .into_iter()
            .map(|(id, fields)| parse_entry(room, &id, fields))
            .collect()
    }
}

/// Reads one history entry: id `<message id>-0`, fields `a`, `m`, `t`, `v`.
fn parse_entry(
    room: &RoomName,
    entry_id: &str,
    fields: Vec<String>,
) -> Result<Message, BrokerError> {
    let corrupt = |what: &str| {
        BrokerError::Corrupt(format!("history entry {entry_id} of room {room}: {what}"))
    };
    let id = entry_id
        .strip_suffix("-0")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| corrupt("its id is not <message id>-0"))?;
    let (mut author, mut text, mut ts, mut via) = (None, None, None, None);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match name.as_str() {
            "a" => author = Some(value),
            "m" => text = Some(value),
            "t" => ts = value.parse().ok(),
            "v" => via = value.parse().ok(),
            _ => {}
        }
    }
    Ok(Message {
        id,
        room: room.clone(),
        author: author.ok_or_else(|| corrupt("no author"))?,
        message: text.ok_or_else(|| corrupt("no text"))?,
        ts: ts.ok_or_else(|| corrupt("no acceptance time"))?,
        via: via.ok_or_else(|| corrupt("no service"))?,
    })
}

/// Reads a message heard on the live channel.
fn parse_payload(payload: &[u8]) -> Result<Message, BrokerError> {
    serde_json::from_slice(payload)
        .map_err(|err| BrokerError::Corrupt(format!("{err}: {}", String::from_utf8_lossy(payload))))
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(
        &self,
        draft: &Draft,
        key: Option<&IdempotencyKey>,
        floor: u64,
    ) -> Result<Published, BrokerError> {
        let mut conn = self.commands.clone();
        let script = Arc::clone(&self.publish_script);
        let mut keys = vec![
            self.keys.sequence(&draft.room),
            self.keys.history(&draft.room),
        ];
        keys.extend(key.map(|key| self.keys.idempotency(&draft.room, key)));
        let Retention {
            history_len,
            room_ttl,
            idempotency_window,
        } = self.retention;
        let args = (
            self.keys.channel(),
            floor,
            history_len,
            draft.room.to_string(),
            draft.author.as_str().to_owned(),
            draft.text.as_str().to_owned(),
            draft.via.as_str(),
            room_ttl.as_secs().max(1),
            idempotency_window.as_secs().max(1),
        );
        let (replayed, id, ts, first): (u8, u64, u64, String) = self
            .run(COMMAND_TIMEOUT, async move {
                let (channel, floor, history_len, room, author, text, via, ttl, window) = args;
                script
                    .key(&keys)
                    .arg(channel)
                    .arg(floor)
                    .arg(history_len)
                    .arg(room)
                    .arg(author)
                    .arg(text)
                    .arg(via)
                    .arg(ttl)
                    .arg(window)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(if replayed == 1 {
            Published {
                message: parse_payload(first.as_bytes())?,
                replayed: true,
            }
        } else {
            Published {
                message: draft.stored(id, ts),
                replayed: false,
            }
        })
    }

    async fn replay(
        &self,
        room: &RoomName,
        key: &IdempotencyKey,
    ) -> Result<Option<Message>, BrokerError> {
        let mut conn = self.commands.clone();
        let record = self.keys.idempotency(room, key);
        let first: Option<Vec<u8>> = self
            .run(COMMAND_TIMEOUT, async move {
                redis::cmd("GET").arg(record).query_async(&mut conn).await
            })
            .await?;
        first.map(|first| parse_payload(&first)).transpose()
    }

    async fn read_after(
        &self,
        room: &RoomName,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, BrokerError> {
        let mut command = redis::cmd("XRANGE");
        command
            .arg(self.keys.history(room))
            .arg(format!("{}-0", after.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(limit);
        self.range(room, command).await
    }

    async fn read_latest(
        &self,
        room: &RoomName,
        limit: usize,
    ) -> Result<Vec<Message>, BrokerError> {
        let mut command = redis::cmd("XREVRANGE");
        command
            .arg(self.keys.history(room))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit);
        let mut newest_first = self.range(room, command).await?;
        newest_first.reverse();
        Ok(newest_first)
    }

    async fn sequence(&self, room: &RoomName, floor: u64) -> Result<Sequence, BrokerError> {
        let mut conn = self.commands.clone();
        let script = Arc::clone(&self.sequence_script);
        let keys = [self.keys.sequence(room), self.keys.history(room)];
        let ttl = self.retention.room_ttl.as_secs().max(1);
        let (stored, current): (u64, u64) = self
            .run(COMMAND_TIMEOUT, async move {
                script
                    .key(&keys)
                    .arg(floor)
                    .arg(ttl)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(Sequence { stored, current })
    }

    async fn is_ready(&self) -> bool {
        if !self.subscribed.load(Ordering::Acquire) {
            return false;
        }
        let mut conn = self.commands.clone();
        let ping = async move { redis::cmd("PING").query_async::<String>(&mut conn).await };
        self.run(READY_PING_TIMEOUT, ping).await.is_ok()
    }

    fn subscribe(&self) -> mpsc::Receiver<Feed> {
        let (feed, receiver) = mpsc::channel(FEED_CAPACITY);
        let subscription = Subscription {
            client: self.client.clone(),
            channel: self.keys.channel(),
            feed,
            subscribed: Arc::clone(&self.subscribed),
            reconnects: self.reconnects.clone(),
        };
        tokio::spawn(subscription.run());
        receiver
    }
}

/// The instance's one pub/sub connection, kept alive for as long as the hub
/// listens.
struct Subscription {
    client: Client,
    channel: String,
    feed: mpsc::Sender<Feed>,
    subscribed: Arc<AtomicBool>,
    reconnects: IntCounter,
}

/// Why a live subscription ended.
#[derive(Debug)]
enum Lost {
    /// Redis closed the connection (restart, `CLIENT KILL`, network).
    Closed,
    /// Redis stopped answering pings.
    Silent,
    /// The hub did not keep up; re-syncing from history is cheaper than
    /// buffering without bound.
    FeedFull,
    /// The hub is gone: the service is stopping.
    HubGone,
}

impl Subscription {
    async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut was_up = false;
        loop {
            match self.connect().await {
                Ok((sink, stream)) => {
                    backoff.reset();
                    log::info!("subscribed to Redis channel {}", self.channel);
                    self.subscribed.store(true, Ordering::Release);
                    was_up = true;
                    let lost = match self.feed.send(Feed::Resubscribed).await {
                        Ok(()) => self.listen(sink, stream).await,
                        Err(_) => Lost::HubGone,
                    };
                    self.subscribed.store(false, Ordering::Release);
                    if matches!(lost, Lost::HubGone) {
                        return;
                    }
                    self.reconnects.inc();
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

    async fn connect(&self) -> Result<(PubSubSink, PubSubStream), BrokerError> {
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub.split())
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, connect).await {
            Ok(result) => result.map_err(BrokerError::from),
            Err(_) => Err(BrokerError::Timeout(CONNECT_TIMEOUT * 2)),
        }
    }

    async fn listen(&self, mut sink: PubSubSink, mut stream: PubSubStream) -> Lost {
        let mut ping = tokio::time::interval(SUBSCRIPTION_PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { return Lost::Closed };
                    let message = match parse_payload(message.get_payload_bytes()) {
                        Ok(message) => message,
                        Err(err) => {
                            log::warn!("ignoring unreadable message on {}: {err}", self.channel);
                            continue;
                        }
                    };
                    match self.feed.send_timeout(Feed::Message(message), FEED_SEND_TIMEOUT).await {
                        Ok(()) => {}
                        Err(SendTimeoutError::Timeout(_)) => return Lost::FeedFull,
                        Err(SendTimeoutError::Closed(_)) => return Lost::HubGone,
                    }
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(
                        SUBSCRIPTION_PING_TIMEOUT,
                        sink.ping::<redis::Value>(),
                    );
                    if !matches!(pong.await, Ok(Ok(_))) {
                        return Lost::Silent;
                    }
                }
                () = self.feed.closed() => return Lost::HubGone,
            }
        }
    }
}
