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
    pub room: RoomName,
    pub publishers: u32,
    pub rate: u32,
    pub duration: Duration,
    pub size: usize,
    pub client: Client,
    pub counters: Arc<Counters>,
    pub progress: ProgressBar,
    /// For the progress line: deliveries expected per publish.
    pub subscribers: u64,
}

/// What the publishers achieved.
#[derive(Debug)]
pub struct Published {
    pub accepted: u64,
    /// Refusals by status (or `error` code, or "connection").
    pub refused: BTreeMap<String, u64>,
    /// Publish round trips in microseconds.
    pub latency: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
    })
}

pub async fn run(plan: Plan) -> Published {
    let every = Duration::from_secs_f64(f64::from(plan.publishers) / f64::from(plan.rate));
    let until = Instant::now() + plan.duration;
    let tasks: Vec<_> = (0..plan.publishers)
        .map(|index| {
            let publisher = Publisher {
                over: plan.over,
                room: plan.room.clone(),
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
                    "published {published} ({:.0}/s), delivered {delivered} of {} ({:.0}/s)",
                    published as f64 / seconds,
                    published * subscribers,
                    delivered as f64 / seconds,
                ));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let mut published = Published {
        accepted: 0,
        refused: BTreeMap::new(),
        latency: histogram(),
    };
    for task in tasks {
        if let Ok(one) = task.await {
            published.accepted += one.accepted;
            for (reason, count) in one.refused {
                *published.refused.entry(reason).or_default() += count;
            }
            let _ = published.latency.add(&one.latency);
        }
    }
    reporting.abort();
    published
}

/// One publisher's share of the plan.
struct Publisher {
    over: PublishOver,
    room: RoomName,
    client: Client,
    counters: Arc<Counters>,
    size: usize,
}

impl Publisher {
    async fn publish_until(self, index: u32, every: Duration, until: Instant) -> Published {
        let mut published = Published {
            accepted: 0,
            refused: BTreeMap::new(),
            latency: histogram(),
        };
        let mut socket = match self.over {
            PublishOver::Http => None,
            PublishOver::Ws => Some(Socket {
                client: self.client.clone(),
                room: self.room.clone(),
                connection: None,
            }),
        };
        // Spread the publishers over one period so their ticks interleave.
        let offset = every.mul_f64(f64::from(index) / 16.0).min(every);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
        // Catch up on ticks a slow answer made us miss: the target is a rate.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while Instant::now() < until {
            ticks.tick().await;
            // The key is chosen here, so that every attempt reuses it.
            let publish = Publish::new(stamped_text(self.size))
                .author("loadtest")
                .key(IdempotencyKey::generate());
            let started = Instant::now();
            let outcome = match socket.as_mut() {
                None => self.client.publish(&self.room, publish).await.map(drop),
                Some(socket) => socket.publish(&publish).await,
            };
            match outcome {
                Ok(()) => {
                    published.accepted += 1;
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
