//! Connection caps: how many streams, sockets and held polls an instance,
//! and each client, may hold at once.
//!
//! A connection takes a [`ConnectionPermit`] before any stream or upgrade
//! starts, so a refusal is an ordinary JSON answer; the permit gives its
//! place back when dropped, however the connection ends. The count per
//! client lives only while the client holds a connection, so the map is
//! bounded by the connections themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::IntGauge;

use crate::client::ClientId;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooManyConnections {
    #[error("this instance holds {0} connections, its most; retry (another instance may answer)")]
    Instance(usize),
    #[error("this client holds {0} connections, its most; close one first")]
    Client(usize),
}

/// The caps and the counts; shared by every worker.
#[derive(Debug)]
pub struct ConnectionCaps {
    /// The instance's cap; `usize::MAX` when off.
    max: usize,
    /// Each client's cap; `usize::MAX` when off.
    max_per_client: usize,
    held: AtomicUsize,
    /// Connections held per client; a client holding none has no entry.
    /// A std mutex: a lookup and an increment, never held across an await.
    per_client: Mutex<HashMap<ClientId, usize>>,
    /// `connected_clients` in `/metrics`.
    gauge: IntGauge,
}

impl ConnectionCaps {
    /// `0` turns a cap off.
    pub fn new(max: usize, max_per_client: usize, gauge: IntGauge) -> Arc<Self> {
        let cap = |max: usize| if max == 0 { usize::MAX } else { max };
        Arc::new(ConnectionCaps {
            max: cap(max),
            max_per_client: cap(max_per_client),
            held: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            gauge,
        })
    }

    fn per_client(&self) -> MutexGuard<'_, HashMap<ClientId, usize>> {
        // Each critical section is one increment or decrement: a panic
        // cannot leave a count half-changed.
        self.per_client
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A place for one more connection of `client`, if both caps allow.
    pub fn acquire(
        self: &Arc<Self>,
        client: &ClientId,
    ) -> Result<ConnectionPermit, TooManyConnections> {
        let mut per_client = self.per_client();
        let count = per_client.get(client).copied().unwrap_or(0);
        if count >= self.max_per_client {
            return Err(TooManyConnections::Client(self.max_per_client));
        }
        // Under the map's lock, so the two counts move together.
        if self.held.load(Ordering::Relaxed) >= self.max {
            return Err(TooManyConnections::Instance(self.max));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        per_client.insert(client.clone(), count + 1);
        self.gauge.inc();
        Ok(ConnectionPermit {
            caps: Arc::clone(self),
            client: client.clone(),
        })
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// One connection's place; given back when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    caps: Arc<ConnectionCaps>,
    client: ClientId,
}

impl ConnectionPermit {
    pub fn client(&self) -> &ClientId {
        &self.client
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut per_client = self.caps.per_client();
        if let Some(count) = per_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                per_client.remove(&self.client);
            }
        }
        self.caps.held.fetch_sub(1, Ordering::Relaxed);
        self.caps.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(address: &str) -> ClientId {
        ClientId::from_address(address.parse().expect("an address"))
    }

    fn caps(max: usize, per_client: usize) -> Arc<ConnectionCaps> {
        ConnectionCaps::new(
            max,
            per_client,
            IntGauge::new("connected", "test").expect("a gauge"),
        )
    }

    #[test]
    fn a_client_over_its_cap_is_refused_while_others_are_not() {
        let caps = caps(10, 2);
        let alice = client("10.0.0.1");
        let _held = [caps.acquire(&alice), caps.acquire(&alice)];
        assert_eq!(
            caps.acquire(&alice).err(),
            Some(TooManyConnections::Client(2))
        );
        assert!(caps.acquire(&client("10.0.0.2")).is_ok());
    }

    #[test]
    fn a_full_instance_refuses_everyone_until_a_place_is_given_back() {
        let caps = caps(2, 0);
        let first = caps.acquire(&client("10.0.0.1")).expect("room");
        let _second = caps.acquire(&client("10.0.0.2")).expect("room");
        assert_eq!(
            caps.acquire(&client("10.0.0.3")).err(),
            Some(TooManyConnections::Instance(2))
        );
        drop(first);
        assert!(caps.acquire(&client("10.0.0.3")).is_ok());
    }

    #[test]
    fn a_client_holding_nothing_leaves_no_trace() {
        let caps = caps(0, 0);
        drop(caps.acquire(&client("10.0.0.1")));
        assert_eq!(caps.held(), 0);
        assert!(caps.per_client().is_empty());
        assert_eq!(caps.gauge.get(), 0);
    }
}
