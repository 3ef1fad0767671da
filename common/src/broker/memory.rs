//! The in-process broker, used when `REDIS_URL` is unset.
//!
//! Same contract as Redis (gap-free ids per room, capped history,
//! idempotency keys, rooms that expire after their last message, every
//! message fed to the hub in id order) for exactly one process: two
//! instances with their own memory brokers never see each other's messages.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{Broker, BrokerError, FEED_CAPACITY, Feed, Published, Retention, Sequence};
use crate::message::{Draft, IdempotencyKey, Message, RoomName};

/// How often a publish looks for expired rooms and keys, at most: memory
/// only grows by publishing, so this bounds it; reads treat an expired room
/// as gone at once.
const EXPIRE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug)]
pub struct MemoryBroker {
    retention: Retention,
    /// Held by a publish from assigning the id until the hub has the
    /// message, so the hub receives every room's messages in id order.
    /// Reads never take it: a hub filling a gap must not wait on a publish
    /// that waits on the hub.
    publishing: tokio::sync::Mutex<()>,
    /// The history. A std mutex: never held across an await.
    rooms: Mutex<HashMap<RoomName, RoomLog>>,
    /// A std mutex: only pushed to and cloned from, never held across await.
    feeds: Mutex<Vec<mpsc::Sender<Feed>>>,
    /// When expired rooms and keys were last dropped.
    expired_at: Mutex<Instant>,
    /// Always true: a broker in this process is always there.
    connected: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug)]
struct RoomLog {
    last_id: u64,
    messages: VecDeque<Message>,
    /// When the room's last message was stored (or its sequence raised):
    /// it expires `room_ttl` later, as Redis keys do.
    touched: Instant,
    /// Idempotency keys used in the room, with the message stored first and
    /// when the key was first used.
    keys: HashMap<IdempotencyKey, (Message, Instant)>,
}

impl Default for RoomLog {
    fn default() -> Self {
        RoomLog {
            last_id: 0,
            messages: VecDeque::new(),
            touched: Instant::now(),
            keys: HashMap::new(),
        }
    }
}

impl MemoryBroker {
    pub fn new(retention: Retention) -> Self {
        MemoryBroker {
            retention,
            publishing: tokio::sync::Mutex::new(()),
            rooms: Mutex::new(HashMap::new()),
            feeds: Mutex::new(Vec::new()),
            expired_at: Mutex::new(Instant::now()),
            connected: tokio::sync::watch::Sender::new(true),
        }
    }

