//! Publishers: each publishes at its share of the total rate, one message
//! at a time (a publish waits for its answer), for the planned duration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as Frame;

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
    pub url: String,
    pub room: String,
    pub publishers: u32,
    pub rate: u32,
    pub duration: Duration,
    pub size: usize,
    pub client: reqwest::Client,
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
            let (url, room, client, counters) = (
                plan.url.clone(),
                plan.room.clone(),
                plan.client.clone(),
                Arc::clone(&plan.counters),
            );
            let (over, size) = (plan.over, plan.size);
            tokio::spawn(async move {
                publish_until(over, url, room, client, counters, index, every, until, size).await
            })
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

#[allow(clippy::too_many_arguments)]
async fn publish_until(
    over: PublishOver,
    url: String,
    room: String,
    client: reqwest::Client,
    counters: Arc<Counters>,
    index: u32,
    every: Duration,
    until: Instant,
    size: usize,
) -> Published {
    let mut published = Published {
        accepted: 0,
        refused: BTreeMap::new(),
        latency: histogram(),
    };
    let mut socket = match over {
        PublishOver::Http => None,
        PublishOver::Ws => {
            let address = format!("{}/rooms/{room}/ws", url.replacen("http", "ws", 1));
            match tokio_tungstenite::connect_async(address).await {
                Ok((socket, _)) => Some(socket),
                Err(err) => {
                    *published
                        .refused
                        .entry(format!("connection: {err}"))
                        .or_default() += 1;
                    return published;
                }
            }
        }
    };
    // Spread the publishers over one period so their ticks interleave.
    let offset = every.mul_f64(f64::from(index) / 16.0).min(every);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
    // Catch up on ticks a slow answer made us miss: the target is a rate.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sequence = 0_u64;
    while Instant::now() < until {
        ticks.tick().await;
        let text = stamped_text(size);
        let started = Instant::now();
        let outcome = match socket.as_mut() {
            None => post(&client, &url, &room, &text).await,
            Some(socket) => {
                sequence += 1;
                publish_frame(socket, &format!("{index}-{sequence}"), &text).await
            }
        };
        match outcome {
            Ok(()) => {
                published.accepted += 1;
                counters.published.fetch_add(1, Ordering::Relaxed);
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                let _ = published.latency.record(micros.max(1));
            }
            Err(reason) => *published.refused.entry(reason).or_default() += 1,
        }
    }
    published
}

async fn post(client: &reqwest::Client, url: &str, room: &str, text: &str) -> Result<(), String> {
    let response = client
        .post(format!("{url}/rooms/{room}/messages"))
        .json(&json!({"author": "loadtest", "message": text}))
        .send()
        .await
        .map_err(|_| "connection".to_owned())?;
    match response.status().as_u16() {
        201 => Ok(()),
        status => Err(format!("HTTP {status}")),
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn publish_frame(socket: &mut Socket, reference: &str, text: &str) -> Result<(), String> {
    let frame = json!({"type": "publish", "ref": reference, "author": "loadtest", "message": text});
    socket
        .send(Frame::text(frame.to_string()))
        .await
        .map_err(|_| "connection".to_owned())?;
    // The room's messages come on this socket too; skip them until our answer.
    while let Some(Ok(frame)) = socket.next().await {
        let Frame::Text(text) = frame else { continue };
        let Ok(reply) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if reply["ref"] != reference {
            continue;
        }
        return match reply["type"].as_str() {
            Some("ack") => Ok(()),
            _ => Err(reply["error"].as_str().unwrap_or("error").to_owned()),
        };
    }
    Err("connection".to_owned())
}
