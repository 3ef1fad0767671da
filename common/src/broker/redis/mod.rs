//! The Redis broker, on one Redis (`REDIS_URL`) or a Redis Cluster
//! (`REDIS_CLUSTER_URLS`, Redis 7 or later).
//!
//! A room lives on one shard ([`keys`]): its sequence, its history stream,
//! its idempotency records and its live channel share a hash tag. A publish
//! is one Lua script on that shard (`lua/publish.lua`), which publishes on
//! the room's channel with `PUBLISH` on one Redis and sharded `SPUBLISH` on
//! a cluster, so a message only travels within its shard. Each instance
//! subscribes to the channels of the rooms its clients use ([`listener`]).
//!
//! Commands to one Redis go over a connection per thread that sends them
//! ([`per_thread`]: the HTTP worker that asks sends the command and reads
//! the reply itself, with no hop to another thread), each a
//! `ConnectionManager` that reconnects by itself. Commands to a cluster go
//! over one cluster connection, which follows failovers and slot moves, and
//! run as tasks on the runtime that built the broker (the service's main
//! runtime): that connection's driver lives there, and would die with a
//! worker that made it while other workers still use it. Every command has
//! a deadline, so a publish during a failover answers 503 and never hangs.
//!
//! A `ConnectionManager` reconnects when its connection breaks, not when
//! commands merely time out on it. A connection can go silent for good
//! without breaking: an instance cut off from Redis (a network partition)
//! and attached again under another address keeps a socket bound to an
//! address it no longer has, whose packets go nowhere until TCP gives up,
//! many minutes later. So when a command times out while the subscription
//! hears Redis (Redis is reachable, this connection is not), every thread's
//! connection is made anew on its next use (at most once per
//! [`REPLACE_AFTER`]), as it is when the subscription loses or finds Redis.

mod connection;
mod keys;
mod listener;
mod per_thread;
mod stored;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManagerConfig;
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Client, ProtocolVersion, Script};
use tokio::runtime::Handle;
use tokio::sync::{Mutex, mpsc, watch};

use self::connection::Commands;
use self::keys::Keys;
use self::listener::{Listener, Pushes, Source};
use self::per_thread::PerThread;
use super::{
    Broker, BrokerError, BrokerMetrics, FEED_CAPACITY, Feed, Interest, Published, Retention,
    Sequence,
};
use crate::message::{Draft, IdempotencyKey, Message, RoomName};

/// The longest any command may take before the caller gets a 503. Below the
/// contract's "publish answers 503 within 2 s when Redis is down".
const COMMAND_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long connecting (or reconnecting) to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a readiness probe waits for PONG.
const READY_PING_TIMEOUT: Duration = Duration::from_millis(500);
/// The least time between two renewals of the command connections for a
/// command that timed out.
const REPLACE_AFTER: Duration = Duration::from_secs(2);

const LAST_ID_LUA: &str = include_str!("lua/last_id.lua");
const PUBLISH_LUA: &str = include_str!("lua/publish.lua");
const SEQUENCE_LUA: &str = include_str!("lua/sequence.lua");

/// Which Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis: `redis://host:port/db`.
    Single(String),
    /// A Redis Cluster, by some of its nodes: `redis://host:port` each.
    Cluster(Vec<String>),
}

/// What the Redis broker needs to know.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub target: RedisTarget,
    pub key_prefix: String,
    pub retention: Retention,
}

#[derive(Debug)]
pub struct RedisBroker {
    /// Where commands go (see the module docs).
    commands: CommandConnections,
    /// Where a cluster's commands run, and the subscription (see the module
    /// docs).
    runtime: Handle,
    keys: Keys,
    retention: Retention,
    /// `PUBLISH` on one Redis, `SPUBLISH` (sharded) on a cluster.
    publish_command: &'static str,
    publish_script: Arc<Script>,
    sequence_script: Arc<Script>,
    /// The rooms whose live messages the hub wants.
    interest: Arc<Interest>,
    /// Where the subscription task hears from; taken when the hub asks for
    /// the feed.
    source: Mutex<Option<listener::Source>>,
    /// True while the subscription hears Redis; readiness needs it, since
    /// an instance that cannot hear messages must not take clients.
    connected: Arc<watch::Sender<bool>>,
    metrics: BrokerMetrics,
}

