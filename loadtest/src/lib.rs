//! Drives a chat service (or the gateway) with real clients of one
//! transport and measures what a user would: does every subscriber get
//! every message, once and in order, and how long does it take.
//!
//! ```text
//! loadtest sse --subscribers 1000 --rate 500 --duration 20
//! ```
//!
//! Publishers post at a fixed total rate, each message carrying the moment
//! it was sent; subscribers compute the delivery latency on the same clock.
//! Before and after, the service's `/metrics` give its memory and CPU use.

pub mod publisher;
pub mod report;
pub mod server;
pub mod subscriber;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chat_client::{Client, RoomName, Transport};
use clap::Parser;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::publisher::PublishOver;
use crate::report::Report;
use crate::subscriber::Counters;

/// The longest a run may publish: load runs stop by themselves.
const MAX_DURATION_SECS: u64 = 600;

/// What to run: the command line.
#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load-test a chat service with real clients of one transport"
)]
pub struct Cli {
    /// The transport the subscribers use.
    #[arg(value_parser = transport_parser())]
    pub transport: Transport,
    /// The service (or gateway) to test [default: 127.0.0.1 and the
    /// transport's service port: 8081, 8082 or 8083].
    #[arg(long)]
    pub url: Option<String>,
    /// The room to use [default: a fresh one].
    #[arg(long)]
    pub room: Option<String>,
    /// Clients receiving.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub subscribers: u32,
    /// Clients publishing.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub publishers: u32,
    /// Messages per second, all publishers together.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_SECS))]
    pub duration: u64,
    /// Characters per message.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(40..=4096))]
    pub size: u32,
    /// How publishers publish: HTTP POST, or WebSocket frames (ws-svc).
    #[arg(long, value_enum, default_value_t = PublishOver::Http)]
    pub publish_over: PublishOver,
    /// Seconds to wait for the last deliveries once publishing stops.
    #[arg(long, default_value_t = 10)]
    pub drain: u64,
    /// Where to read the service's /metrics [default: the URL].
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Reads a transport by name, listing the names in `--help`.
fn transport_parser() -> impl TypedValueParser<Value = Transport> {
    PossibleValuesParser::new(Transport::ALL.map(Transport::as_str))
        .try_map(|name| name.parse::<Transport>())
}

/// The port of the service that serves `transport`, by default.
pub fn default_port(transport: Transport) -> u16 {
    match transport {
        Transport::LongPoll => 8081,
        Transport::Sse => 8082,
        Transport::Ws => 8083,
    }
}

/// A room name no earlier run used.
pub fn fresh_room() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("load-{:x}", nanos.as_micros())
}

/// The URL to test: the given one, or the transport's service on 127.0.0.1.
pub fn target(cli: &Cli) -> String {
    cli.url
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", default_port(cli.transport)))
}

/// Runs the load and reports. `Err` when the run could not happen at all
/// (the service is unreachable, subscribers could not connect).
pub async fn run(cli: &Cli, url: &str, room: &str) -> Result<Report, String> {
    let room_name = RoomName::parse(room).map_err(|err| format!("room {room:?}: {err}"))?;
    // One client for every subscriber and publisher: they share its
    // connection pool, as the clients of one program would.
    let client = Client::new(url).map_err(|err| format!("client: {err}"))?;
    let metrics = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|err| format!("HTTP client: {err}"))?;
    let metrics_url = cli.metrics_url.clone().unwrap_or_else(|| url.to_owned());
    let before = server::snapshot(&metrics, &metrics_url).await;
    let start_after = server::last_id(&client, &room_name).await?;

    let progress = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.enable_steady_tick(Duration::from_millis(200));

    // Subscribers first, all connected, from the room's current position.
    let counters = Arc::new(Counters::default());
    let stop_subscribers = CancellationToken::new();
    let mut subscribers = Vec::new();
    for batch in (0..cli.subscribers).collect::<Vec<_>>().chunks(200) {
        for _ in batch {
            subscribers.push(subscriber::spawn(
                client.clone(),
                cli.transport,
                room_name.clone(),
                start_after,
                Arc::clone(&counters),
                stop_subscribers.clone(),
            ));
        }
        progress.set_message(format!(
            "connecting: {} of {}",
            counters.connected.load(Ordering::Relaxed),
            cli.subscribers
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_deadline = Instant::now() + Duration::from_secs(30);
    while counters.connected.load(Ordering::Relaxed) < u64::from(cli.subscribers) {
        if Instant::now() > connect_deadline {
            return Err(format!(
                "only {} of {} subscribers connected within 30 s",
                counters.connected.load(Ordering::Relaxed),
                cli.subscribers
            ));
        }
        progress.set_message(format!(
            "connecting: {} of {}",
            counters.connected.load(Ordering::Relaxed),
            cli.subscribers
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Then the publishers, for the given time.
    let started = Instant::now();
    let published = publisher::run(publisher::Plan {
        over: cli.publish_over,
        room: room_name.clone(),
        publishers: cli.publishers,
        rate: cli.rate,
        duration: Duration::from_secs(cli.duration),
        size: usize::try_from(cli.size).unwrap_or(100),
        client: client.clone(),
        counters: Arc::clone(&counters),
        progress: progress.clone(),
        subscribers: u64::from(cli.subscribers),
    })
    .await;
    let publishing = started.elapsed();

    // Then wait for the last deliveries.
    let expected = published.accepted * u64::from(cli.subscribers);
    let drain_deadline = Instant::now() + Duration::from_secs(cli.drain);
    while counters.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        progress.set_message(format!(
            "draining: {} of {} deliveries",
            counters.delivered.load(Ordering::Relaxed),
            expected
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    stop_subscribers.cancel();
    let mut results = Vec::with_capacity(subscribers.len());
    for subscriber in subscribers {
        if let Ok(result) = subscriber.await {
            results.push(result);
        }
    }
    progress.finish_and_clear();
    let after = server::snapshot(&metrics, &metrics_url).await;

    Ok(Report::new(report::Run {
        transport: cli.transport,
        url: url.to_owned(),
        room: room.to_owned(),
        subscribers: cli.subscribers,
        publishers: cli.publishers,
        target_rate: cli.rate,
        size: cli.size,
        publishing,
        elapsed,
        published,
        results,
        before,
        after,
    }))
}
