//! [`Interest`]: the rooms whose live messages the hub wants, shared with
//! the broker's subscription task.
//!
//! The hub only says what it wants; the task compares that with what it is
//! subscribed to and subscribes or unsubscribes the difference, at its own
//! pace. So a burst of rooms opening and closing never queues up commands,
//! and after a reconnect the task simply subscribes to everything wanted.
//! Its size follows the rooms the hub holds, which the hub bounds.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::message::RoomName;

#[derive(Debug, Default)]
pub struct Interest {
    /// A std mutex: an insert, a remove or a clone, never held across an
    /// await.
    wanted: Mutex<HashSet<RoomName>>,
    changed: Notify,
}

impl Interest {
    fn wanted(&self) -> MutexGuard<'_, HashSet<RoomName>> {
        // One insert or remove at a time: a panic cannot leave it half done.
        self.wanted
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn want(&self, room: &RoomName) {
        if self.wanted().insert(room.clone()) {
            self.changed.notify_one();
        }
    }

    pub fn drop_room(&self, room: &RoomName) {
        if self.wanted().remove(room) {
            self.changed.notify_one();
        }
    }

    /// Wakes the task as a change would, to compare again.
    pub fn nudge(&self) {
        self.changed.notify_one();
    }

    /// The rooms wanted now.
    pub fn snapshot(&self) -> HashSet<RoomName> {
        self.wanted().clone()
    }

    /// Resolves when the wanted rooms changed since the last call (at once
    /// if they changed meanwhile).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).expect("a room")
    }

    #[tokio::test]
    async fn a_change_wakes_the_task_once_even_if_it_was_not_waiting() {
        let interest = Interest::default();
        interest.want(&room("a"));
        interest.want(&room("a"));
        interest.want(&room("b"));
        tokio::time::timeout(std::time::Duration::from_millis(100), interest.changed())
            .await
            .expect("woken by the changes made before it waited");
        assert_eq!(interest.snapshot().len(), 2);
        interest.drop_room(&room("a"));
        assert_eq!(interest.snapshot(), HashSet::from([room("b")]));
    }
}
