//! The run's report, as text or JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chat_client::Transport;
use hdrhistogram::Histogram;
use serde::Serialize;

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
    pub publishers: u32,
    pub target_rate: u32,
    pub size: u32,
    pub publishing: Duration,
    pub elapsed: Duration,
    pub published: Published,
    pub results: Vec<Outcome>,
    pub before: Snapshot,
    pub after: Snapshot,
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
    /// Server CPU time over the run divided by the run's length (1.0 = one core).
    pub server_cpu_cores: Option<f64>,
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
            missing += outcome.missing
                + run
                    .published
                    .accepted
                    .saturating_sub(outcome.received + outcome.missing);
            reconnects += outcome.reconnects;
        }
        let seconds = run.elapsed.as_secs_f64().max(0.001);
        let cpu = match (run.before.cpu_seconds, run.after.cpu_seconds) {
            (Some(before), Some(after)) => Some((after - before) / seconds),
            _ => None,
        };
        Report {
            transport: run.transport,
            url: run.url,
            room: run.room,
            subscribers: run.subscribers,
            publishers: run.publishers,
            message_chars: run.size,
            target_rate: run.target_rate,
            publish_seconds: run.publishing.as_secs_f64(),
            published: run.published.accepted,
            publish_rate: run.published.accepted as f64 / run.publishing.as_secs_f64().max(0.001),
            refused: run.published.refused,
            publish_latency_ms: Latency::of(&run.published.latency),
            expected_deliveries: run.published.accepted * u64::from(run.subscribers),
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
            "{:?} subscribers on {} (room {})",
            self.transport, self.url, self.room
        )?;
        writeln!(
            f,
            "  load       {} subscribers, {} publishers, target {} msg/s of {} chars for {:.1} s",
            self.subscribers,
            self.publishers,
            self.target_rate,
            self.message_chars,
            self.publish_seconds
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
        writeln!(
            f,
            "  verdict    {}",
            if self.complete() {
                "complete"
            } else {
                "INCOMPLETE"
            }
        )
    }
}
