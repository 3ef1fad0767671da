//! Prometheus metrics of one service instance, rendered at `/metrics`.
//!
//! Each instance has its own registry (no global state, so tests can run
//! several instances in one process); every series carries the label
//! `transport` and the prefix `chat_`.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::broker::BrokerMetrics;
use crate::hub::HubMetrics;
use crate::message::Via;

/// Buckets of the delivery latency histogram, in seconds: sub-millisecond
/// to ten seconds (a long poll that was between two requests).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// The standard `process_*` series, without the `chat_` prefix.
    process: Registry,
    /// Clients currently connected (held polls, SSE streams, WS sessions),
    /// moved by the connection caps' permits.
    pub connected: IntGauge,
    /// Messages accepted by this instance (it assigned them no id; Redis did).
    pub published: IntCounter,
    /// Messages handed to clients.
    pub delivered: IntCounter,
    /// From acceptance (the message's `ts`) to handed to a client, for live
    /// deliveries (replays of old messages would only measure their age).
    pub delivery_latency: Histogram,
    /// The broker's subscription: reconnects, rooms subscribed.
    pub broker: BrokerMetrics,
    /// Error answers by code.
    pub errors: IntCounterVec,
    pub hub: HubMetrics,
}

impl Metrics {
    pub fn new(transport: Via) -> Self {
        // Registration only fails on a duplicate or malformed name, which
        // these fixed names are not.
        let registry = Registry::new_custom(Some("chat".into()), Some(registry_labels(transport)))
            .expect("fixed metric namespace is valid");
        let register = |collector: Box<dyn prometheus::core::Collector>| {
            registry
                .register(collector)
                .expect("metric names are unique and valid");
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("valid counter");
            register(Box::new(counter.clone()));
            counter
        };
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("valid gauge");
            register(Box::new(gauge.clone()));
            gauge
        };
        let connected = gauge("connected_clients", "Clients currently connected");
        let delivery_latency = Histogram::with_opts(
            HistogramOpts::new(
                "delivery_latency_seconds",
                "Time from a message's acceptance to its hand-over to a client (live deliveries)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid histogram");
        register(Box::new(delivery_latency.clone()));
        let errors = IntCounterVec::new(
            Opts::new("http_errors_total", "Error answers by error code"),
            &["code"],
        )
        .expect("valid counter vec");
        register(Box::new(errors.clone()));
        let process = Registry::new_custom(None, Some(registry_labels(transport)))
            .expect("no namespace is valid");
        #[cfg(target_os = "linux")]
        process
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics register once per registry");
        Metrics {
            process,
            connected,
            published: counter(
                "messages_published_total",
                "Messages accepted by this instance",
            ),
            delivered: counter("messages_delivered_total", "Messages handed to clients"),
            delivery_latency,
            broker: BrokerMetrics {
                reconnects: counter(
                    "broker_reconnects_total",
                    "Times the broker subscription was lost and re-established",
                ),
                rooms_subscribed: gauge(
                    "rooms_subscribed",
                    "Rooms whose live channel this instance is subscribed to",
                ),
                subscribes: counter(
                    "room_subscribes_total",
                    "Room subscriptions made (first ones and after reconnects)",
                ),
                unsubscribes: counter(
                    "room_unsubscribes_total",
                    "Room subscriptions dropped once no client here used the room",
                ),
            },
            errors,
            hub: HubMetrics {
                slow_clients: counter(
                    "slow_clients_total",
                    "Streaming clients dropped from the fan-out for a full queue",
                ),
                slow_clients_disconnected: counter(
                    "slow_clients_disconnected_total",
                    "Slow clients that took no data at all and were disconnected",
                ),
                rooms: gauge(
                    "rooms_held",
                    "Rooms this instance holds in memory for its clients",
                ),
                memory_bytes: gauge(
                    "hub_memory_bytes",
                    "Bytes the rooms held in memory take (recent messages and bookkeeping)",
                ),
                rooms_evicted: counter(
                    "rooms_evicted_total",
                    "Unused rooms freed before their idle time to stay within HUB_MEMORY_MB",
                ),
                received: counter(
                    "messages_received_total",
                    "Live messages this instance heard from the broker (rooms it subscribes to)",
                ),
            },
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|err| {
                log::error!("cannot render metrics: {err}");
                String::new()
            })
    }

    /// Records a message handed to a client.
    pub fn record_delivery(&self, ts_millis: u64, live: bool) {
        self.delivered.inc();
        if live {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let age_ms = u64::try_from(now.as_millis())
                .unwrap_or(u64::MAX)
                .saturating_sub(ts_millis);
            self.delivery_latency.observe(age_ms as f64 / 1000.0);
        }
    }
}

fn registry_labels(transport: Via) -> HashMap<String, String> {
    HashMap::from([("transport".to_owned(), transport.as_str().to_owned())])
}
