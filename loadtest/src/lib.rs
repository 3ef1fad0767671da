//! Drives a chat service (or the gateway) with real clients of one
//! transport and measures what a user would: does every subscriber get
//! every message, once and in order, and how long does it take.
//!
//! ```text
//! loadtest sse --subscribers 1000 --rate 500 --duration 20
//! loadtest ws --subscribers 2000 --rate 50 --server-pid 4242 --server-pid 4243
//! loadtest sse --rooms 1000 --subscribers 3000 --rate 0 --publishers 16 --server-pid 4242
//! loadtest ws --idle 19000 --server-pid 4242
//! ```
//!
//! Publishers post at a fixed total rate (or, with `--rate 0`, as fast as
//! they are answered), each message carrying the moment it was sent;
//! subscribers compute the delivery latency on the same clock. Before and
//! after, the service's `/metrics` give its memory and CPU use; with
//! `--server-pid` (the service, its Redis: any processes on this machine,
//! so servers without `/metrics` too), `/proc` gives the CPU time they
//! spent from the first publish to the last delivery, per delivery and per
//! message. `--idle` holds connections instead and measures the server's
//! memory per connection ([`idle`]).

pub mod idle;
pub mod process;
pub mod publisher;
pub mod report;
pub mod server;
pub mod subscriber;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chat_client::{Client, RoomName, Transport};
use clap::Parser;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::publisher::PublishOver;
use crate::report::{CpuWindow, Report};
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
    /// Clients receiving (0: measure publishing alone).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=50_000))]
    pub subscribers: u32,
    /// Clients publishing.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub publishers: u32,
    /// Messages per second, all publishers together; 0 = as fast as the
    /// service answers (each publisher sends its next when answered).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub rate: u32,
    /// Rooms to spread the load over: subscriber i follows room i mod N,
    /// and publishers publish in every room in turn. With N > 1 the rooms
    /// are named `<room>-0` .. `<room>-<N-1>`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rooms: u32,
    /// A server process to measure from `/proc` (CPU time, resident
    /// memory): the service, its Redis, the floor server. Repeat for each.
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    /// Instead of delivering messages, hold this many idle connections of
    /// the transport (streams, sockets, held polls) and report the server's
    /// memory per connection. Needs `--server-pid`.
    #[arg(long, value_name = "CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub idle: Option<u32>,
    /// Local addresses to open idle connections from, in turn, e.g.
    /// 127.0.0.1,127.0.0.2 (each has ~28,000 ports per server port)
    /// [default: the system's choice].
    #[arg(long, value_delimiter = ',', value_name = "IP,...")]
    pub source_ip: Vec<IpAddr>,
    /// Seconds to let the server settle once idle connections are open,
    /// before reading its memory.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub settle: u64,
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
    if cli.rooms > 1 && cli.publish_over == PublishOver::Ws {
        return Err("--publish-over ws publishes in one room: use it without --rooms".into());
    }
    let rooms = room_names(room, cli.rooms)?;
    // A wrong PID is an error now, not a missing figure at the end.
    process::sample_all(&cli.server_pids)?;
    // One client for every subscriber and publisher: they share its
    // connection pool, as the clients of one program would.
    let client = Client::new(url).map_err(|err| format!("client: {err}"))?;
    let metrics = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|err| format!("HTTP client: {err}"))?;
    let metrics_url = cli.metrics_url.clone().unwrap_or_else(|| url.to_owned());
    let before = server::snapshot(&metrics, &metrics_url).await;
    let mut start_after = Vec::with_capacity(rooms.len());
    for room in rooms.iter() {
        start_after.push(server::last_id(&client, room).await?);
    }

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
        for &index in batch {
            let room = index as usize % rooms.len();
            subscribers.push(subscriber::spawn(
                client.clone(),
                cli.transport,
                rooms[room].clone(),
                room,
                start_after[room],
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

    // Then the publishers, for the given time; the server's CPU is
    // measured from here to the last delivery.
    let subscribers_by_room = report::subscribers_by_room(cli.subscribers, rooms.len());
    let cpu_before = process::sample_all(&cli.server_pids)?;
    let started = Instant::now();
    let published = publisher::run(publisher::Plan {
        over: cli.publish_over,
        rooms: Arc::clone(&rooms),
        publishers: cli.publishers,
        rate: cli.rate,
        duration: Duration::from_secs(cli.duration),
        size: usize::try_from(cli.size).unwrap_or(100),
        client: client.clone(),
        counters: Arc::clone(&counters),
        progress: progress.clone(),
        subscribers: f64::from(cli.subscribers) / rooms.len() as f64,
    })
    .await;
    let publishing = started.elapsed();

    // Then wait for the last deliveries.
    let expected = report::expected_deliveries(&published, &subscribers_by_room);
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
    // Before the subscribers leave: their goodbyes are not the load.
    let cpu_after = process::sample_all(&cli.server_pids)?;
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
        subscribers_by_room,
        publishers: cli.publishers,
        target_rate: cli.rate,
        size: cli.size,
        publishing,
        elapsed,
        published,
        results,
        before,
        after,
        cpu: (!cli.server_pids.is_empty()).then(|| CpuWindow {
            processes: process::Usage::all(&cpu_before, &cpu_after, process::ticks_per_second()),
            seconds: elapsed.as_secs_f64(),
        }),
    }))
}

/// The rooms of a run: `room` alone, or `room-0` .. `room-<n-1>`.
pub fn room_names(room: &str, rooms: u32) -> Result<Arc<[RoomName]>, String> {
    let names: Vec<String> = if rooms <= 1 {
        vec![room.to_owned()]
    } else {
        (0..rooms).map(|index| format!("{room}-{index}")).collect()
    };
    names
        .iter()
        .map(|name| RoomName::parse(name).map_err(|err| format!("room {name:?}: {err}")))
        .collect()
}
