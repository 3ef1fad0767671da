//! One room's state in one instance: the ring of recent messages, the last
//! id, and this instance's clients of it, grouped by the thread serving them
//! (see [`Group`]).
//!
//! Invariant: the ring is contiguous. It holds exactly the ids
//! `base + 1 ..= base + ring.len()`, so "does the ring cover `after`?" is one
//! comparison and a read is an index. Whatever the ring does not cover is
//! read from the broker's history.
//!
//! A room lives in an instance only while its own clients use it: it is
//! created for a subscriber, a held poll or a read, and retired by the
//! sweeper once unused for `ROOM_IDLE_SECS` (or evicted earlier when the
//! hub is over its memory budget). What it holds is counted, in bytes, in
//! the hub's [`HubMemory`].
//!
//! All state sits behind one std `Mutex`: every critical section is a few
//! pointer copies and non-blocking queue pushes, never an `.await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use prometheus::{IntCounter, IntGauge};

use super::entry::{Entry, Socket};
use super::group::{Group, Ring, SlotShared};
use super::relay::Relay;
use crate::message::RoomName;

/// Counters the hub reports into `/metrics`.
#[derive(Debug, Clone)]
pub struct HubMetrics {
    /// Streaming clients dropped from the fan-out because their queue was full.
    pub slow_clients: IntCounter,
    /// Of those, the ones that took no data at all and were disconnected.
    pub slow_clients_disconnected: IntCounter,
    /// Rooms this instance holds.
    pub rooms: IntGauge,
    /// Bytes the rooms hold (their recent messages and bookkeeping).
    pub memory_bytes: IntGauge,
    /// Rooms dropped before their idle time to stay within the budget.
    pub rooms_evicted: IntCounter,
    /// Live messages heard from the broker (of the rooms subscribed to).
    pub received: IntCounter,
}

/// What a room costs besides its messages: its state, its name, its place in
/// the hub's map. Counted so that rooms holding nothing (opened by readers
/// of made-up names) still count against the budget.
pub(super) const ROOM_OVERHEAD_BYTES: usize = 512;

/// The bytes all rooms hold, against the hub's budget (`HUB_MEMORY_MB`).
#[derive(Debug)]
pub(super) struct HubMemory {
    used: AtomicUsize,
    pub(super) budget: usize,
    gauge: IntGauge,
}

impl HubMemory {
    pub(super) fn new(budget: usize, gauge: IntGauge) -> Self {
        HubMemory {
            used: AtomicUsize::new(0),
            budget,
            gauge,
        }
    }

    pub(super) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub(super) fn is_over_budget(&self) -> bool {
        self.used() > self.budget
    }

    fn add(&self, bytes: usize) {
        let used = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.gauge.set(i64::try_from(used).unwrap_or(i64::MAX));
    }

    fn sub(&self, bytes: usize) {
        let used = self.used.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        self.gauge.set(i64::try_from(used).unwrap_or(i64::MAX));
    }
}

/// The settings every room applies, bundled with the counters it bumps.
#[derive(Debug)]
pub(super) struct Policy {
    pub(super) ring_len: usize,
    pub(super) queue_len: usize,
    pub(super) slow_client_timeout: Duration,
    pub(super) metrics: HubMetrics,
    pub(super) memory: HubMemory,
}

#[derive(Debug)]
pub(super) struct Room {
    pub(super) name: RoomName,
    state: Mutex<RoomState>,
}

#[derive(Debug)]
struct RoomState {
    /// Whether `base` is known. A room is synced by its first message or by
    /// asking the broker for its sequence, whichever comes first.
    synced: bool,
    base: u64,
    ring: VecDeque<Arc<Entry>>,
    /// This instance's clients of the room: streaming subscribers and held
    /// polls, one group per relay (thread) serving them.
    groups: Vec<Group>,
    /// Bytes of the entries in `ring`.
    ring_bytes: usize,
    /// Whether the broker was asked to let this instance hear the room's
    /// live messages (false once no client here used it for a while).
    watched: bool,
    /// The ring may lack the newest messages: the room went unwatched, and
    /// messages published meanwhile were not heard. The next client to use
    /// it has it caught up from history first.
    stale: bool,
    /// Set when the sweeper drops the room from the hub; whoever still holds
    /// it must look the room up again.
    retired: bool,
    /// When a client of this instance last used the room (joined, left,
    /// waited, read). Messages arriving do not count: a room nobody here
    /// uses is freed however busy it is elsewhere.
    last_used: Instant,
}

