//! Subscribers that keep going across failures the way real clients do,
//! because they are real clients: each is a [`chat_client::Subscription`]
//! (which keeps its cursor, reconnects from it, and moves to the next
//! instance when its own goes away), recorded as it runs.
//!
//! The recording is what tests check: every message delivered, every gap
//! announced, every connection that ended, and how many messages the
//! server sent twice (the subscription drops those, so a test that means
//! "no duplicate" asserts that none were dropped).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chat_client::{Disconnect, Event, Gap, Message, Start, Transport, Url};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::client::{client_of, room};

/// Everything a subscriber saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub messages: Vec<Message>,
    pub gaps: Vec<Gap>,
    /// `(instance, why)` of each connection that ended or failed to open.
    pub disconnections: Vec<(Url, Disconnect)>,
    /// Messages the server sent again after the subscription had delivered
    /// them (dropped, not delivered). Up to date as of the last event.
    pub duplicates_dropped: u64,
}

/// A running subscriber; stops when dropped.
#[derive(Debug)]
pub struct Subscriber {
    pub transport: Transport,
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscriber {
    /// Starts receiving `room_name` after `after` from the first of `bases`
    /// (instances of `transport`'s service, or gateways), moving to the
    /// next when a connection ends.
    pub fn start<S: AsRef<str>>(
        transport: Transport,
        bases: &[S],
        room_name: &str,
        after: u64,
    ) -> Self {
        let mut subscription =
            client_of(bases).subscribe(transport, &room(room_name), Start::After(after));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let changed = Arc::new(Notify::new());
        let task = tokio::spawn({
            let (seen, changed) = (Arc::clone(&seen), Arc::clone(&changed));
            async move {
                while let Some(event) = subscription.next().await {
                    let mut record = lock(&seen);
                    match event {
                        Event::Message(message) => record.messages.push(message),
                        Event::Gap(gap) => record.gaps.push(gap),
                        Event::Disconnected { base, reason } => {
                            record.disconnections.push((base, reason));
                        }
                        Event::Connected { .. } => {}
                    }
                    record.duplicates_dropped = subscription.duplicates_dropped();
                    drop(record);
                    changed.notify_waiters();
                }
            }
        });
        Subscriber {
            transport,
            seen,
            changed,
            task,
        }
    }

    /// A copy of everything seen so far.
    pub fn seen(&self) -> Seen {
        lock(&self.seen).clone()
    }

    /// Waits until `count` messages have arrived; panics after `within`.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Message> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            {
                let seen = lock(&self.seen);
                if seen.messages.len() >= count {
                    return seen.messages.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let seen = self.seen();
                panic!(
                    "{} subscriber: {} of {count} messages within {within:?} (last id {:?}, gaps \
                     {:?}, disconnections {:?})",
                    self.transport,
                    seen.messages.len(),
                    seen.messages.last().map(|m| m.id),
                    seen.gaps,
                    seen.disconnections
                );
            }
        }
    }

    /// Waits until a connection has ended in a way `matches` accepts.
    pub async fn wait_for_disconnection(
        &self,
        within: Duration,
        matches: impl Fn(&Disconnect) -> bool,
    ) -> Disconnect {
        crate::eventually(
            within,
            &format!("a {} disconnection", self.transport),
            || {
                let found = self
                    .seen()
                    .disconnections
                    .into_iter()
                    .map(|(_, why)| why)
                    .find(&matches);
                async move { found }
            },
        )
        .await
    }
}

fn lock(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}