enum CommandConnections {
    /// One Redis: a connection per thread, replaced when it goes silent.
    PerThread(Arc<PerThread>),
    /// A cluster: one connection, cloned for each command and left alone.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for CommandConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandConnections::PerThread(connections) => {
                f.debug_tuple("PerThread").field(connections).finish()
            }
            CommandConnections::Cluster(_) => f.write_str("Cluster"),
        }
    }
}

impl RedisBroker {
    /// Creates the broker without connecting: the service starts (and
    /// reports not-ready) even while Redis is down, and connects when it can.
    /// Must be called within the Tokio runtime that is to run its
    /// subscription (and a cluster's commands).
    pub fn new(settings: RedisSettings, metrics: BrokerMetrics) -> Result<Self, BrokerError> {
        let runtime = Handle::try_current().map_err(|_| BrokerError::Stopped)?;
        let connected = Arc::new(watch::Sender::new(false));
        let (commands, source, publish_command) = match &settings.target {
            RedisTarget::Single(url) => {
                let client = Client::open(url.as_str()).map_err(BrokerError::Rejected)?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                (
                    CommandConnections::PerThread(Arc::new(PerThread::new(
                        client.clone(),
                        manager_config,
                        connected.subscribe(),
                    ))),
                    Source::Single(client),
                    "PUBLISH",
                )
            }
            RedisTarget::Cluster(nodes) => {
                let (pushes, push_sender) = Pushes::new(FEED_CAPACITY);
                let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(push_sender)
                    .retries(2)
                    .min_retry_wait(50)
                    .max_retry_wait(400)
                    .build()
                    .map_err(BrokerError::Rejected)?;
                // Connects in the background: the cluster may be down now.
                let connection = client.get_pending_async_connection_with_config(
                    ClusterConfig::new()
                        .set_connection_timeout(CONNECT_TIMEOUT)
                        .set_response_timeout(COMMAND_TIMEOUT),
                );
                let source = Source::Cluster {
                    connection: connection.clone(),
                    pushes,
                };
                (CommandConnections::Cluster(connection), source, "SPUBLISH")
            }
        };
        Ok(RedisBroker {
            commands,
            runtime,
            keys: Keys::new(settings.key_prefix),
            retention: settings.retention,
            publish_command,
            publish_script: Arc::new(Script::new(&format!("{LAST_ID_LUA}\n{PUBLISH_LUA}"))),
            sequence_script: Arc::new(Script::new(&format!("{LAST_ID_LUA}\n{SEQUENCE_LUA}"))),
            interest: Arc::new(Interest::default()),
            source: Mutex::new(Some(source)),
            connected,
            metrics,
        })
    }

