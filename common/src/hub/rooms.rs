//! The rooms this instance holds, and the reads and writes that keep each
//! room's ring contiguous: taking messages from the broker (filling holes
//! from history), re-syncing after a reconnect, and answering "everything
//! after id N" from the ring, from history, or with a [`Gap`].
//!
//! [`Hub`](super::Hub) is the public handle; its tasks and the
//! [`Subscription`](super::Subscription)s share one `Rooms`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::entry::{Entry, Framer, Gap, Page};
use super::room::{Append, IfBehind, Policy, ROOM_OVERHEAD_BYTES, RingRead, Room};
use crate::backoff::Backoff;
use crate::broker::{Broker, BrokerError};
use crate::message::{Message, RoomName};

/// How many messages one replay or catch-up read asks for.
pub(super) const READ_BATCH: usize = 500;
/// Rooms re-synced at once after a reconnect.
const RESYNC_CONCURRENCY: usize = 16;
/// Reads of a gap from history before giving up on it.
const GAP_FILL_ATTEMPTS: u32 = 2;
/// Rooms whose last id this instance remembers after freeing them, at most
/// (a few dozen bytes each).
const MAX_REMEMBERED_FLOORS: usize = 65_536;
/// Eviction for the memory budget frees down to this share of it, so the
/// next messages do not trigger it again at once.
const BUDGET_LOW_WATER_PERCENT: usize = 90;

#[derive(Debug)]
pub(super) struct Rooms {
    pub(super) broker: Arc<dyn Broker>,
    rooms: Mutex<HashMap<RoomName, Arc<Room>>>,
    /// The last id of rooms this instance held and freed: publishes and
    /// syncs pass it to the broker as a floor, so a room's ids never go
    /// back below what this instance once served, even if Redis lost the
    /// room meanwhile. A std mutex: lookups and inserts only.
    floors: Mutex<HashMap<RoomName, u64>>,
    pub(super) framer: Framer,
    pub(super) policy: Policy,
    room_idle: Duration,
    /// Cancelled when the hub stops: its tasks (relays included) end.
    pub(super) stop: CancellationToken,
}

impl Rooms {
    pub(super) fn new(
        broker: Arc<dyn Broker>,
        framer: Framer,
        policy: Policy,
        room_idle: Duration,
        stop: CancellationToken,
    ) -> Self {
        Rooms {
            broker,
            rooms: Mutex::new(HashMap::new()),
            floors: Mutex::new(HashMap::new()),
            framer,
            policy,
            room_idle,
            stop,
        }
    }

    /// The room if this instance holds it.
    pub(super) fn get(&self, name: &RoomName) -> Option<Arc<Room>> {
        self.map().get(name).cloned()
    }

    /// The highest id this instance knows the room reached: its last id if
    /// held, else the one remembered when it was freed, else 0.
    pub(super) fn floor(&self, name: &RoomName) -> u64 {
        match self.get(name).and_then(|room| room.last()) {
            Some(last) => last,
            None => self.remembered_floor(name),
        }
    }

