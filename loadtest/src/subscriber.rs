//! Subscribers: each is a [`chat_client::Subscription`], which keeps its
//! cursor and reconnects with it as real clients do. Here we only tally
//! what it delivers: ids once and in order, gaps, reconnects, and every
//! message's delivery latency.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chat_client::{Client, Event, Payload, RoomName, Start, Transport};
use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Counts shared by every client, for progress.
#[derive(Debug, Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub delivered: AtomicU64,
    pub published: AtomicU64,
}

/// What one subscriber saw.
#[derive(Debug)]
pub struct Outcome {
    /// The room's index in the run.
    pub room: usize,
    pub received: u64,
    /// Messages the server sent at or below the cursor (seen twice, or out
    /// of order), which the subscription dropped.
    pub duplicates: u64,
    /// Ids skipped.
    pub missing: u64,
    /// Gaps the server announced.
    pub gaps: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// Delivery latency in microseconds.
    pub latency: Histogram<u64>,
}

/// A delivered message as the load tester sees it: its id and when it was
/// sent. Read straight from the message's JSON, borrowing the text to find
/// the stamp: parsing hundreds of thousands of messages a second into full
/// `Message`s would cost the load tester more than the service it
/// measures, on the same cores.
#[derive(Debug)]
struct Stamped {
    id: u64,
    sent_at: Option<u64>,
}

impl<'de> Deserialize<'de> for Stamped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Fields<'a> {
            id: u64,
            #[serde(borrow)]
            message: Cow<'a, str>,
        }

        let Fields { id, message } = Fields::deserialize(deserializer)?;
        Ok(Stamped {
            id,
            sent_at: sent_at(&message),
        })
    }
}

impl Payload for Stamped {
    fn id(&self) -> u64 {
        self.id
    }
}

/// The text a publisher sends: when it was sent, padded to `size`.
pub fn stamped_text(size: usize) -> String {
    let stamp = format!("t={};", now_micros());
    let padding = size.saturating_sub(stamp.len());
    stamp + &"x".repeat(padding)
}

fn now_micros() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

fn sent_at(text: &str) -> Option<u64> {
    text.strip_prefix("t=")?.split(';').next()?.parse().ok()
}

/// A subscriber's running tally.
struct Tally {
    /// The last id delivered: what the next one should follow.
    last: u64,
    connections: u64,
    outcome: Outcome,
    counters: Arc<Counters>,
}

impl Tally {
    fn new(room: usize, after: u64, counters: Arc<Counters>) -> Self {
        let latency = Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| {
            Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
        });
        Tally {
            last: after,
            connections: 0,
            outcome: Outcome {
                room,
                received: 0,
                duplicates: 0,
                missing: 0,
                gaps: 0,
                reconnects: 0,
                latency,
            },
            counters,
        }
    }

    fn observe(&mut self, event: Event<Stamped>) {
        match event {
            Event::Message(message) => self.message(&message),
            Event::Gap(gap) => {
                self.outcome.gaps += 1;
                self.last = gap.resume_from.saturating_sub(1);
            }
            Event::Connected { .. } => {
                self.connections += 1;
                if self.connections == 1 {
                    self.counters.connected.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::Disconnected { .. } => {}
        }
    }

    fn message(&mut self, message: &Stamped) {
        // The subscription delivers only ids above the last one; any it
        // skipped are missing.
        self.outcome.missing += message.id.saturating_sub(self.last + 1);
        self.last = message.id;
        self.outcome.received += 1;
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(sent) = message.sent_at {
            let _ = self
                .outcome
                .latency
                .record(now_micros().saturating_sub(sent).max(1));
        }
    }

    fn finish(mut self, duplicates: u64) -> Outcome {
        self.outcome.duplicates = duplicates;
        self.outcome.reconnects = self.connections.saturating_sub(1);
        self.outcome
    }
}

/// Starts one subscriber of `room` (the run's room number `room_index`)
/// after `after`; it runs until `stop`.
pub fn spawn(
    client: Client,
    transport: Transport,
    room: RoomName,
    room_index: usize,
    after: u64,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> JoinHandle<Outcome> {
    tokio::spawn(async move {
        let mut subscription =
            client.subscribe_as::<Stamped>(transport, &room, Start::After(after));
        let mut tally = Tally::new(room_index, after, counters);
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        loop {
            let event = tokio::select! {
                event = subscription.next() => event,
                () = &mut stopped => break,
            };
            match event {
                Some(event) => tally.observe(event),
                None => break,
            }
        }
        tally.finish(subscription.duplicates_dropped())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_text_has_the_size_asked_and_says_when_it_was_sent() {
        let text = stamped_text(100);
        assert_eq!(text.len(), 100);
        let sent = sent_at(&text).expect("a stamp");
        assert!(now_micros() - sent < 1_000_000);
    }

    #[test]
    fn a_stamped_message_reads_its_id_and_stamp_from_the_message_json() {
        let json = r#"{"id":9,"room":"r","author":"a","message":"t=17;xx","ts":1,"via":"sse"}"#;
        let message: Stamped = serde_json::from_str(json).expect("a message");
        assert_eq!((message.id, message.sent_at), (9, Some(17)));
    }

    #[test]
    fn skipped_ids_count_as_missing_and_gaps_do_not() {
        let mut tally = Tally::new(0, 0, Arc::default());
        for id in [1, 2, 5] {
            tally.observe(Event::Message(Stamped { id, sent_at: None }));
        }
        tally.observe(Event::Gap(chat_client::Gap {
            after: 5,
            resume_from: 9,
        }));
        tally.observe(Event::Message(Stamped {
            id: 9,
            sent_at: None,
        }));
        let outcome = tally.finish(0);
        assert_eq!((outcome.received, outcome.missing, outcome.gaps), (4, 2, 1));
    }
}
