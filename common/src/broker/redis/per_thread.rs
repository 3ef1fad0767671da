//! One command connection to a single Redis for each thread that sends
//! commands, made on that thread and kept there.
//!
//! Why: a connection's driver task runs on the runtime where the
//! connection was made. Shared by every HTTP worker, that is one thread for
//! all of them, and each command then crosses threads twice (the worker
//! hands it to the driver's thread, the reply comes back), waking a
//! sleeping thread each time. At a few hundred publishes a second those
//! wake-ups were about a third of a publish's CPU. A connection per thread
//! keeps a command on the thread that asked, from request to reply. An
//! instance holds one connection per actix-web worker, one for its main
//! thread, and its subscription: size Redis' `maxclients` for that.
//!
//! A connection lives on its thread's runtime and only that runtime uses
//! it: a thread that runs another runtime later makes another. The
//! connections of a broker that is gone are dropped by the next lookup on
//! their thread, or when the thread ends.
//!
//! Every thread's connection is replaced on its next use when
//!
//! - the subscription lost or found Redis since it was made. A
//!   `ConnectionManager` notices a broken connection only when a command
//!   fails on it, so after Redis restarts, or after a partition heals, every
//!   thread's first command would fail (a 503) or, on a connection left
//!   silent, wait out its deadline. The subscription hears Redis come back
//!   within a second; every thread then starts afresh;
//! - a command timed out on some thread while the subscription hears Redis
//!   (that connection went silent: see the broker's module docs). One
//!   thread's timeout renews them all, at most once per `after` given to
//!   [`PerThread::timed_out`], so a Redis that stalls is not met with a
//!   reconnect from every thread.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use redis::Client;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::runtime::{self, Handle};
use tokio::sync::watch;

/// The command connections of one broker, one per thread.
#[derive(Debug)]
pub(super) struct PerThread {
    /// Tells this broker's connections from another's in a thread's list.
    id: u64,
    /// Lives as long as the broker: a connection whose broker is gone is
    /// dropped by the next lookup on its thread.
    alive: Arc<()>,
    client: Client,
    config: ConnectionManagerConfig,
    /// Whether the subscription hears Redis; each change marks every
    /// connection made before it for replacement.
    subscription: watch::Receiver<bool>,
    /// Raised when a silent connection was noticed: every connection made
    /// before is replaced.
    epoch: AtomicU64,
    /// When `epoch` was last raised.
    renewed: Mutex<Option<Instant>>,
    /// Connections made so far, on every thread.
    made: AtomicU64,
}

/// One thread's connection for one broker.
struct Local {
    broker: u64,
    alive: Weak<()>,
    /// The runtime whose task drives `connection`.
    runtime: runtime::Id,
    connection: ConnectionManager,
    /// The broker's `epoch` when `connection` was made.
    epoch: u64,
    /// Has changed once the subscription lost or found Redis since
    /// `connection` was made.
    heard: watch::Receiver<bool>,
}

