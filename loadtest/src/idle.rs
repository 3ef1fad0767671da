//! Idle connections: how much memory a server keeps per connection that
//! does nothing (an open event stream or WebSocket, a held long poll).
//!
//! The connections are raw sockets speaking just enough HTTP to open a
//! stream, a socket or a poll, then only read (and answer WebSocket pings),
//! so that tens of thousands fit in the load tester's own memory and
//! descriptors. They can come from several local addresses
//! (`--source-ip`), since one address has only ~28,000 ports for one
//! server port.
//!
//! The server's resident memory (`VmRSS`) is read after a warm-up (a few
//! connections opened and closed, so the room and the allocator's first
//! arenas exist), again once every connection is open and the figure has
//! settled, and once more after they are closed. The growth divided by the
//! connections held is the memory per connection.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_client::{Client, RoomName, Transport, Url};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::process::{self, Sample};
use crate::report::verdict;
use crate::{Cli, server};

/// Connections being opened at once: below any listen backlog.
const OPENING_AT_ONCE: usize = 128;
/// Connections opened and closed before the first reading.
const WARM_UP: u32 = 64;
/// How long a held poll asks to be held (servers cap it: run them with
/// their longest hold, e.g. `LONGPOLL_TIMEOUT_SECS=60`).
const POLL_TIMEOUT_SECS: u64 = 60;

/// The server processes' memory at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Resident bytes per process, in `--server-pid` order.
    pub processes: Vec<(String, u64)>,
    pub total_bytes: u64,
}

impl Memory {
    fn of(samples: &[Sample]) -> Self {
        Memory {
            processes: samples
                .iter()
                .map(|sample| {
                    (
                        format!("{} ({})", sample.name, sample.pid),
                        sample.resident_bytes,
                    )
                })
                .collect(),
            total_bytes: samples.iter().map(|sample| sample.resident_bytes).sum(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub transport: Transport,
    pub url: String,
    pub room: String,
    pub asked: u32,
    /// Opened (streams and sockets: the server answered; polls: sent).
    pub opened: u64,
    /// Could not be opened, by reason.
    pub failed: BTreeMap<String, u64>,
    /// Ended (closed, or a poll answered) before the reading: not held.
    pub ended_early: u64,
    pub before: Memory,
    pub held: Memory,
    pub after_close: Memory,
    /// Resident memory grown per connection held, in bytes.
    pub bytes_per_connection: Option<f64>,
}

impl IdleReport {
    /// Every connection asked for was held to the reading.
    pub fn complete(&self) -> bool {
        self.opened == u64::from(self.asked) && self.failed.is_empty() && self.ended_early == 0
    }
}

/// Memory grown between two readings, per connection held.
pub fn per_connection(before: u64, held: u64, connections: u64) -> Option<f64> {
    (connections > 0).then(|| (held as f64 - before as f64) / connections as f64)
}

impl fmt::Display for IdleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = |bytes: u64| format!("{:.1} MB", bytes as f64 / 1_048_576.0);
        writeln!(
            f,
            "{:?} idle connections on {} (room {})",
            self.transport, self.url, self.room
        )?;
        writeln!(
            f,
            "  held       {} of {} opened; failed {:?}; ended early {}",
            self.opened, self.asked, self.failed, self.ended_early
        )?;
        for (index, (name, before)) in self.before.processes.iter().enumerate() {
            let held = self
                .held
                .processes
                .get(index)
                .map_or(0, |(_, bytes)| *bytes);
            let after = self
                .after_close
                .processes
                .get(index)
                .map_or(0, |(_, bytes)| *bytes);
            writeln!(
                f,
                "  memory     {name}: {} before, {} held, {} after closing",
                mb(*before),
                mb(held),
                mb(after)
            )?;
        }
        writeln!(
            f,
            "  per conn   {}",
            self.bytes_per_connection.map_or_else(
                || "-".into(),
                |bytes| format!("{:.2} KiB resident per connection", bytes / 1024.0)
            )
        )?;
        writeln!(f, "  verdict    {}", verdict(self.complete()))
    }
}

/// What every connection sends, and where.
#[derive(Debug)]
struct Target {
    transport: Transport,
    address: SocketAddr,
    request: Vec<u8>,
}

/// The request that opens an idle connection of `transport` in `room`.
pub fn request(transport: Transport, host: &str, path: &str, room: &str, last: u64) -> String {
    let path = path.trim_end_matches('/');
    match transport {
        Transport::Ws => format!(
            "GET {path}/rooms/{room}/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        ),
        Transport::Sse => format!(
            "GET {path}/rooms/{room}/events HTTP/1.1\r\nHost: {host}\r\n\
             Accept: text/event-stream\r\n\r\n"
        ),
        Transport::LongPoll => format!(
            "GET {path}/rooms/{room}/poll?after={last}&timeout={POLL_TIMEOUT_SECS} HTTP/1.1\r\n\
             Host: {host}\r\n\r\n"
        ),
    }
}

/// The status of an HTTP response head, once `head` holds all of it.
pub fn response_status(head: &[u8]) -> Option<Result<u16, String>> {
    let end = head.windows(4).position(|window| window == b"\r\n\r\n")?;
    let line = String::from_utf8_lossy(&head[..end]);
    let line = line.lines().next().unwrap_or_default();
    Some(
        line.split(' ')
            .nth(1)
            .and_then(|status| status.parse().ok())
            .ok_or_else(|| format!("not an HTTP response: {line:?}")),
    )
}

/// Reads the server's WebSocket frames in `buffer`: the pongs owed for its
/// pings (masked, as a client must), and whether it closed. Incomplete
/// frames stay in the buffer.
pub fn server_frames(buffer: &mut Vec<u8>) -> (Vec<u8>, bool) {
    let mut pongs = Vec::new();
    loop {
        if buffer.len() < 2 {
            return (pongs, false);
        }
        let opcode = buffer[0] & 0x0f;
        let (length, header) = match buffer[1] & 0x7f {
            126 if buffer.len() >= 4 => {
                (usize::from(u16::from_be_bytes([buffer[2], buffer[3]])), 4)
            }
            127 if buffer.len() >= 10 => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&buffer[2..10]);
                (
                    usize::try_from(u64::from_be_bytes(bytes)).unwrap_or(usize::MAX),
                    10,
                )
            }
            126 | 127 => return (pongs, false),
            length => (usize::from(length), 2),
        };
        if buffer.len() - header < length {
            return (pongs, false);
        }
        match opcode {
            0x8 => return (pongs, true),
            0x9 if length <= 125 => {
                // A zero mask: the payload goes as it is.
                pongs.extend_from_slice(&[0x8a, 0x80 | length as u8, 0, 0, 0, 0]);
                pongs.extend_from_slice(&buffer[header..header + length]);
            }
            _ => {}
        }
        buffer.drain(..header + length);
    }
}

