//! The run's report, as text or JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chat_client::Transport;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::process::Usage;
use crate::publisher::Published;
use crate::server::Snapshot;
use crate::subscriber::Outcome;

/// Everything a run produced, before it is summed up.
#[derive(Debug)]
pub struct Run {
    pub transport: Transport,
    pub url: String,
    pub room: String,
    pub subscribers: u32,
    /// Subscribers per room, by the room's index (one entry per room).
    pub subscribers_by_room: Vec<u64>,
    pub publishers: u32,
    pub target_rate: u32,
    pub size: u32,
    pub publishing: Duration,
    pub elapsed: Duration,
    pub published: Published,
    pub results: Vec<Outcome>,
    pub before: Snapshot,
    pub after: Snapshot,
    /// What the server processes (`--server-pid`) spent from the first
    /// publish to the end of the drain.
    pub cpu: Option<CpuWindow>,
}

/// Server processes' usage over a measured window.
#[derive(Debug, Clone)]
pub struct CpuWindow {
    pub processes: Vec<Usage>,
    pub seconds: f64,
}

/// What the server spent for what it did, over the measured window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerCpu {
    pub window_seconds: f64,
    /// Every `--server-pid`, in the order given.
    pub processes: Vec<Usage>,
    /// All of them together.
    pub cpu_seconds: f64,
    /// CPU seconds per second of the window (1.0 = one core busy).
    pub cores: f64,
    /// Deliveries per server CPU-second (`None` without CPU time).
    pub deliveries_per_cpu_second: Option<f64>,
    /// Server CPU per accepted message, in microseconds (`None` without
    /// messages).
    pub cpu_us_per_message: Option<f64>,
}