impl RoomState {
    fn last(&self) -> u64 {
        self.base + self.ring.len() as u64
    }

    /// Drops the oldest entry; the ring stays contiguous (it starts one id
    /// later). Returns the bytes freed.
    fn pop_oldest(&mut self) -> usize {
        let Some(oldest) = self.ring.pop_front() else {
            return 0;
        };
        self.base += 1;
        self.ring_bytes -= oldest.size();
        oldest.size()
    }

    /// Hands each group, here and now, what it was not handed yet of the
    /// `count` oldest entries, about to leave the ring: its relay has not
    /// got to them (it is a whole ring behind, or the ring is trimmed or
    /// starts over), and its subscribers must not lose them for that. Rare,
    /// so the cross-thread wakes it costs do not matter.
    fn hand_out_before_dropping(&mut self, count: usize, policy: &Policy) {
        let oldest_kept = self.base + count as u64 + 1;
        let RoomState {
            ring, base, groups, ..
        } = self;
        let ring = Ring {
            entries: ring,
            base: *base,
        };
        for group in groups
            .iter_mut()
            .filter(|group| group.owed_before(oldest_kept))
        {
            group.hand_out(&ring, policy);
        }
    }

    /// Whether a client of this instance holds the room (a subscriber or a
    /// held poll).
    fn in_use(&mut self) -> bool {
        self.groups.retain_mut(Group::is_in_use);
        !self.groups.is_empty()
    }

    /// `relay`'s group, made if it has none.
    fn group_of(&mut self, relay: &Arc<Relay>) -> &mut Group {
        let index = match self.position_of(relay) {
            Some(index) => index,
            None => {
                let last = self.last();
                self.groups.push(Group::new(Arc::clone(relay), last));
                self.groups.len() - 1
            }
        };
        &mut self.groups[index]
    }

    fn position_of(&self, relay: &Arc<Relay>) -> Option<usize> {
        self.groups
            .iter()
            .position(|group| Arc::ptr_eq(&group.relay, relay))
    }
}

/// What happened to a message offered to the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Append {
    Appended,
    /// Already held (pub/sub and history overlap after a re-sync).
    Duplicate,
    /// Ids between the room's last and this one are missing.
    Behind {
        last: u64,
    },
    /// Ids between the room's last and this one are gone for good: the ring
    /// started over at this message.
    Restarted {
        last: u64,
    },
}

/// What to do with a message whose predecessors are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IfBehind {
    /// Leave the ring as it is and say so ([`Append::Behind`]): the caller
    /// will look for the missing ones.
    Report,
    /// They were looked for and are gone: start the ring over here.
    Restart,
}

/// What the ring can say about the messages after a cursor.
#[derive(Debug)]
pub(super) enum RingRead {
    Served(Vec<Arc<Entry>>),
    /// The cursor is the last id: nothing newer yet.
    AtEnd,
    /// The cursor is beyond the last id this instance knows.
    Ahead,
    /// The ring starts after the cursor; history must answer. `head` is
    /// what the ring holds from its start (up to the limit), in case history
    /// does not reach back either.
    Older {
        head: Vec<Arc<Entry>>,
        last: u64,
    },
}

/// How a held poll waits.
#[derive(Debug)]
pub(super) enum Wait {
    /// The room already holds a message beyond the cursor.
    Beyond,
    /// Woken by the next message.
    Until(oneshot::Receiver<()>),
    /// The room was retired or is not synced: look it up and sync again.
    Retired,
}