/// Counts shared by the connections.
#[derive(Debug, Default)]
struct Counters {
    opened: AtomicU64,
    ended: AtomicU64,
    /// Ended early, after being opened.
    ended_early: AtomicU64,
}

/// Opens one connection and holds it until `stop`. `Err` when it could not
/// be opened.
async fn hold(
    target: Arc<Target>,
    source: Option<IpAddr>,
    opening: Arc<Semaphore>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> Result<(), String> {
    let permit = opening
        .acquire_owned()
        .await
        .map_err(|err| err.to_string())?;
    let mut stream = tokio::time::timeout(Duration::from_secs(20), open(&target, source))
        .await
        .map_err(|_| "timeout".to_owned())??;
    counters.opened.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    let mut buffer = Vec::new();
    let mut read = [0u8; 256];
    let mut ended = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            outcome = stream.read(&mut read) => match outcome {
                Ok(0) | Err(_) => {
                    ended = true;
                    break;
                }
                // A poll answered is a poll no longer held.
                Ok(_) if target.transport == Transport::LongPoll => {
                    ended = true;
                    break;
                }
                Ok(n) if target.transport == Transport::Ws => {
                    buffer.extend_from_slice(&read[..n]);
                    let (pongs, closed) = server_frames(&mut buffer);
                    if closed || (!pongs.is_empty() && stream.write_all(&pongs).await.is_err()) {
                        ended = true;
                        break;
                    }
                }
                Ok(_) => {}
            },
        }
    }
    if ended {
        counters.ended_early.fetch_add(1, Ordering::Relaxed);
    }
    counters.ended.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Connects, sends the request and, for streams and sockets, reads the
