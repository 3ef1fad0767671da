//! Scenarios every streaming transport must pass the same way.

use std::future::Future;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Message;

use crate::process::ServiceProcess;
use crate::raw::drain;
use crate::{app, eventually, ids};

/// Messages the never-reading scenario publishes.
pub const FLOOD_MESSAGES: usize = 10_000;

/// One client never reads (`slow`, a socket that has asked for a stream or
/// upgraded) while 10,000 messages of 2 KB (20 MB an unbounded queue would
/// keep) are posted to `room`; another (`fast`, reading everything) must
/// keep up. Asserts that the fast client gets every message in order and on
/// time, that the slow one is disconnected, and that the service's memory
/// stays bounded. `service` runs with `SLOW_CLIENT_TIMEOUT_SECS=2`.
pub async fn a_client_that_never_reads(
    service: &ServiceProcess,
    room: &str,
    mut slow: TcpStream,
    fast: impl Future<Output = Vec<Message>> + Send + 'static,
) {
    let fast_reader = tokio::spawn(fast);
    let within = Duration::from_secs(5);
    eventually(within, "both clients connected", || async {
        (service.metric("chat_connected_clients").await == 2.0).then_some(())
    })
    .await;
    let baseline = service.resident_bytes();
    let memory = service.sample_memory();

    let started = Instant::now();
    app::flood(&service.base, room, FLOOD_MESSAGES, 2000).await;
    let posted_in = started.elapsed();

    let received = tokio::time::timeout(Duration::from_secs(30), fast_reader)
        .await
        .expect("the fast client keeps up")
        .expect("reader");
    let peak = memory.peak();
    let caught_up_after = started.elapsed() - posted_in;
    let expected: Vec<u64> = (1..=FLOOD_MESSAGES as u64).collect();
    assert!(
        ids(&received) == expected,
        "the fast client got {} messages, not 1..=10000 in order",
        received.len()
    );
    assert!(
        caught_up_after < Duration::from_secs(5),
        "the fast client lagged {caught_up_after:?}"
    );

    // The slow client was cut off: reading now drains what the kernel had
    // buffered, then hits the end, well short of 20 MB.
    let (drained, closed) =
        tokio::task::spawn_blocking(move || drain(&mut slow, Duration::from_secs(30)))
            .await
            .expect("reader");
    assert!(closed, "the server closed the slow client's connection");
    assert!(
        drained < 8 * 1024 * 1024,
        "the slow client got {drained} bytes"
    );
    assert_eq!(
        service.metric("chat_slow_clients_disconnected_total").await,
        1.0
    );
    eventually(within, "both clients gone from the gauge", || async {
        (service.metric("chat_connected_clients").await == 0.0).then_some(())
    })
    .await;

    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "{}: posted {FLOOD_MESSAGES} in {posted_in:?}; the fast client caught up {caught_up_after:?} \
         later; RSS {} MB -> peak {} MB (+{} MB); the slow client drained {} KB",
        service.name,
        baseline >> 20,
        peak >> 20,
        growth >> 20,
        drained >> 10
    );
    assert!(
        growth < 16 * 1024 * 1024,
        "memory grew by {} MB",
        growth >> 20
    );
}