    /// The room's log unless it expired (as its Redis keys would have).
    fn live<'a>(
        &self,
        rooms: &'a HashMap<RoomName, RoomLog>,
        room: &RoomName,
    ) -> Option<&'a RoomLog> {
        rooms
            .get(room)
            .filter(|log| log.touched.elapsed() < self.retention.room_ttl)
    }

    /// Whether it is time to drop expired rooms and keys.
    fn expiry_due(&self) -> bool {
        let mut expired_at = self
            .expired_at
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let due = expired_at.elapsed() >= EXPIRE_EVERY;
        if due {
            *expired_at = Instant::now();
        }
        due
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, RoomLog>> {
        // Every critical section is a push or a read: nothing can be left
        // half-done by a panic, so a poisoned lock is still usable.
        self.rooms
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn feeds(&self) -> Vec<mpsc::Sender<Feed>> {
        let mut feeds = self
            .feeds
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        feeds.retain(|feed| !feed.is_closed());
        feeds.clone()
    }
}

/// Drops rooms silent for longer than `room_ttl` and idempotency keys older
/// than `window`, as Redis expires their keys.
fn expire(
    rooms: &mut HashMap<RoomName, RoomLog>,
    room_ttl: std::time::Duration,
    window: std::time::Duration,
) {
    rooms.retain(|_, log| log.touched.elapsed() < room_ttl);
    for log in rooms.values_mut() {
        log.keys.retain(|_, (_, used)| used.elapsed() < window);
    }
}

fn now_millis() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(
        &self,
        draft: &Draft,
        key: Option<&IdempotencyKey>,
        floor: u64,
    ) -> Result<Published, BrokerError> {
        let _in_order = self.publishing.lock().await;
        let message = {
            let mut rooms = self.rooms();
            let Retention {
                history_len,
                room_ttl,
                idempotency_window,
            } = self.retention;
            if self.live(&rooms, &draft.room).is_none() {
                rooms.remove(&draft.room);
            }
            let log = rooms.entry(draft.room.clone()).or_default();
            if let Some((first, _)) = key
                .and_then(|key| log.keys.get(key))
                .filter(|(_, used)| used.elapsed() < idempotency_window)
            {
                return Ok(Published {
                    message: first.clone(),
                    replayed: true,
                });
            }
            log.last_id = log.last_id.max(floor) + 1;
            log.touched = Instant::now();
            let message = draft.stored(log.last_id, now_millis());
            log.messages.push_back(message.clone());
            if log.messages.len() > history_len {
                log.messages.pop_front();
            }
            if let Some(key) = key {
                log.keys
                    .insert(key.clone(), (message.clone(), Instant::now()));
            }
            if self.expiry_due() {
                expire(&mut rooms, room_ttl, idempotency_window);
            }
            message
        };
        for feed in self.feeds() {
            // A closed feed is a hub that is gone; nothing to deliver to.
            let _ = feed.send(Feed::Message(message.clone())).await;
        }
        Ok(Published {
            message,
            replayed: false,
        })
    }

    async fn replay(
        &self,
        room: &RoomName,
        key: &IdempotencyKey,
    ) -> Result<Option<Message>, BrokerError> {
        let window = self.retention.idempotency_window;
        let rooms = self.rooms();
        Ok(self.live(&rooms, room).and_then(|log| {
            log.keys
                .get(key)
                .filter(|(_, used)| used.elapsed() < window)
                .map(|(first, _)| first.clone())
        }))
    }

    async fn read_after(
        &self,
        room: &RoomName,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, BrokerError> {
        let rooms = self.rooms();
        let Some(log) = self.live(&rooms, room) else {
            return Ok(Vec::new());
        };
        let start = log.messages.partition_point(|message| message.id <= after);
        Ok(log
            .messages
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn read_latest(
        &self,
        room: &RoomName,
        limit: usize,
    ) -> Result<Vec<Message>, BrokerError> {
        let rooms = self.rooms();
        let Some(log) = self.live(&rooms, room) else {
            return Ok(Vec::new());
        };
        let skip = log.messages.len().saturating_sub(limit);
        Ok(log.messages.iter().skip(skip).cloned().collect())
    }

    async fn sequence(&self, room: &RoomName, floor: u64) -> Result<Sequence, BrokerError> {
        let mut rooms = self.rooms();
        let stored = self.live(&rooms, room).map_or(0, |log| log.last_id);
        if stored < floor {
            let log = rooms.entry(room.clone()).or_default();
            log.last_id = floor;
            log.touched = Instant::now();
        }
        Ok(Sequence {
            stored,
            current: stored.max(floor),
        })
    }

    async fn is_ready(&self) -> bool {
        true
    }

    /// Every message reaches every hub of this process anyway (the hub
    /// drops the rooms it does not hold): there is nothing to subscribe to.
    fn watch(&self, _: &RoomName) {}

    fn unwatch(&self, _: &RoomName) {}

    fn connectivity(&self) -> tokio::sync::watch::Receiver<bool> {
        self.connected.subscribe()
    }

    fn feed(&self) -> mpsc::Receiver<Feed> {
        let (feed, receiver) = mpsc::channel(FEED_CAPACITY);
        self.feeds
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(feed);
        receiver
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Author, MessageText, Via};

    fn retention(history_len: usize) -> Retention {
        Retention {
            history_len,
            room_ttl: std::time::Duration::from_secs(3600),
            idempotency_window: std::time::Duration::from_secs(300),
        }
    }

    fn draft(room: &str, text: &str) -> Draft {
        Draft {
            room: RoomName::parse(room).expect("valid room"),
            author: Author::parse(None).expect("anonymous"),
            text: MessageText::parse(Some(text.into()), 100).expect("valid text"),
            via: Via::Sse,
        }
    }

    #[tokio::test]
    async fn ids_are_gap_free_per_room_and_respect_the_floor() {
        let broker = MemoryBroker::new(retention(10));
        assert_eq!(
            broker
                .publish(&draft("a", "1"), None, 0)
                .await
                .expect("stored")
                .message
                .id,
            1
        );
        assert_eq!(
            broker
                .publish(&draft("a", "2"), None, 0)
                .await
                .expect("stored")
                .message
                .id,
            2
        );
        assert_eq!(
            broker
                .publish(&draft("b", "1"), None, 0)
                .await
                .expect("stored")
                .message
                .id,
            1
        );
        assert_eq!(
            broker
                .publish(&draft("a", "3"), None, 40)
                .await
                .expect("stored")
                .message
                .id,
            41
        );
    }

    #[tokio::test]
    async fn a_key_used_again_stores_nothing_and_answers_the_first_message() {
        let broker = MemoryBroker::new(retention(10));
        let key = IdempotencyKey::parse("k-1").expect("a key");
        let first = broker
            .publish(&draft("a", "first"), Some(&key), 0)
            .await
            .expect("stored");
        let again = broker
            .publish(&draft("a", "second"), Some(&key), 0)
            .await
            .expect("answered");
        assert!(!first.replayed && again.replayed);
        assert_eq!(again.message, first.message);
        let elsewhere = broker
            .publish(&draft("b", "other room"), Some(&key), 0)
            .await
            .expect("stored");
        assert!(!elsewhere.replayed, "keys are per room");
        let room = RoomName::parse("a").expect("valid room");
        assert_eq!(
            broker.read_after(&room, 0, 10).await.expect("read").len(),
            1
        );
    }

    #[tokio::test]
    async fn history_is_capped_and_read_by_cursor() {
        let broker = MemoryBroker::new(retention(3));
        for n in 1..=5 {
            broker
                .publish(&draft("a", &n.to_string()), None, 0)
                .await
                .expect("stored");
        }
        let room = RoomName::parse("a").expect("valid room");
        let ids = |messages: Vec<Message>| messages.iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(
            ids(broker.read_after(&room, 0, 10).await.expect("read")),
            [3, 4, 5]
        );
        assert_eq!(
            ids(broker.read_after(&room, 3, 1).await.expect("read")),
            [4]
        );
        assert_eq!(
            ids(broker.read_latest(&room, 2).await.expect("read")),
            [4, 5]
        );
    }

    #[tokio::test]
    async fn subscribers_receive_messages_in_id_order() {
        let broker = MemoryBroker::new(retention(10));
        let mut feed = broker.feed();
        broker
            .publish(&draft("a", "x"), None, 0)
            .await
            .expect("stored");
        broker
            .publish(&draft("a", "y"), None, 0)
            .await
            .expect("stored");
        for expected in [1, 2] {
            match feed.recv().await {
                Some(Feed::Message(message)) => assert_eq!(message.id, expected),
                other => panic!("expected message {expected}, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn reads_do_not_wait_for_a_publish_stuck_on_a_full_feed() {
        let broker = std::sync::Arc::new(MemoryBroker::new(retention(10)));
        let _unread_feed = broker.feed();
        for n in 0..FEED_CAPACITY {
            broker
                .publish(&draft("a", &n.to_string()), None, 0)
                .await
                .expect("stored");
        }
        // The feed is full: this publish stores its message, then waits.
        let stuck = tokio::spawn({
            let broker = std::sync::Arc::clone(&broker);
            async move { broker.publish(&draft("a", "one too many"), None, 0).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!stuck.is_finished());

        let room = RoomName::parse("a").expect("valid room");
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            broker.read_after(&room, 0, 100),
        );
        let messages = read
            .await
            .expect("a read is not blocked by the stuck publish")
            .expect("read");
        assert_eq!(
            messages.last().map(|m| m.message.as_str()),
            Some("one too many")
        );
        stuck.abort();
    }
}