impl ServerCpu {
    pub fn new(window: CpuWindow, delivered: u64, published: u64) -> Self {
        let cpu_seconds: f64 = window.processes.iter().map(|usage| usage.cpu_seconds).sum();
        ServerCpu {
            window_seconds: window.seconds,
            cores: cpu_seconds / window.seconds.max(0.001),
            deliveries_per_cpu_second: (cpu_seconds > 0.0).then(|| delivered as f64 / cpu_seconds),
            cpu_us_per_message: (published > 0).then(|| cpu_seconds * 1e6 / published as f64),
            cpu_seconds,
            processes: window.processes,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Latency {
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub transport: Transport,
    pub url: String,
    pub room: String,
    pub rooms: usize,
    pub subscribers: u32,
    pub publishers: u32,
    pub message_chars: u32,
    pub target_rate: u32,
    pub publish_seconds: f64,
    pub published: u64,
    pub publish_rate: f64,
    pub refused: BTreeMap<String, u64>,
    pub publish_latency_ms: Latency,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub delivery_rate: f64,
    pub missing: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub reconnects: u64,
    pub delivery_latency_ms: Latency,
    pub server_before: Snapshot,
    pub server_after: Snapshot,
    /// Server CPU time over the run divided by the run's length (1.0 = one core),
    /// from the service's `/metrics`.
    pub server_cpu_cores: Option<f64>,
    /// From `/proc`, for the processes given with `--server-pid`.
    pub server_cpu: Option<ServerCpu>,
}

impl Report {
    pub fn new(run: Run) -> Self {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("valid")));
        let (mut delivered, mut missing, mut duplicates, mut gaps, mut reconnects) =
            (0, 0, 0, 0, 0);
        for outcome in &run.results {
            let _ = latency.add(&outcome.latency);
            delivered += outcome.received;
            duplicates += outcome.duplicates;
            gaps += outcome.gaps;
            // A client that stopped early misses what it never received.
            let accepted = run
                .published
                .accepted_by_room
                .get(outcome.room)
                .copied()
                .unwrap_or(0);
            missing +=
                outcome.missing + accepted.saturating_sub(outcome.received + outcome.missing);
            reconnects += outcome.reconnects;
        }
        let seconds = run.elapsed.as_secs_f64().max(0.001);
        let cpu = match (run.before.cpu_seconds, run.after.cpu_seconds) {
            (Some(before), Some(after)) => Some((after - before) / seconds),
            _ => None,
        };
        let expected_deliveries = expected_deliveries(&run.published, &run.subscribers_by_room);
        let server_cpu = run
            .cpu
            .map(|window| ServerCpu::new(window, delivered, run.published.accepted));
        Report {
            transport: run.transport,
            url: run.url,
            room: run.room,
            rooms: run.subscribers_by_room.len(),
            subscribers: run.subscribers,
            publishers: run.publishers,
            message_chars: run.size,
            target_rate: run.target_rate,
            publish_seconds: run.publishing.as_secs_f64(),
            published: run.published.accepted,
            publish_rate: run.published.accepted as f64 / run.publishing.as_secs_f64().max(0.001),
            refused: run.published.refused,
            publish_latency_ms: Latency::of(&run.published.latency),
            expected_deliveries,
            delivered,
            delivery_rate: delivered as f64 / seconds,
            missing,
            duplicates,
            gaps,
            reconnects,
            delivery_latency_ms: Latency::of(&latency),
            server_before: run.before,
            server_after: run.after,
            server_cpu_cores: cpu,
            server_cpu,
        }
    }

    /// Every subscriber got every message once, in order, and no publish
    /// was refused.
    pub fn complete(&self) -> bool {
        self.delivered == self.expected_deliveries
            && self.missing == 0
            && self.duplicates == 0
            && self.refused.is_empty()
    }
}

/// Every accepted message times the subscribers of its room.
pub fn expected_deliveries(published: &Published, subscribers_by_room: &[u64]) -> u64 {
    published
        .accepted_by_room
        .iter()
        .zip(subscribers_by_room)
        .map(|(accepted, subscribers)| accepted * subscribers)
        .sum()
}

/// How many subscribers each of `rooms` rooms gets when subscriber `i`
/// goes to room `i % rooms`.
pub fn subscribers_by_room(subscribers: u32, rooms: usize) -> Vec<u64> {
    let rooms = rooms.max(1);
    (0..rooms)
        .map(|room| {
            let (whole, rest) = (subscribers as usize / rooms, subscribers as usize % rooms);
            (whole + usize::from(room < rest)) as u64
        })
        .collect()
}

fn megabytes(bytes: Option<f64>) -> String {
    bytes.map_or_else(
        || "-".into(),
        |bytes| format!("{:.1} MB", bytes / 1_048_576.0),
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.delivery_latency_ms;
        let p = &self.publish_latency_ms;
        writeln!(
            f,
            "{:?} subscribers on {} (room {}{})",
            self.transport,
            self.url,
            self.room,
            if self.rooms > 1 {
                format!(" and {} more", self.rooms - 1)
            } else {
                String::new()
            }
        )?;
        let target = if self.target_rate == 0 {
            "as many msg/s as answered".to_owned()
        } else {
            format!("target {} msg/s", self.target_rate)
        };
        writeln!(
            f,
            "  load       {} subscribers in {} room(s), {} publishers, {target} of {} chars for {:.1} s",
            self.subscribers, self.rooms, self.publishers, self.message_chars, self.publish_seconds
        )?;
        writeln!(
            f,
            "  published  {} ({:.0} msg/s), refused {:?}; publish round trip p50 {:.2} ms, p99 {:.2} ms",
            self.published, self.publish_rate, self.refused, p.p50, p.p99
        )?;
        writeln!(
            f,
            "  delivered  {} of {} ({:.0} msg/s); missing {}, duplicates {}, gaps {}, reconnects {}",
            self.delivered,
            self.expected_deliveries,
            self.delivery_rate,
            self.missing,
            self.duplicates,
            self.gaps,
            self.reconnects
        )?;
        writeln!(
            f,
            "  latency    publish to delivery: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            l.p50, l.p90, l.p99, l.p999, l.max
        )?;
        writeln!(
            f,
            "  server     memory {} -> {}; CPU {}",
            megabytes(self.server_before.resident_bytes),
            megabytes(self.server_after.resident_bytes),
            self.server_cpu_cores.map_or_else(
                || "-".into(),
                |cores| format!("{:.0}% of a core", cores * 100.0)
            )
        )?;
        if let Some(cpu) = &self.server_cpu {
            let processes: Vec<String> = cpu
                .processes
                .iter()
                .map(|usage| {
                    format!(
                        "{} ({}) {:.2} s ({:.0}% kernel)",
                        usage.name,
                        usage.pid,
                        usage.cpu_seconds,
                        100.0 * usage.system_seconds / usage.cpu_seconds.max(1e-9)
                    )
                })
                .collect();
            writeln!(
                f,
                "  server CPU {} = {:.2} s over {:.1} s ({:.0}% of a core)",
                processes.join(" + "),
                cpu.cpu_seconds,
                cpu.window_seconds,
                cpu.cores * 100.0
            )?;
            writeln!(
                f,
                "  per CPU    {} deliveries per CPU-second; {} per published message",
                cpu.deliveries_per_cpu_second
                    .map_or_else(|| "-".into(), |rate| format!("{rate:.0}")),
                cpu.cpu_us_per_message
                    .map_or_else(|| "-".into(), |us| format!("{us:.1} µs")),
            )?;
        }
        writeln!(f, "  verdict    {}", verdict(self.complete()))
    }
}

/// A run's last line: whether every message reached every subscriber (or
/// every idle connection was held).
pub(crate) fn verdict(complete: bool) -> &'static str {
    if complete { "complete" } else { "INCOMPLETE" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(room: usize, received: u64, missing: u64) -> Outcome {
        let mut latency = Histogram::new(3).expect("histogram");
        latency.record(1_000).expect("recorded");
        Outcome {
            room,
            received,
            duplicates: 0,
            missing,
            gaps: 0,
            reconnects: 0,
            latency,
        }
    }

    fn usage(name: &str, cpu_seconds: f64) -> Usage {
        Usage {
            pid: 1,
            name: name.into(),
            user_seconds: cpu_seconds / 2.0,
            system_seconds: cpu_seconds / 2.0,
            cpu_seconds,
            resident_bytes_before: 0,
            resident_bytes_after: 0,
        }
    }

    /// Two rooms: room 0 got 30 messages and has 2 subscribers, room 1
    /// got 10 and has 1; the service and its Redis spent 1.5 + 0.5 s.
    fn run(results: Vec<Outcome>) -> Run {
        let mut published = Published::new(2);
        published.accepted = 40;
        published.accepted_by_room = vec![30, 10];
        Run {
            transport: Transport::Sse,
            url: "http://127.0.0.1:1".into(),
            room: "r".into(),
            subscribers: 3,
            subscribers_by_room: subscribers_by_room(3, 2),
            publishers: 2,
            target_rate: 0,
            size: 64,
            publishing: Duration::from_secs(4),
            elapsed: Duration::from_secs(5),
            published,
            results,
            before: Snapshot::default(),
            after: Snapshot::default(),
            cpu: Some(CpuWindow {
                processes: vec![usage("sse-svc", 1.5), usage("redis-server", 0.5)],
                seconds: 5.0,
            }),
        }
    }

    #[test]
    fn subscribers_are_spread_over_rooms_as_evenly_as_they_go() {
        assert_eq!(subscribers_by_room(3, 2), vec![2, 1]);
        assert_eq!(subscribers_by_room(3000, 1000), vec![3; 1000]);
        assert_eq!(subscribers_by_room(5, 1), vec![5]);
        assert_eq!(subscribers_by_room(0, 3), vec![0, 0, 0]);
    }

    #[test]
    fn a_complete_run_in_several_rooms_expects_each_rooms_messages_times_its_subscribers() {
        let report = Report::new(run(vec![
            outcome(0, 30, 0),
            outcome(0, 30, 0),
            outcome(1, 10, 0),
        ]));
        assert_eq!(report.rooms, 2);
        assert_eq!(report.expected_deliveries, 30 * 2 + 10);
        assert_eq!(report.delivered, 70);
        assert_eq!(report.missing, 0);
        assert!(report.complete(), "{report}");
        let cpu = report.server_cpu.as_ref().expect("measured");
        assert_eq!(cpu.cpu_seconds, 2.0);
        assert_eq!(cpu.cores, 0.4);
        assert_eq!(cpu.deliveries_per_cpu_second, Some(35.0));
        assert_eq!(cpu.cpu_us_per_message, Some(50_000.0));
        let text = report.to_string();
        assert!(text.contains("35 deliveries per CPU-second"), "{text}");
        assert!(text.contains("50000.0 µs per published message"), "{text}");
    }

    #[test]
    fn a_subscriber_that_stopped_early_misses_the_rest_of_its_own_room_only() {
        // The room-1 subscriber got 4 of its room's 10.
        let report = Report::new(run(vec![
            outcome(0, 30, 0),
            outcome(0, 30, 0),
            outcome(1, 4, 0),
        ]));
        assert_eq!(report.missing, 6);
        assert!(!report.complete());
    }

    #[test]
    fn without_cpu_time_or_messages_the_ratios_are_absent_not_infinite() {
        let idle = ServerCpu::new(
            CpuWindow {
                processes: vec![usage("floor", 0.0)],
                seconds: 1.0,
            },
            0,
            0,
        );
        assert_eq!(idle.deliveries_per_cpu_second, None);
        assert_eq!(idle.cpu_us_per_message, None);
        let mut no_pids = run(vec![outcome(0, 30, 0)]);
        no_pids.cpu = None;
        assert!(Report::new(no_pids).server_cpu.is_none());
    }
}
