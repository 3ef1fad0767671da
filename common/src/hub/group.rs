//! A room's clients on one [`Relay`]: the streaming subscribers and the
//! held long polls of one thread, and how far they have been served.
//!
//! The room keeps one group per relay that has clients in it. A message
//! appended to the room only marks each group pending (and hands the room
//! to the group's relay once); the relay, on the clients' own thread, then
//! hands the group everything the ring holds beyond `delivered`. So the
//! thread that takes messages from the broker wakes one relay per thread
//! per message, not one task per client, and a relay that wakes late hands
//! out several messages at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::entry::{Entry, Socket};
use super::relay::Relay;
use super::room::Policy;

#[derive(Debug)]
pub(super) struct Group {
    pub(super) relay: Arc<Relay>,
    /// The last id handed to this group's clients.
    delivered: u64,
    /// Whether the relay was told about this room since it last served it.
    pending: bool,
    slots: Vec<Slot>,
    waiters: Vec<oneshot::Sender<()>>,
}

/// A streaming subscriber's end of the fan-out.
#[derive(Debug)]
struct Slot {
    queue: mpsc::Sender<Arc<Entry>>,
    shared: Arc<SlotShared>,
    socket: Option<Socket>,
    /// The room's last id when it joined: it already has (or reads from
    /// the ring or history) everything up to there.
    joined_at: u64,
}

/// What a slot and its [`Subscription`](super::Subscription) both see.
#[derive(Debug, Default)]
pub(super) struct SlotShared {
    /// Set when the slot is dropped for a full queue; cleared when the
    /// subscriber notices (it drained the queue and joins again).
    lagging: AtomicBool,
    /// Messages the subscriber has taken from its queue: while it lags, a
    /// count that stops moving for the slow-client timeout means the client
    /// takes no data at all, and its connection is cut.
    taken: AtomicU64,
}

impl SlotShared {
    pub(super) fn noticed(&self) {
        self.lagging.store(false, Ordering::Release);
    }

    pub(super) fn took_one(&self) {
        self.taken.fetch_add(1, Ordering::Relaxed);
    }
}

/// The ring as a group reads it: the entries, and the id before the first.
pub(super) struct Ring<'a> {
    pub(super) entries: &'a VecDeque<Arc<Entry>>,
    pub(super) base: u64,
}

impl Ring<'_> {
    fn last(&self) -> u64 {
        self.base + self.entries.len() as u64
    }
}

impl Group {
    /// A group for `relay`'s clients, joining when the room's last id is
    /// `last`.
    pub(super) fn new(relay: Arc<Relay>, last: u64) -> Self {
        Group {
            relay,
            delivered: last,
            pending: false,
            slots: Vec::new(),
            waiters: Vec::new(),
        }
    }

    /// Whether the group still has clients (closed waits are dropped
    /// first: a poll that gave up leaves its sender behind).
    pub(super) fn is_in_use(&mut self) -> bool {
        self.waiters.retain(|waiter| !waiter.is_closed());
        !self.slots.is_empty() || !self.waiters.is_empty()
    }

    /// Adds a subscriber that has everything up to `last`.
    pub(super) fn join(
        &mut self,
        queue_len: usize,
        socket: Option<Socket>,
        last: u64,
    ) -> (Arc<SlotShared>, mpsc::Receiver<Arc<Entry>>) {
        let (queue, receiver) = mpsc::channel(queue_len);
        let shared = Arc::new(SlotShared::default());
        self.slots.push(Slot {
            queue,
            shared: Arc::clone(&shared),
            socket,
            joined_at: last,
        });
        (shared, receiver)
    }

    pub(super) fn leave(&mut self, shared: &Arc<SlotShared>) {
        if let Some(index) = self
            .slots
            .iter()
            .position(|slot| Arc::ptr_eq(&slot.shared, shared))
        {
            self.slots.swap_remove(index);
        }
    }

    /// Adds a held poll, woken by the next message this group is handed.
    pub(super) fn wait(&mut self) -> oneshot::Receiver<()> {
        let (wake, woken) = oneshot::channel();
        self.waiters.retain(|waiter| !waiter.is_closed());
        self.waiters.push(wake);
        woken
    }

    /// Notes a new message; true if the relay must be told (once until it
    /// serves the group).
    pub(super) fn mark_pending(&mut self) -> bool {
        !std::mem::replace(&mut self.pending, true)
    }

    /// The relay is serving the group: the next message must tell it again.
    pub(super) fn served(&mut self) {
        self.pending = false;
    }

    /// Whether the group was not handed some entry before id `id` yet.
    pub(super) fn owed_before(&self, id: u64) -> bool {
        self.delivered + 1 < id
    }

    /// The ring started over after `base` (the ids before are gone): what
    /// the group had not handed out yet is not coming; its subscribers are
    /// handed the next message, see the jump and ask history.
    pub(super) fn restart_at(&mut self, base: u64) {
        self.delivered = base;
    }

    /// Hands the group's clients what the ring holds beyond `delivered`:
    /// one non-blocking push per subscriber and message. A full queue means
    /// a client that is not keeping up; it is dropped from the fan-out here
    /// and catches up from history on its own time (see Subscription).
    pub(super) fn hand_out(&mut self, ring: &Ring<'_>, policy: &Policy) {
        let last = ring.last();
        if self.delivered >= last {
            return;
        }
        if self.delivered < ring.base {
            // The ring dropped messages before this relay got to them (it
            // fell a whole ring behind, or the ring was trimmed for memory):
            // every subscriber here catches up from history.
            for slot in self.slots.drain(..) {
                slot.evict(policy);
            }
            self.delivered = ring.base;
        }
        let skip = usize::try_from(self.delivered - ring.base).unwrap_or(usize::MAX);
        let fresh = || ring.entries.iter().skip(skip);
        self.slots.retain(|slot| {
            for entry in fresh().filter(|entry| entry.id() > slot.joined_at) {
                match slot.queue.try_send(Arc::clone(entry)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        policy.metrics.slow_clients.inc();
                        slot.evict(policy);
                        return false;
                    }
                    Err(TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
        self.delivered = last;
        for waiter in self.waiters.drain(..) {
            // A poll that gave up meanwhile is gone; nothing to wake.
            let _ = waiter.send(());
        }
    }
}

impl Slot {
    /// Drops the subscriber from the fan-out (its queue closes once drained)
    /// and, if the transport can cut its connection, cuts it should the
    /// client take nothing from its queue for a whole slow-client timeout.
    fn evict(&self, policy: &Policy) {
        self.shared.lagging.store(true, Ordering::Release);
        let Some(socket) = self.socket.clone() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let disconnected = policy.metrics.slow_clients_disconnected.clone();
        let stall = policy.slow_client_timeout;
        tokio::spawn(async move {
            // A client that reads, however slowly, shows progress: it takes
            // messages from its queue, or (when the kernel's buffers are
            // large and the server is not even asked for more) the bytes
            // waiting for it change as it acknowledges them. One that shows
            // neither for a whole timeout takes no data at all.
            let progress = || (shared.taken.load(Ordering::Relaxed), socket.unsent_bytes());
            let mut seen = progress();
            loop {
                tokio::time::sleep(stall).await;
                if !shared.lagging.load(Ordering::Acquire) {
                    return;
                }
                let now = progress();
                if now == seen {
                    disconnected.inc();
                    socket.cut();
                    return;
                }
                seen = now;
            }
        });
    }
}