    /// Runs one command, sent over `commands()`, as a task with a
    /// deadline: it runs to its end even if the caller leaves, and no caller
    /// ever waits longer than `deadline` on a Redis that does not answer. On
    /// one Redis the task runs on this thread, which owns the connection; a
    /// cluster's on the broker's runtime (see the module docs).
    async fn run<T, F>(&self, deadline: Duration, command: F) -> Result<T, BrokerError>
    where
        F: Future<Output = redis::RedisResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        let command = tokio::time::timeout(deadline, command);
        let finished = match &self.commands {
            CommandConnections::PerThread(connections) => {
                let connections = Arc::clone(connections);
                tokio::spawn(async move {
                    let finished = command.await;
                    let timed_out = match &finished {
                        Ok(result) => result.as_ref().is_err_and(redis::RedisError::is_timeout),
                        Err(_) => true,
                    };
                    if timed_out && connections.timed_out(REPLACE_AFTER) {
                        log::warn!(
                            "Redis commands time out while the subscription hears Redis: \
                             replacing the command connections"
                        );
                    }
                    finished
                })
                .await
            }
            CommandConnections::Cluster(_) => self.runtime.spawn(command).await,
        };
        match finished {
            Ok(Ok(result)) => result.map_err(BrokerError::from),
            Ok(Err(_)) => Err(BrokerError::Timeout(deadline)),
            Err(_) => Err(BrokerError::Stopped),
        }
    }

    /// The connection for one command, to be [`run`](Self::run) on this
    /// thread.
    fn commands(&self) -> Result<Commands, BrokerError> {
        match &self.commands {
            CommandConnections::PerThread(connections) => connections
                .get()
                .map(Commands::Single)
                .map_err(BrokerError::from),
            CommandConnections::Cluster(connection) => Ok(Commands::Cluster(connection.clone())),
        }
    }

    async fn range(
        &self,
        room: &RoomName,
        command: redis::Cmd,
    ) -> Result<Vec<Message>, BrokerError> {
        let mut conn = self.commands()?;
        let entries: Vec<(String, Vec<String>)> = self
            .run(COMMAND_TIMEOUT, async move {
                command.query_async(&mut conn).await
            })
            .await?;
        entries
            .into_iter()
            .map(|(id, fields)| stored::entry(room, &id, fields))
            .collect()
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(
        &self,
        draft: &Draft,
        key: Option<&IdempotencyKey>,
        floor: u64,
    ) -> Result<Published, BrokerError> {
        let mut conn = self.commands()?;
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
            self.keys.channel(&draft.room),
            floor,
            history_len,
            draft.room.to_string(),
            draft.author.as_str().to_owned(),
            draft.text.as_str().to_owned(),
            draft.via.as_str(),
            room_ttl.as_secs().max(1),
            idempotency_window.as_secs().max(1),
            self.publish_command,
        );
        let (replayed, id, ts, first): (u8, u64, u64, String) = self
            .run(COMMAND_TIMEOUT, async move {
                let (channel, floor, history_len, room, author, text, via, ttl, window, publish) =
                    args;
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
                    .arg(publish)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(if replayed == 1 {
            Published {
                message: stored::payload(first.as_bytes())?,
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
        let mut conn = self.commands()?;
        let record = self.keys.idempotency(room, key);
        let first: Option<Vec<u8>> = self
            .run(COMMAND_TIMEOUT, async move {
                redis::cmd("GET").arg(record).query_async(&mut conn).await
            })
            .await?;
        first.map(|first| stored::payload(&first)).transpose()
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
        let mut conn = self.commands()?;
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
        if !*self.connected.borrow() {
            return false;
        }
        let Ok(mut conn) = self.commands() else {
            return false;
        };
        let ping = async move {
            redis::cmd("PING")
                .query_async::<redis::Value>(&mut conn)
                .await
        };
        self.run(READY_PING_TIMEOUT, ping).await.is_ok()
    }

    fn connectivity(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    fn feed(&self) -> mpsc::Receiver<Feed> {
        let (feed, receiver) = mpsc::channel(FEED_CAPACITY);
        let Ok(mut source) = self.source.try_lock() else {
            return receiver;
        };
        let Some(source) = source.take() else {
            log::error!("the broker's feed was asked for twice; the second gets nothing");
            return receiver;
        };
        let listener = Listener {
            keys: self.keys.clone(),
            interest: Arc::clone(&self.interest),
            feed,
            connected: Arc::clone(&self.connected),
            metrics: self.metrics.clone(),
        };
        self.runtime.spawn(listener.run(source));
        receiver
    }

    fn watch(&self, room: &RoomName) {
        self.interest.want(room);
    }

    fn unwatch(&self, room: &RoomName) {
        self.interest.drop_room(room);
    }
}