thread_local! {
    static CONNECTIONS: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl PerThread {
    pub(super) fn new(
        client: Client,
        config: ConnectionManagerConfig,
        subscription: watch::Receiver<bool>,
    ) -> Self {
        PerThread {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
            client,
            config,
            subscription,
            epoch: AtomicU64::new(0),
            renewed: Mutex::new(None),
            made: AtomicU64::new(0),
        }
    }

    /// This thread's connection, made on first use (its driver is spawned
    /// on this thread's runtime), or made anew if it is stale (see the
    /// module docs). A thread whose thread-locals are already gone (it is
    /// ending) gets a connection of its own for this one command.
    pub(super) fn get(&self) -> redis::RedisResult<ConnectionManager> {
        let runtime = Handle::try_current()
            .map_err(|_| std::io::Error::other("Redis commands need a Tokio runtime"))?
            .id();
        CONNECTIONS
            .try_with(|connections| {
                let mut connections = connections.borrow_mut();
                connections.retain(|local| local.alive.strong_count() > 0);
                let epoch = self.epoch.load(Ordering::Acquire);
                let current = |local: &Local| {
                    local.runtime == runtime
                        && local.epoch == epoch
                        && !local.heard.has_changed().unwrap_or(false)
                };
                let index = connections.iter().position(|local| local.broker == self.id);
                if let Some(local) = index.map(|index| &connections[index])
                    && current(local)
                {
                    return Ok(local.connection.clone());
                }
                let mut heard = self.subscription.clone();
                heard.mark_unchanged();
                let local = Local {
                    broker: self.id,
                    alive: Arc::downgrade(&self.alive),
                    runtime,
                    connection: self.connect()?,
                    epoch,
                    heard,
                };
                let connection = local.connection.clone();
                match index {
                    Some(index) => connections[index] = local,
                    None => connections.push(local),
                }
                Ok(connection)
            })
            .unwrap_or_else(|_| self.connect())
    }

    /// A command timed out. While the subscription hears Redis, that is a
    /// connection gone silent: every thread's connection is replaced on its
    /// next use, unless that was done less than `after` ago. Says whether
    /// it was.
    pub(super) fn timed_out(&self, after: Duration) -> bool {
        if !*self.subscription.borrow() {
            return false;
        }
        let mut renewed = self.renewed.lock().unwrap_or_else(PoisonError::into_inner);
        if renewed.is_some_and(|at| at.elapsed() < after) {
            return false;
        }
        *renewed = Some(Instant::now());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Connections made so far, on every thread.
    #[cfg(test)]
    fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    /// A new connection, which connects in the background: Redis may be
    /// down now.
    fn connect(&self) -> redis::RedisResult<ConnectionManager> {
        let connection =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())?;
        self.made.fetch_add(1, Ordering::Relaxed);
        Ok(connection)
    }
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("broker", &self.broker)
            .field("runtime", &self.runtime)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broker whose subscription hears Redis (or not) as `subscription`
    /// says; nothing listens at its address, and connections are lazy, so
    /// nothing is ever sent.
    fn per_thread(subscription: watch::Receiver<bool>) -> PerThread {
        let client = Client::open("redis://127.0.0.1:1/").expect("a valid URL");
        PerThread::new(client, ConnectionManagerConfig::new(), subscription)
    }

    fn hearing() -> (watch::Sender<bool>, PerThread) {
        subscription_that_hears(true)
    }

    fn subscription_that_hears(redis: bool) -> (watch::Sender<bool>, PerThread) {
        let (subscription, hears) = watch::channel(redis);
        (subscription, per_thread(hears))
    }

    /// Gets `broker`'s connection twice within a runtime made for it on
    /// this thread: made, then kept.
    fn get_twice_on_a_new_runtime(broker: &PerThread) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            broker.get().expect("made on this runtime");
            broker.get().expect("kept on this runtime");
        });
    }

    fn connections_here() -> usize {
        CONNECTIONS.with(|connections| connections.borrow().len())
    }

    #[tokio::test]
    async fn a_thread_keeps_one_connection_per_broker() {
        let ((_a, first), (_b, second)) = (hearing(), hearing());
        first.get().expect("made");
        first.get().expect("kept");
        second.get().expect("made");
        assert_eq!((first.made(), second.made()), (1, 1));
        assert_eq!(connections_here(), 2);
    }

    #[tokio::test]
    async fn a_broker_gone_leaves_no_connection_behind() {
        let (_a, gone) = hearing();
        gone.get().expect("made");
        drop(gone);
        let (_b, other) = hearing();
        other.get().expect("made");
        assert_eq!(connections_here(), 1);
    }

    #[tokio::test]
    async fn another_thread_makes_its_own() {
        let (_subscription, broker) = hearing();
        let broker = Arc::new(broker);
        broker.get().expect("made here");
        let elsewhere = Arc::clone(&broker);
        let there = std::thread::spawn(move || {
            get_twice_on_a_new_runtime(&elsewhere);
            connections_here()
        })
        .join()
        .expect("the thread ran");
        assert_eq!((there, connections_here(), broker.made()), (1, 1, 2));
    }

    #[test]
    fn a_thread_that_runs_another_runtime_makes_another() {
        let (_subscription, broker) = hearing();
        for _ in 0..2 {
            get_twice_on_a_new_runtime(&broker);
        }
        assert_eq!((broker.made(), connections_here()), (2, 1));
    }

    #[tokio::test]
    async fn connections_made_before_the_subscription_found_redis_again_are_replaced() {
        let (subscription, broker) = hearing();
        broker.get().expect("made");
        broker.get().expect("kept");
        assert_eq!(broker.made(), 1);

        subscription.send_replace(false);
        subscription.send_replace(true);
        broker.get().expect("replaced");
        broker.get().expect("kept");
        assert_eq!(broker.made(), 2, "replaced once, then kept");
    }

    #[tokio::test]
    async fn a_timeout_renews_every_connection_at_most_once_per_interval() {
        let (_subscription, broker) = hearing();
        broker.get().expect("made");
        assert!(broker.timed_out(Duration::from_secs(60)));
        assert!(
            !broker.timed_out(Duration::from_secs(60)),
            "renewed just now"
        );
        broker.get().expect("replaced");
        broker.get().expect("kept");
        assert_eq!(broker.made(), 2);
        assert!(broker.timed_out(Duration::ZERO), "the interval is over");
    }

    #[tokio::test]
    async fn a_timeout_while_redis_is_unheard_renews_nothing() {
        let (_subscription, broker) = subscription_that_hears(false);
        broker.get().expect("made");
        assert!(!broker.timed_out(Duration::ZERO));
        broker.get().expect("kept");
        assert_eq!(broker.made(), 1);
    }
}
