//! Publishers: each publishes at its share of the total rate, one message
//! at a time (a publish waits for its answer), for the planned duration.
//! Every publish carries an idempotency key, and is retried with it when
//! the network or the service fails (over HTTP the client library does
//! both; over a WebSocket the publisher opens the socket again), so a retry
//! never stores a message twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chat_client::{Client, Error, IdempotencyKey, Publish, Retry, RoomName, WsConnection};
use clap::ValueEnum;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use crate::subscriber::{Counters, stamped_text};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishOver {
    /// `POST /rooms/{room}/messages`.
    Http,
    /// `publish` frames on a WebSocket (ws-svc only).
    Ws,
}

#[derive(Debug)]
pub struct Plan {
    pub over: PublishOver,
    /// The rooms to publish in, in turn (see [`room_of`]).
    pub rooms: Arc<[RoomName]>,
    pub publishers: u32,
    /// Messages per second, all publishers together; 0 = as fast as each
    /// publisher's answers come back.
    pub rate: u32,
    pub duration: Duration,
    pub size: usize,
    pub client: Client,
    pub counters: Arc<Counters>,
    pub progress: ProgressBar,
    /// For the progress line: deliveries expected per publish.
    pub subscribers: f64,
}

/// What the publishers achieved.
#[derive(Debug)]
pub struct Published {
    pub accepted: u64,
    /// Accepted per room, by the room's index in the plan.
    pub accepted_by_room: Vec<u64>,
    /// Refusals by status (or `error` code, or "connection").
    pub refused: BTreeMap<String, u64>,
    /// Publish round trips in microseconds.
    pub latency: Histogram<u64>,
}

impl Published {
    pub fn new(rooms: usize) -> Self {
        Published {
            accepted: 0,
            accepted_by_room: vec![0; rooms],
            refused: BTreeMap::new(),
            latency: histogram(),
        }
    }

    fn add(&mut self, other: &Published) {
        self.accepted += other.accepted;
        for (sum, one) in self
            .accepted_by_room
            .iter_mut()
            .zip(&other.accepted_by_room)
        {
            *sum += one;
        }
        for (reason, count) in &other.refused {
            *self.refused.entry(reason.clone()).or_default() += count;
        }
        let _ = self.latency.add(&other.latency);
    }
}

/// The room of publisher `index`'s `sequence`th message: publishers take
/// the rooms in turn, each starting at its own, so that together they
/// publish in every room alike.
pub fn room_of(index: u32, sequence: u64, publishers: u32, rooms: usize) -> usize {
    let rooms = rooms.max(1) as u64;
    ((u64::from(index) + sequence * u64::from(publishers)) % rooms) as usize
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
    })
}