impl Room {
    /// A new, unsynced room; its bookkeeping counts against `memory` until
    /// it is retired.
    pub(super) fn new(name: RoomName, memory: &HubMemory) -> Self {
        memory.add(ROOM_OVERHEAD_BYTES);
        Room {
            name,
            state: Mutex::new(RoomState {
                synced: false,
                base: 0,
                ring: VecDeque::new(),
                groups: Vec::new(),
                ring_bytes: 0,
                watched: true,
                stale: false,
                retired: false,
                last_used: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        // A panic while holding this lock cannot leave the ring half-updated
        // in a way later readers would trip over (each step is one push or
        // pop), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(super) fn is_synced(&self) -> bool {
        self.lock().synced
    }

    /// The last id if the room is synced.
    pub(super) fn last(&self) -> Option<u64> {
        let state = self.lock();
        state.synced.then(|| state.last())
    }

    /// Sets the room's position from the broker's sequence, unless a message
    /// already did (a message is always at least as recent).
    pub(super) fn sync_to(&self, sequence: u64) {
        let mut state = self.lock();
        if !state.synced {
            state.synced = true;
            state.base = sequence;
        }
    }

    /// Offers the next message. Appends it only if it is exactly the next id,
    /// so the ring stays contiguous. Decided in one look at the ring: the
    /// ingest task and a re-sync may offer messages at the same time.
    ///
    /// Restarting the ring drops what it held before `entry`: those ids are
    /// gone from history and will never arrive. Subscribers see the jump
    /// and ask history, which tells them about the gap.
    pub(super) fn append(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        policy: &Policy,
        if_behind: IfBehind,
    ) -> Append {
        let mut state = self.lock();
        let id = entry.id();
        if !state.synced {
            state.synced = true;
            state.base = id - 1;
        }
        let last = state.last();
        if id <= last {
            return Append::Duplicate;
        }
        if id > last + 1 {
            if if_behind == IfBehind::Report {
                return Append::Behind { last };
            }
            let freed = state.ring_bytes;
            let held = state.ring.len();
            state.hand_out_before_dropping(held, policy);
            state.ring.clear();
            state.ring_bytes = 0;
            policy.memory.sub(freed);
            state.base = id - 1;
            let base = state.base;
            for group in &mut state.groups {
                group.restart_at(base);
            }
            self.push(&mut state, entry, policy);
            return Append::Restarted { last };
        }
        self.push(&mut state, entry, policy);
        Append::Appended
    }

    fn push(self: &Arc<Self>, state: &mut RoomState, entry: &Arc<Entry>, policy: &Policy) {
        state.ring.push_back(Arc::clone(entry));
        state.ring_bytes += entry.size();
        policy.memory.add(entry.size());
        if state.ring.len() > policy.ring_len {
            state.hand_out_before_dropping(1, policy);
            policy.memory.sub(state.pop_oldest());
        }
        // Fan-out: each thread serving clients of the room is told once,
        // and hands out on its own (see Group).
        for group in &mut state.groups {
            if group.mark_pending() {
                group.relay.enqueue(Arc::clone(self));
            }
        }
    }

    /// Hands `relay`'s clients what arrived since it last did (the relay
    /// calls this on its thread).
    pub(super) fn hand_out(&self, relay: &Arc<Relay>, policy: &Policy) {
        let mut state = self.lock();
        let Some(index) = state.position_of(relay) else {
            return;
        };
        let RoomState {
            ring, base, groups, ..
        } = &mut *state;
        let ring = Ring {
            entries: ring,
            base: *base,
        };
        groups[index].served();
        groups[index].hand_out(&ring, policy);
        // Held polls are answered once woken: a group left with no client
        // is dropped rather than served on every message to come.
        if !groups[index].is_in_use() {
            groups.swap_remove(index);
        }
    }

    pub(super) fn read(&self, after: u64, limit: usize) -> RingRead {
        let state = self.lock();
        let last = state.last();
        if after == last {
            return RingRead::AtEnd;
        }
        if after > last {
            return RingRead::Ahead;
        }
        if after >= state.base {
            let start = usize::try_from(after - state.base).unwrap_or(usize::MAX);
            return RingRead::Served(state.ring.iter().skip(start).take(limit).cloned().collect());
        }
        RingRead::Older {
            head: state.ring.iter().take(limit).cloned().collect(),
            last,
        }
    }

    /// The newest `limit` messages if the ring can tell them all.
    pub(super) fn latest(&self, limit: usize) -> Option<Vec<Arc<Entry>>> {
        let state = self.lock();
        if state.ring.len() < limit && state.base > 0 {
            return None;
        }
        let skip = state.ring.len().saturating_sub(limit);
        Some(state.ring.iter().skip(skip).cloned().collect())
    }

    /// Adds a streaming subscriber, served by `relay`. `None` if the room
    /// was retired, or does not know its position yet (sync it first).
    pub(super) fn join(
        &self,
        relay: &Arc<Relay>,
        policy: &Policy,
        socket: Option<Socket>,
    ) -> Option<(Arc<SlotShared>, mpsc::Receiver<Arc<Entry>>, u64)> {
        let mut state = self.lock();
        if state.retired || !state.synced {
            return None;
        }
        state.last_used = Instant::now();
        let last = state.last();
        let (shared, receiver) = state.group_of(relay).join(policy.queue_len, socket, last);
        Some((shared, receiver, last))
    }

    pub(super) fn leave(&self, relay: &Arc<Relay>, shared: &Arc<SlotShared>) {
        let mut state = self.lock();
        state.last_used = Instant::now();
        if let Some(index) = state.position_of(relay) {
            state.groups[index].leave(shared);
            if !state.groups[index].is_in_use() {
                state.groups.swap_remove(index);
            }
        }
    }

    /// Holds a poll, served by `relay`, until the room has a message beyond
    /// `after`. Looked at under the room's lock, so no message slips
    /// between the poll's read and its wait.
    pub(super) fn wait(&self, relay: &Arc<Relay>, after: u64) -> Wait {
        let mut state = self.lock();
        if state.retired || !state.synced {
            return Wait::Retired;
        }
        state.last_used = Instant::now();
        if state.last() > after {
            return Wait::Beyond;
        }
        Wait::Until(state.group_of(relay).wait())
    }

    /// Notes that a client of this instance used the room; if the room went
    /// unwatched while nobody used it, `watch` asks the broker again (under
    /// the room's lock, so it cannot cross an unwatch).
    pub(super) fn touch(&self, watch: impl FnOnce()) {
        let mut state = self.lock();
        state.last_used = Instant::now();
        if !state.watched && !state.retired {
            state.watched = true;
            watch();
        }
    }

    /// Whether the ring may lack the newest messages (see `stale`).
    pub(super) fn is_stale(&self) -> bool {
        self.lock().stale
    }

    /// The room was caught up from history after going stale.
    pub(super) fn caught_up(&self) {
        self.lock().stale = false;
    }

    /// Stops watching the room (`unwatch` tells the broker, under the
    /// room's lock) if no client holds it and none used it for `grace`.
    pub(super) fn unwatch_if_unused(&self, grace: Duration, unwatch: impl FnOnce()) {
        let mut state = self.lock();
        let unused = !state.in_use();
        if state.watched && !state.retired && unused && state.last_used.elapsed() >= grace {
            state.watched = false;
            state.stale = true;
            unwatch();
        }
    }

    /// Whether no client holds the room now (no subscriber, no held poll),
    /// and since when nobody used it.
    pub(super) fn unused_since(&self) -> Option<Instant> {
        let mut state = self.lock();
        let unused = !state.in_use();
        unused.then_some(state.last_used)
    }

    /// Retires the room if no client holds it and none used it for `idle`
    /// (or `force`, to stay within the memory budget), giving back its
    /// bytes. Called with the hub's room map locked, which removes it.
    /// (`unwatch` tells the broker, if the room was still watched.)
    pub(super) fn retire_if_unused(
        &self,
        idle: Duration,
        force: bool,
        memory: &HubMemory,
        unwatch: impl FnOnce(),
    ) -> bool {
        let mut state = self.lock();
        let unused = !state.in_use();
        if !state.retired && unused && (force || state.last_used.elapsed() >= idle) {
            state.retired = true;
            memory.sub(state.ring_bytes + ROOM_OVERHEAD_BYTES);
            // The floor remembered for the room is its last id, not the
            // ring's start.
            state.base = state.last();
            state.ring.clear();
            state.ring_bytes = 0;
            if std::mem::replace(&mut state.watched, false) {
                unwatch();
            }
        }
        state.retired
    }

    /// Drops the oldest messages until the ring holds at most `keep` bytes
    /// (a room in use, trimmed to stay within the budget: its readers get
    /// older messages from history). Returns the bytes freed.
    pub(super) fn trim_to(&self, keep: usize, policy: &Policy) -> usize {
        let mut state = self.lock();
        let mut dropped = 0;
        let mut bytes = state.ring_bytes;
        for entry in &state.ring {
            if bytes <= keep {
                break;
            }
            bytes -= entry.size();
            dropped += 1;
        }
        state.hand_out_before_dropping(dropped, policy);
        let mut freed = 0;
        for _ in 0..dropped {
            freed += state.pop_oldest();
        }
        policy.memory.sub(freed);
        freed
    }

    /// Bytes the ring holds.
    pub(super) fn ring_bytes(&self) -> usize {
        self.lock().ring_bytes
    }
}
