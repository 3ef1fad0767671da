//! One command connection to a single Redis for each thread that sends
//! commands, made on that thread and kept there.
//!
//! Why: a connection's driver task runs on the runtime where the
//! connection was made. Shared by every HTTP worker, that is one thread for
//! all of them, and each command then crosses threads twice (the worker
//! hands it to the driver's thread, the reply comes back), waking a
//! sleeping thread each time. At a few hundred publishes a second those
//! wake-ups were about half of a publish's CPU. A connection per thread
//! keeps a command on the thread that asked, from request to reply.
//!
//! A connection dies with its thread's runtime, and only that thread ever
//! used it. The connections of a broker that is gone are dropped by the
//! next lookup on their thread, or when the thread ends.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::Client;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

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
}

/// One thread's connection for one broker.
struct Local {
    broker: u64,
    alive: Weak<()>,
    connection: ConnectionManager,
    made: Instant,
}

thread_local! {
    static CONNECTIONS: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl PerThread {
    pub(super) fn new(client: Client, config: ConnectionManagerConfig) -> Self {
        PerThread {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
            client,
            config,
        }
    }

    /// This thread's connection, made on first use. Must be called within
    /// a Tokio runtime (the connection's driver is spawned on it). A thread
    /// whose thread-locals are already gone (it is ending) gets a
    /// connection of its own for this one command.
    pub(super) fn get(&self) -> redis::RedisResult<ConnectionManager> {
        CONNECTIONS
            .try_with(|connections| {
                let mut connections = connections.borrow_mut();
                connections.retain(|local| local.alive.strong_count() > 0);
                if let Some(local) = connections.iter().find(|local| local.broker == self.id) {
                    return Ok(local.connection.clone());
                }
                let connection = self.connect()?;
                connections.push(Local {
                    broker: self.id,
                    alive: Arc::downgrade(&self.alive),
                    connection: connection.clone(),
                    made: Instant::now(),
                });
                Ok(connection)
            })
            .unwrap_or_else(|_| self.connect())
    }

    /// Replaces this thread's connection with a new one, unless it was made
    /// less than `after` ago. Says whether it did.
    pub(super) fn renew(&self, after: Duration) -> redis::RedisResult<bool> {
        CONNECTIONS
            .try_with(|connections| {
                let mut connections = connections.borrow_mut();
                let Some(local) = connections.iter_mut().find(|local| local.broker == self.id)
                else {
                    return Ok(false);
                };
                if local.made.elapsed() < after {
                    return Ok(false);
                }
                local.connection = self.connect()?;
                local.made = Instant::now();
                Ok(true)
            })
            .unwrap_or(Ok(false))
    }

    /// A new connection, which connects in the background: Redis may be
    /// down now.
    fn connect(&self) -> redis::RedisResult<ConnectionManager> {
        ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
    }
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("broker", &self.broker)
            .field("made", &self.made)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_thread() -> PerThread {
        // Nothing listens there: connections are lazy, nothing is sent.
        let client = Client::open("redis://127.0.0.1:1/").expect("a valid URL");
        PerThread::new(client, ConnectionManagerConfig::new())
    }

    fn connections_here() -> usize {
        CONNECTIONS.with(|connections| connections.borrow().len())
    }

    #[tokio::test]
    async fn a_thread_keeps_one_connection_per_broker() {
        let (first, second) = (per_thread(), per_thread());
        first.get().expect("made");
        first.get().expect("kept");
        second.get().expect("made");
        assert_eq!(connections_here(), 2);
    }

    #[tokio::test]
    async fn a_broker_gone_leaves_no_connection_behind() {
        let gone = per_thread();
        gone.get().expect("made");
        drop(gone);
        let other = per_thread();
        other.get().expect("made");
        assert_eq!(connections_here(), 1);
    }

    #[tokio::test]
    async fn another_thread_makes_its_own() {
        let broker = Arc::new(per_thread());
        broker.get().expect("made here");
        let elsewhere = Arc::clone(&broker);
        let there = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let _inside = runtime.enter();
            elsewhere.get().expect("made there");
            connections_here()
        })
        .await
        .expect("the thread ran");
        assert_eq!((there, connections_here()), (1, 1));
    }

    #[tokio::test]
    async fn a_connection_is_renewed_only_once_it_is_old_enough() {
        let broker = per_thread();
        assert!(!broker.renew(Duration::ZERO).expect("no error"), "none yet");
        broker.get().expect("made");
        assert!(!broker.renew(Duration::from_secs(60)).expect("no error"));
        assert!(broker.renew(Duration::ZERO).expect("no error"));
        assert_eq!(connections_here(), 1);
    }
}