pub async fn run(plan: Plan) -> Published {
    // No rate: each publisher publishes again as soon as it is answered.
    let every = (plan.rate > 0)
        .then(|| Duration::from_secs_f64(f64::from(plan.publishers) / f64::from(plan.rate)));
    let until = Instant::now() + plan.duration;
    let tasks: Vec<_> = (0..plan.publishers)
        .map(|index| {
            let publisher = Publisher {
                over: plan.over,
                rooms: Arc::clone(&plan.rooms),
                publishers: plan.publishers,
                client: plan.client.clone(),
                counters: Arc::clone(&plan.counters),
                size: plan.size,
            };
            tokio::spawn(async move { publisher.publish_until(index, every, until).await })
        })
        .collect();
    let started = Instant::now();
    let reporting = {
        let (progress, counters, subscribers) = (
            plan.progress.clone(),
            Arc::clone(&plan.counters),
            plan.subscribers,
        );
        tokio::spawn(async move {
            loop {
                let published = counters.published.load(Ordering::Relaxed);
                let delivered = counters.delivered.load(Ordering::Relaxed);
                let seconds = started.elapsed().as_secs_f64().max(0.001);
                progress.set_message(format!(
                    "published {published} ({:.0}/s), delivered {delivered} of {:.0} ({:.0}/s)",
                    published as f64 / seconds,
                    published as f64 * subscribers,
                    delivered as f64 / seconds,
                ));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let mut published = Published::new(plan.rooms.len());
    for task in tasks {
        if let Ok(one) = task.await {
            published.add(&one);
        }
    }
    reporting.abort();
    published
}

/// One publisher's share of the plan.
struct Publisher {
    over: PublishOver,
    rooms: Arc<[RoomName]>,
    publishers: u32,
    client: Client,
    counters: Arc<Counters>,
    size: usize,
}

impl Publisher {
    async fn publish_until(self, index: u32, every: Option<Duration>, until: Instant) -> Published {
        let mut published = Published::new(self.rooms.len());
        // Over a WebSocket, a publish goes to the socket's room: one room
        // only (the command line refuses more).
        let mut socket = match self.over {
            PublishOver::Http => None,
            PublishOver::Ws => Some(Socket {
                client: self.client.clone(),
                room: self.rooms[0].clone(),
                connection: None,
            }),
        };
        let mut ticks = every.map(|every| {
            // Spread the publishers over one period so their ticks interleave.
            let offset = every.mul_f64(f64::from(index) / 16.0).min(every);
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
            // Catch up on ticks a slow answer made us miss: the target is a rate.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            ticks
        });
        let mut sequence = 0;
        while Instant::now() < until {
            if let Some(ticks) = ticks.as_mut() {
                ticks.tick().await;
            }
            let room_index = room_of(index, sequence, self.publishers, self.rooms.len());
            sequence += 1;
            let room = &self.rooms[room_index];
            // The key is chosen here, so that every attempt reuses it.
            let publish = Publish::new(stamped_text(self.size))
                .author("loadtest")
                .key(IdempotencyKey::generate());
            let started = Instant::now();
            let outcome = match socket.as_mut() {
                None => self.client.publish(room, publish).await.map(drop),
                Some(socket) => socket.publish(&publish).await,
            };
            match outcome {
                Ok(()) => {
                    published.accepted += 1;
                    published.accepted_by_room[room_index] += 1;
                    self.counters.published.fetch_add(1, Ordering::Relaxed);
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let _ = published.latency.record(micros.max(1));
                }
                Err(err) => *published.refused.entry(refusal(&err)).or_default() += 1,
            }
        }
        published
    }
}

/// A publisher's WebSocket, opened when needed and opened again when it
/// breaks (an instance restarting closes it).
struct Socket {
    client: Client,
    room: RoomName,
    connection: Option<WsConnection>,
}

impl Socket {
    /// Publishes and waits for the ack. When the socket fails, it is opened
    /// again and the same publish (same key) sent again, after the client's
    /// backoff and up to its attempts, as the client does over HTTP. A
    /// refusal (an `error` frame) is the answer.
    async fn publish(&mut self, publish: &Publish) -> Result<(), Error> {
        let mut retry = Retry::new(self.client.backoff());
        let mut attempts = 1;
        loop {
            match self.publish_once(publish).await {
                Err(err)
                    if !matches!(err, Error::Rejected(_)) && attempts < self.client.attempts() =>
                {
                    self.connection = None;
                    attempts += 1;
                    tokio::time::sleep(retry.next_delay(None)).await;
                }
                outcome => return outcome,
            }
        }
    }

    async fn publish_once(&mut self, publish: &Publish) -> Result<(), Error> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => {
                let base = &self.client.bases()[0];
                let opened = WsConnection::connect(&self.client, base, &self.room, None).await?;
                self.connection.insert(opened)
            }
        };
        let acked = connection.publish(publish.clone()).await.map(drop);
        // The room's messages arrive on this socket too; a publisher has
        // no use for them.
        connection.discard_pending();
        acked
    }
}

/// How a refusal is counted in the report: by status, or by WebSocket
/// error code, or as a connection failure.
fn refusal(err: &Error) -> String {
    match err {
        Error::Api(api) => format!("HTTP {}", api.status),
        Error::Rejected(body) => body.error.to_string(),
        _ => "connection".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_together_publish_in_every_room_alike() {
        // 8 publishers, 1,000 rooms (not coprime), 250 messages each.
        let mut counts = vec![0u32; 1000];
        for index in 0..8 {
            for sequence in 0..250 {
                counts[room_of(index, sequence, 8, 1000)] += 1;
            }
        }
        assert!(counts.iter().all(|&count| count == 2), "{counts:?}");
    }

    #[test]
    fn one_room_takes_every_message() {
        assert!((0..50).all(|sequence| room_of(3, sequence, 4, 1) == 0));
    }

    #[test]
    fn published_figures_add_up_room_by_room() {
        let mut total = Published::new(3);
        let mut one = Published::new(3);
        one.accepted = 5;
        one.accepted_by_room = vec![2, 0, 3];
        one.refused.insert("HTTP 503".into(), 1);
        total.add(&one);
        total.add(&one);
        assert_eq!(total.accepted, 10);
        assert_eq!(total.accepted_by_room, vec![4, 0, 6]);
        assert_eq!(total.refused["HTTP 503"], 2);
    }
}