/// response head.
async fn open(target: &Target, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let socket = if target.address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|err| format!("socket: {}", err.kind()))?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|err| format!("bind {ip}: {}", err.kind()))?;
    }
    let mut stream = socket
        .connect(target.address)
        .await
        .map_err(|err| format!("connect: {}", err.kind()))?;
    stream
        .write_all(&target.request)
        .await
        .map_err(|err| format!("send: {}", err.kind()))?;
    if target.transport == Transport::LongPoll {
        return Ok(stream);
    }
    let expected = if target.transport == Transport::Ws {
        101
    } else {
        200
    };
    let mut head = Vec::new();
    let mut read = [0u8; 512];
    loop {
        let n = stream
            .read(&mut read)
            .await
            .map_err(|err| format!("read: {}", err.kind()))?;
        if n == 0 {
            return Err("closed before answering".into());
        }
        head.extend_from_slice(&read[..n]);
        match response_status(&head) {
            Some(Ok(status)) if status == expected => return Ok(stream),
            Some(Ok(status)) => return Err(format!("HTTP {status}")),
            Some(Err(err)) => return Err(err),
            None if head.len() > 16 * 1024 => return Err("response head too long".into()),
            None => {}
        }
    }
}

/// Opens `count` connections; returns them and their failures.
async fn open_many(
    count: u32,
    target: &Arc<Target>,
    sources: &[IpAddr],
    counters: &Arc<Counters>,
    stop: &CancellationToken,
    progress: &ProgressBar,
) -> (JoinSet<Result<(), String>>, BTreeMap<String, u64>) {
    let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let mut tasks = JoinSet::new();
    let opened_before = counters.opened.load(Ordering::Relaxed);
    for index in 0..count as usize {
        let source = (!sources.is_empty()).then(|| sources[index % sources.len()]);
        tasks.spawn(hold(
            Arc::clone(target),
            source,
            Arc::clone(&opening),
            Arc::clone(counters),
            stop.clone(),
        ));
    }
    // Wait until each is open or has failed.
    let mut failed = BTreeMap::new();
    let mut failures = 0;
    loop {
        while let Some(done) = tasks.try_join_next() {
            if let Ok(Err(reason)) = done {
                *failed.entry(reason).or_insert(0) += 1;
                failures += 1;
            }
        }
        let opened = counters.opened.load(Ordering::Relaxed) - opened_before;
        progress.set_message(format!("opening: {opened} of {count}, {failures} failed"));
        if opened + failures >= u64::from(count) {
            return (tasks, failed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the processes until their total stops moving (two readings half a
/// second apart within 0.5%), for at most 10 s.
async fn settled(pids: &[u32]) -> Result<Vec<Sample>, String> {
    let total = |samples: &[Sample]| samples.iter().map(|s| s.resident_bytes).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = process::sample_all(pids)?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = process::sample_all(pids)?;
        let (a, b) = (total(&last) as f64, total(&now) as f64);
        if (a - b).abs() <= a * 0.005 || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// Holds `cli.idle` idle connections and reports the server's memory.
pub async fn run(cli: &Cli, url: &str, room: &str) -> Result<IdleReport, String> {
    let count = cli.idle.ok_or("no --idle")?;
    if cli.server_pids.is_empty() {
        return Err("--idle measures the server's memory: give its --server-pid".into());
    }
    process::sample_all(&cli.server_pids)?;
    let base = Url::parse(url).map_err(|err| format!("{url}: {err}"))?;
    if base.scheme() != "http" {
        return Err(format!("{url}: --idle speaks plain http only"));
    }
    let host = base.host_str().ok_or_else(|| format!("{url}: no host"))?;
    let port = base.port_or_known_default().unwrap_or(80);
    let address = tokio::net::lookup_host((host, port))
        .await
        .map_err(|err| format!("{host}: {err}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    let room_name = RoomName::parse(room).map_err(|err| format!("room {room:?}: {err}"))?;
    let client = Client::new(url).map_err(|err| format!("client: {err}"))?;
    let last = server::last_id(&client, &room_name).await?;
    let host_header = match base.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let target = Arc::new(Target {
        transport: cli.transport,
        address,
        request: request(cli.transport, &host_header, base.path(), room, last).into_bytes(),
    });
    let progress = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.enable_steady_tick(Duration::from_millis(200));

    // Warm up: the room exists, the server has served this kind before.
    let counters = Arc::new(Counters::default());
    let warm = CancellationToken::new();
    let (mut tasks, _) = open_many(
        WARM_UP.min(count),
        &target,
        &cli.source_ip,
        &counters,
        &warm,
        &progress,
    )
    .await;
    warm.cancel();
    while tasks.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = settled(&cli.server_pids).await?;

    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let (mut tasks, failed) =
        open_many(count, &target, &cli.source_ip, &counters, &stop, &progress).await;
    progress.set_message(format!(
        "{} open: settling",
        counters.opened.load(Ordering::Relaxed)
    ));
    tokio::time::sleep(Duration::from_secs(cli.settle)).await;
    let held = settled(&cli.server_pids).await?;
    let opened = counters.opened.load(Ordering::Relaxed);
    let ended_early = counters.ended_early.load(Ordering::Relaxed);

    progress.set_message("closing");
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_close = process::sample_all(&cli.server_pids)?;
    progress.finish_and_clear();

    let (before, held, after_close) = (
        Memory::of(&before),
        Memory::of(&held),
        Memory::of(&after_close),
    );
    Ok(IdleReport {
        transport: cli.transport,
        url: url.to_owned(),
        room: room.to_owned(),
        asked: count,
        opened,
        failed,
        ended_early,
        bytes_per_connection: per_connection(
            before.total_bytes,
            held.total_bytes,
            opened.saturating_sub(ended_early),
        ),
        before,
        held,
        after_close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transport_asks_for_its_route() {
        let ws = request(Transport::Ws, "h:1", "/", "r", 0);
        assert!(
            ws.starts_with("GET /rooms/r/ws HTTP/1.1\r\nHost: h:1\r\n"),
            "{ws}"
        );
        assert!(ws.contains("Upgrade: websocket") && ws.ends_with("\r\n\r\n"));
        // RFC 6455: the key is 16 bytes in base64 (24 characters, "==" at
        // the end); servers refuse any other with a 400.
        let key = ws
            .lines()
            .find_map(|line| line.strip_prefix("Sec-WebSocket-Key: "))
            .expect("a key");
        assert!(key.len() == 24 && key.ends_with("=="), "{key}");
        let sse = request(Transport::Sse, "h", "/chat/", "r", 0);
        assert!(
            sse.starts_with("GET /chat/rooms/r/events HTTP/1.1\r\n"),
            "{sse}"
        );
        let poll = request(Transport::LongPoll, "h", "", "r", 41);
        assert!(
            poll.starts_with("GET /rooms/r/poll?after=41&timeout=60 HTTP/1.1\r\n"),
            "{poll}"
        );
    }

    #[test]
    fn a_response_status_is_read_once_the_head_is_whole() {
        assert_eq!(response_status(b"HTTP/1.1 101 Switching"), None);
        assert_eq!(
            response_status(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
            Some(Ok(101))
        );
        assert_eq!(
            response_status(b"HTTP/1.1 503 Service Unavailable\r\n\r\n{}"),
            Some(Ok(503))
        );
        assert!(matches!(response_status(b"garbage\r\n\r\n"), Some(Err(_))));
    }

    #[test]
    fn pings_get_masked_pongs_with_their_payload_and_text_is_skipped() {
        // A text frame, a ping "hi", half of another frame.
        let mut buffer = vec![
            0x81, 0x02, b'{', b'}', 0x89, 0x02, b'h', b'i', 0x81, 0x05, b'x',
        ];
        let (pongs, closed) = server_frames(&mut buffer);
        assert_eq!(pongs, vec![0x8a, 0x82, 0, 0, 0, 0, b'h', b'i']);
        assert!(!closed);
        assert_eq!(buffer, vec![0x81, 0x05, b'x'], "the incomplete frame waits");
        buffer.extend_from_slice(b"yzab");
        buffer.extend_from_slice(&[0x88, 0x02, 0x03, 0xe8]);
        let (pongs, closed) = server_frames(&mut buffer);
        assert!(pongs.is_empty() && closed);
    }

    #[test]
    fn a_frame_with_a_16_bit_length_is_skipped_whole() {
        let mut buffer = vec![0x81, 126, 0x01, 0x00];
        buffer.extend(std::iter::repeat_n(b'x', 256));
        buffer.extend_from_slice(&[0x89, 0x00]);
        let (pongs, _) = server_frames(&mut buffer);
        assert_eq!(pongs, vec![0x8a, 0x80, 0, 0, 0, 0]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn memory_per_connection_is_the_growth_over_the_connections_held() {
        assert_eq!(per_connection(10 << 20, 20 << 20, 1280), Some(8192.0));
        assert_eq!(per_connection(10, 5, 5), Some(-1.0), "shrinking is shown");
        assert_eq!(per_connection(10, 20, 0), None);
    }
}