    fn remembered_floor(&self, name: &RoomName) -> u64 {
        self.floors
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn remember_floor(&self, name: &RoomName, last: u64) {
        let mut floors = self
            .floors
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if floors.len() >= MAX_REMEMBERED_FLOORS && !floors.contains_key(name) {
            // Forget an arbitrary half: a floor is a safeguard for rare
            // data loss, not a record.
            let mut keep = false;
            floors.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
        floors.insert(name.clone(), last);
    }

    pub(super) fn len(&self) -> usize {
        self.map().len()
    }

    /// Bytes the rooms hold now.
    pub(super) fn memory_used(&self) -> usize {
        self.policy.memory.used()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<RoomName, Arc<Room>>> {
        // Only lookups and inserts happen under this lock; nothing can be
        // left half-done by a panic, so a poisoned lock is still usable.
        self.rooms
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The room, for a client of this instance: created (unsynced) if this
    /// instance does not hold it.
    pub(super) fn room(&self, name: &RoomName) -> Arc<Room> {
        let mut rooms = self.map();
        let room = rooms.entry(name.clone()).or_insert_with(|| {
            self.policy.metrics.rooms.inc();
            self.broker.watch(name);
            Arc::new(Room::new(name.clone(), &self.policy.memory))
        });
        room.touch(|| self.broker.watch(name));
        Arc::clone(room)
    }

    pub(super) async fn synced_room(&self, name: &RoomName) -> Result<Arc<Room>, BrokerError> {
        let room = self.room(name);
        self.sync(&room).await?;
        Ok(room)
    }

    /// Makes sure the room knows its position, asking the broker if no
    /// message has told it yet, and that its ring is current.
    pub(super) async fn sync(&self, room: &Arc<Room>) -> Result<(), BrokerError> {
        if !room.is_synced() {
            let floor = self.remembered_floor(&room.name);
            let sequence = self.broker.sequence(&room.name, floor).await?;
            room.sync_to(sequence.current);
        } else if room.is_stale() {
            // Back in use after going unwatched: what was published
            // meanwhile comes from history before anyone reads the ring.
            self.resync_room(room).await?;
            room.caught_up();
        }
        Ok(())
    }

    pub(super) async fn read_after(
        &self,
        room: &Room,
        after: u64,
        limit: usize,
    ) -> Result<Page, BrokerError> {
        let (ring_head, last) = match room.read(after, limit) {
            RingRead::Served(entries) => return Ok(Page { entries, gap: None }),
            RingRead::AtEnd => return Ok(Page::default()),
            RingRead::Ahead => return Ok(self.read_ahead(room, after).await),
            RingRead::Older { head, last } => (head, last),
        };
        let stored = contiguous(self.broker.read_after(&room.name, after, limit).await?);
        let stored_first = stored.first().map(|message| message.id);
        let entries =
            |stored: Vec<Message>| stored.iter().map(|m| Entry::new(m, self.framer)).collect();
        if stored_first == Some(after + 1) {
            return Ok(Page {
                entries: entries(stored),
                gap: None,
            });
        }
        // History no longer reaches back to the cursor. Serve from whichever
        // of ring and history starts earlier (the ring's head was taken
        // with the same look, so it is still contiguous), and say where.
        let ring_first = ring_head.first().map(|entry| entry.id());
        let page = match (ring_first, stored_first) {
            (Some(ring_first), stored_first) if stored_first.is_none_or(|s| ring_first <= s) => {
                Page {
                    entries: ring_head,
                    gap: Some(Gap {
                        after,
                        resume_from: ring_first,
                    }),
                }
            }
            (_, Some(stored_first)) => Page {
                entries: entries(stored),
                gap: Some(Gap {
                    after,
                    resume_from: stored_first,
                }),
            },
            (_, None) => Page {
                entries: Vec::new(),
                gap: Some(Gap {
                    after,
                    resume_from: last + 1,
                }),
            },
        };
        Ok(page)
    }

    /// A cursor beyond this instance's last id: either this instance is a
    /// moment behind (the client heard of a newer message elsewhere), or the
    /// cursor is from before the room's ids started over (Redis lost its
    /// data and no instance remembered the room, or the room expired). The
    /// broker's sequence tells. In the second case the client is told at
    /// once, and resumes from the oldest message of the room's new life, so
    /// it misses none of them.
    async fn read_ahead(&self, room: &Room, after: u64) -> Page {
        let sequence = match self.broker.sequence(&room.name, 0).await {
            Ok(sequence) if sequence.current < after => sequence,
            // Behind, or the broker cannot say right now: wait for news.
            _ => return Page::default(),
        };
        let oldest = self.broker.read_after(&room.name, 0, 1).await;
        let resume_from = match oldest.ok().and_then(|found| found.first().map(|m| m.id)) {
            Some(oldest) => oldest,
            None => sequence.current + 1,
        };
        Page {
            entries: Vec::new(),
            gap: Some(Gap { after, resume_from }),
        }
    }

    /// Takes one message from the broker and delivers it, and any messages
    /// pub/sub missed before it, in order, if a client of this instance
    /// uses its room; a room nobody here uses is not materialized. Anyone
    /// who reaches Redis can publish on its channel, so a message is checked
    /// before it can move a room: id 0 is dropped, and one that skips ahead
    /// must be in history.
    pub(super) async fn accept(&self, message: Message) {
        if message.id == 0 {
            log::warn!(
                "dropping a message with id 0 in room {}: ids start at 1",
                message.room
            );
            return;
        }
        let Some(room) = self.get(&message.room) else {
            return;
        };
        let id = message.id;
        if !room.is_synced() {
            // The room was just opened and is asking the broker where it
            // stands: no base to check this message against yet, and taking
            // it as the base would let a forged id move the room. History
            // says whether it is real.
            self.accept_unchecked(&room, id).await;
            return;
        }
        let entry = Entry::new(&message, self.framer);
        let Append::Behind { last } = room.append(&entry, &self.policy, IfBehind::Report) else {
            return;
        };
        match self.fill(&room.name, last, id).await {
            // History holds the message: deliver it, and what pub/sub missed
            // before it, as history has them.
            Some(stored) if stored.iter().any(|m| m.id == id) => {
                let entries = stored
                    .iter()
                    .take_while(|m| m.id <= id)
                    .map(|m| Entry::new(m, self.framer));
                self.deliver_in_order(&room, entries);
            }
            // Every message is in history before it is published: one that is
            // not was forged by someone who can reach Redis (or history lost
            // it at once). Taking it would move the room past ids that exist.
            Some(_) => log::warn!(
                "room {}: dropping message {id} heard live but absent from history (forged?)",
                room.name
            ),
            // History cannot be read now: deliver it, and let the ring start
            // over there (clients are told of a gap that may not be real)
            // rather than hold every room up.
            None => self.deliver_in_order(&room, std::iter::once(entry)),
        }
    }

    /// Delivers message `id` of a room not synced yet, as history has it,
    /// if history has it.
    async fn accept_unchecked(&self, room: &Arc<Room>, id: u64) {
        match self.fill(&room.name, id - 1, id).await {
            Some(stored) => {
                let entries = stored
                    .iter()
                    .filter(|m| m.id == id)
                    .map(|m| Entry::new(m, self.framer));
                self.deliver_in_order(room, entries);
            }
            None => log::warn!(
                "room {}: message {id} arrived while the room syncs and history cannot \
                 confirm it; the room's sync will find it",
                room.name
            ),
        }
    }

    /// The messages after `last`, up to `next` included, from history; `None`
    /// if history cannot be read. A failed read is retried once: every room
    /// waits on this task meanwhile.
    async fn fill(&self, room: &RoomName, last: u64, next: u64) -> Option<Vec<Message>> {
        let wanted = usize::try_from(next - last).unwrap_or(usize::MAX);
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
        for attempt in 1..=GAP_FILL_ATTEMPTS {
            match self.broker.read_after(room, last, wanted).await {
                Ok(found) => return Some(found),
                Err(err) if attempt == GAP_FILL_ATTEMPTS => {
                    log::warn!(
                        "room {room}: cannot fetch ids {}..{next} from history: {err}",
                        last + 1
                    );
                }
                Err(_) => tokio::time::sleep(backoff.next_delay()).await,
            }
        }
        None
    }

    /// Appends messages known to be in id order; where one does not follow
    /// on (its predecessors are gone from history), the ring starts over.
    fn deliver_in_order(&self, room: &Arc<Room>, entries: impl Iterator<Item = Arc<Entry>>) {
        for entry in entries {
            if let Append::Restarted { last } = room.append(&entry, &self.policy, IfBehind::Restart)
            {
                log::warn!(
                    "room {}: ids {}..{} are gone from history; clients resuming there get a gap",
                    room.name,
                    last + 1,
                    entry.id()
                );
            }
        }
    }

    /// After rooms' subscriptions (re)started: for each room held, raise the
    /// broker's sequence back to what this instance has seen (Redis may have
    /// lost it) and fetch what pub/sub missed. Returns the rooms whose
    /// re-sync failed, to try again.
    pub(super) async fn resync(&self, names: Vec<RoomName>) -> Vec<RoomName> {
        let failed = Mutex::new(Vec::new());
        futures_util::stream::iter(names)
            .for_each_concurrent(RESYNC_CONCURRENCY, |name| {
                let failed = &failed;
                async move {
                    let Some(room) = self.get(&name) else { return };
                    if let Err(err) = self.resync_room(&room).await {
                        log::warn!("room {name}: re-sync failed, will retry: {err}");
                        failed
                            .lock()
                            .unwrap_or_else(|poison| poison.into_inner())
                            .push(name);
                    }
                }
            })
            .await;
        failed
            .into_inner()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    async fn resync_room(&self, room: &Arc<Room>) -> Result<(), BrokerError> {
        let Some(last) = room.last() else {
            return Ok(());
        };
        let sequence = self.broker.sequence(&room.name, last).await?;
        if sequence.stored < last {
            log::warn!(
                "room {}: the broker's sequence was {} but this instance has seen id {last}; \
                 it lost data, and ids continue from {}",
                room.name,
                sequence.stored,
                last + 1
            );
        }
        loop {
            let after = room.last().unwrap_or(last);
            let batch = self
                .broker
                .read_after(&room.name, after, READ_BATCH)
                .await?;
            let complete = batch.len() < READ_BATCH;
            self.deliver_in_order(room, batch.into_iter().map(|m| Entry::new(&m, self.framer)));
            if complete {
                return Ok(());
            }
        }
    }

    /// Frees the rooms no client of this instance used for `ROOM_IDLE_SECS`
    /// (`earlier` sooner, so the sweeper, which runs every `earlier`, frees
    /// each within the idle time), remembering their last ids.
    pub(super) fn retire_idle_rooms(&self, earlier: Duration) {
        let idle = self.room_idle.saturating_sub(earlier);
        self.retire(|room| {
            room.retire_if_unused(idle, false, &self.policy.memory, || {
                self.broker.unwatch(&room.name);
            })
        });
    }

    /// Stops hearing the rooms no client here used for `grace`: an instance
    /// spends nothing on a room's messages once its clients are gone. The
    /// rooms stay in memory (until `ROOM_IDLE_SECS`) and are caught up from
    /// history if a client comes back.
    pub(super) fn unwatch_unused_rooms(&self, grace: Duration) {
        let rooms: Vec<Arc<Room>> = self.map().values().cloned().collect();
        for room in rooms {
            room.unwatch_if_unused(grace, || self.broker.unwatch(&room.name));
        }
    }

    fn retire(&self, mut retire: impl FnMut(&Room) -> bool) {
        let mut retired = Vec::new();
        self.map().retain(|_, room| {
            let gone = retire(room);
            if gone {
                retired.push(Arc::clone(room));
            }
            !gone
        });
        for room in retired {
            self.policy.metrics.rooms.dec();
            if let Some(last) = room.last().filter(|&last| last > 0) {
                self.remember_floor(&room.name, last);
            }
        }
    }

    /// Keeps what the rooms hold within the budget (`HUB_MEMORY_MB`): frees
    /// unused rooms, least recently used first, then trims the oldest
    /// messages of the rooms holding the most (their clients read those from
    /// history instead). Cheap when within budget.
    pub(super) fn enforce_budget(&self) {
        let memory = &self.policy.memory;
        if !memory.is_over_budget() {
            return;
        }
        let target = memory.budget / 100 * BUDGET_LOW_WATER_PERCENT;
        let mut unused: Vec<(Instant, Arc<Room>)> = self
            .map()
            .values()
            .filter_map(|room| Some((room.unused_since()?, Arc::clone(room))))
            .collect();
        unused.sort_by_key(|(since, _)| *since);
        // Read again: rooms freed since the check may have brought it under.
        let mut to_free = memory.used().saturating_sub(target);
        let mut victims = HashSet::new();
        for (_, room) in &unused {
            if to_free == 0 {
                break;
            }
            victims.insert(Arc::as_ptr(room));
            to_free = to_free.saturating_sub(room.ring_bytes() + ROOM_OVERHEAD_BYTES);
        }
        let mut evicted = 0;
        self.retire(|room| {
            let gone = victims.contains(&std::ptr::from_ref(room))
                && room.retire_if_unused(Duration::ZERO, true, memory, || {
                    self.broker.unwatch(&room.name);
                });
            evicted += u64::from(gone);
            gone
        });
        self.policy.metrics.rooms_evicted.inc_by(evicted);
        if memory.used() <= target {
            return;
        }
        let mut in_use: Vec<Arc<Room>> = self.map().values().cloned().collect();
        in_use.sort_by_key(|room| std::cmp::Reverse(room.ring_bytes()));
        let rooms = in_use.len().max(1);
        // Each room in use keeps at most an equal share of what is left.
        let share = target.saturating_sub(rooms * ROOM_OVERHEAD_BYTES) / rooms;
        for room in in_use {
            if memory.used() <= target {
                break;
            }
            room.trim_to(share, &self.policy);
        }
        log::warn!(
            "hub over its memory budget ({} MB): freed {evicted} unused rooms and trimmed the \
             largest rings; now {} KB",
            memory.budget >> 20,
            memory.used() >> 10
        );
    }
}

/// The longest run of `messages` without a hole in its ids. History may
/// have one (Redis lost some entries, and the sequence was raised past
/// them); serving across it would skip ids silently, so a read stops before
/// it and the next read, starting there, reports the gap.
fn contiguous(mut messages: Vec<Message>) -> Vec<Message> {
    let hole = messages
        .windows(2)
        .position(|pair| pair[1].id != pair[0].id + 1);
    if let Some(before_hole) = hole {
        messages.truncate(before_hole + 1);
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Via;

    fn message(id: u64) -> Message {
        Message {
            id,
            room: RoomName::parse("a").expect("a room"),
            author: "x".into(),
            message: "m".into(),
            ts: 0,
            via: Via::Sse,
        }
    }

    #[test]
    fn a_read_stops_before_a_hole_in_history() {
        let ids = |messages: Vec<Message>| messages.iter().map(|m| m.id).collect::<Vec<_>>();
        let read = |found: &[u64]| contiguous(found.iter().copied().map(message).collect());
        assert_eq!(ids(read(&[4, 5, 6])), [4, 5, 6]);
        assert_eq!(ids(read(&[4, 5, 9, 10])), [4, 5]);
        assert_eq!(ids(read(&[])), Vec::<u64>::new());
    }
}
