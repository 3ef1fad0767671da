//! The scenarios every streaming transport must pass the same way, written
//! once over a [`Connection`] of any transport and run per transport by
//! `tests/tests/streaming.rs` (long polling too where it means something:
//! a run of polls that follows its cursor is its "stream"). Each scenario
//! starts its own Redis and service.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chat_client::{Disconnect, Event, Gap, Publish, Resume, Transport};
use futures_util::future::join_all;

use crate::app::flood;
use crate::client::{Connection, Receive, client, reconnecting_after, websocket};
use crate::process::{ServiceProcess, binary};
use crate::raw::{drain, slow_socket, stream_request};
use crate::slow::{SlowClient, SlowRead};
use crate::{
    AppBuilder, Backend, RedisServer, TestApp, assert_ids_1_to, eventually, ids, raise_fd_limit,
};

const SECS: Duration = Duration::from_secs(5);

/// Messages the never-reading scenario publishes.
pub const FLOOD_MESSAGES: usize = 10_000;

/// Connect, read 5, leave, 20 are posted, come back with `resume`: exactly
/// the 20, in order, then live messages, nothing repeated.
pub async fn resume_gets_exactly_the_missed_messages(
    transport: Transport,
    backend: Backend,
    resume: fn(u64) -> Resume,
) {
    let (_redis, app) = AppBuilder::for_transport(transport).spawn_on(backend).await;
    let client = client(&app.base);
    let mut connection = Connection::open(transport, &client, "lobby", Resume::Live).await;
    let first = app.publish_many("lobby", "first", 5).await;
    assert_eq!(connection.messages(5, SECS).await, first);
    connection.close().await;

    let missed = app.publish_many("lobby", "missed", 20).await;
    app.wait_for_id("lobby", missed[19].id).await;
    let mut resumed = Connection::open(transport, &client, "lobby", resume(first[4].id)).await;

    assert_eq!(resumed.messages(20, SECS).await, missed);
    let next = app.publish("lobby", "alice", "after resume").await;
    assert_eq!(
        resumed.messages(1, SECS).await,
        [next],
        "then live, nothing repeated"
    );
}

/// A client reads a little, leaves and resumes, five times over, while a
/// poster keeps posting: it sees every id once, in order.
pub async fn resume_while_a_poster_keeps_posting_has_no_gap_and_no_duplicate(
    transport: Transport,
    backend: Backend,
) {
    let (_redis, app) = AppBuilder::for_transport(transport).spawn_on(backend).await;
    let app = Arc::new(app);
    let posting = Arc::new(AtomicBool::new(true));
    let poster = tokio::spawn(post_until_told(
        transport,
        Arc::clone(&app),
        "busy",
        Arc::clone(&posting),
    ));

    let client = client(&app.base);
    let mut received = Vec::new();
    let mut resume = Resume::After(0);
    for _ in 0..5 {
        let mut connection = Connection::open(transport, &client, "busy", resume).await;
        received.extend(connection.messages(30, Duration::from_secs(10)).await);
        let cursor = received.last().map_or(0, |m| m.id);
        resume = reconnecting_after(transport, cursor);
        connection.close().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    posting.store(false, Ordering::Relaxed);
    let last = poster.await.expect("poster");
    let mut connection = Connection::open(transport, &client, "busy", resume).await;
    let already = received.last().map_or(0, |m| m.id);
    let missing = usize::try_from(last - already).expect("small");
    received.extend(connection.messages(missing, SECS).await);

    assert_eq!(
        ids(&received),
        (1..=last).collect::<Vec<u64>>(),
        "every id once, in order"
    );
}

/// Publishes in `room` until `posting` is cleared, the way `transport`'s
/// clients do (a publish frame on a WebSocket, a POST otherwise); the last
/// id stored.
async fn post_until_told(
    transport: Transport,
    app: Arc<TestApp>,
    room: &str,
    posting: Arc<AtomicBool>,
) -> u64 {
    let mut last = 0;
    if transport == Transport::Ws {
        let mut socket = websocket(&client(&app.base), room, None).await;
        while posting.load(Ordering::Relaxed) {
            let publish = Publish::new("tick").author("poster");
            last = socket.publish(publish).await.expect("an ack").id;
            // Only the acks matter to a poster, not the room's messages.
            socket.discard_pending();
        }
    } else {
        while posting.load(Ordering::Relaxed) {
            last = app.publish(room, "poster", "tick").await.id;
        }
    }
    last
}

/// A client resuming from before what history still holds is told of the
/// gap first, then gets what is held.
pub async fn a_cursor_older_than_history_gets_a_gap_first(transport: Transport, backend: Backend) {
    let (_redis, app) = AppBuilder::for_transport(transport)
        .var("HUB_RING_LEN", 5)
        .var("HISTORY_LEN", 10)
        .spawn_on(backend)
        .await;
    app.publish_many("lobby", "m", 30).await;
    app.wait_for_id("lobby", 30).await;

    let resume = reconnecting_after(transport, 3);
    let mut connection = Connection::open(transport, &client(&app.base), "lobby", resume).await;

    assert_eq!(
        connection.receive(SECS).await,
        Event::Gap(Gap {
            after: 3,
            resume_from: 21
        })
    );
    assert_eq!(
        ids(&connection.messages(10, SECS).await),
        (21..=30).collect::<Vec<u64>>()
    );
}

/// One client never reads (a socket that has asked for a stream or
/// upgraded, and reads nothing) while 10,000 messages of 2 KB (20 MB an
/// unbounded queue would keep) are posted; another, reading everything,
/// must keep up. The fast client gets every message in order and on time,
/// the slow one is disconnected (`SLOW_CLIENT_TIMEOUT_SECS=2`), and the
/// service's memory stays bounded.
pub async fn a_client_that_never_reads_is_cut_off_without_slowing_others_or_growing_memory(
    transport: Transport,
) {
    let redis = RedisServer::start().await;
    let service = ServiceProcess::start(
        binary(transport),
        Some(&redis),
        &[("SLOW_CLIENT_TIMEOUT_SECS", "2".into())],
    )
    .await;
    let mut slow = slow_socket(
        service.port,
        &stream_request(transport, "flood", None),
        4096,
    );
    let mut fast = Connection::open(transport, &client(&service.base), "flood", Resume::Live).await;
    let fast_reader = tokio::spawn(async move {
        fast.messages(FLOOD_MESSAGES, Duration::from_secs(120))
            .await
    });
    let within = SECS;
    eventually(within, "both clients connected", || async {
        (service.metric("chat_connected_clients").await == 2.0).then_some(())
    })
    .await;
    let baseline = service.resident_bytes();
    let memory = service.sample_memory();

    let started = Instant::now();
    flood(&service.base, "flood", FLOOD_MESSAGES, 2000).await;
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
        caught_up_after < SECS,
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

/// A client that falls behind (it does not read while 2,000 messages of 4
/// KB arrive) is caught up from history: it gets all of them, in order,
/// and is never cut off.
pub async fn a_client_that_falls_behind_is_caught_up_from_history(transport: Transport) {
    let (_redis, service, read) = fall_behind(transport, 5000).await;

    assert_ids_1_to(&read.messages, 2000, "all of them, in order");
    assert!(read.gaps.is_empty(), "{:?}", read.gaps);
    assert!(
        service.metric("chat_slow_clients_total").await >= 1.0,
        "it did fall behind"
    );
    assert_eq!(
        service.metric("chat_slow_clients_disconnected_total").await,
        0.0
    );
}

/// A client that falls behind further than history reaches is ended (an
/// event stream ends, a WebSocket is closed with 1013), having got no hole;
/// reconnecting with its cursor, it is told what it missed.
pub async fn a_client_that_falls_behind_further_than_history_is_ended(transport: Transport) {
    let (_redis, service, read) = fall_behind(transport, 100).await;

    match (transport, &read.ended) {
        (Transport::Sse, Some(Disconnect::StreamEnded))
        | (Transport::Ws, Some(Disconnect::Closed { code: 1013, .. })) => {}
        (_, ended) => panic!(
            "the {transport} connection must be ended so the client reconnects with its cursor \
             (the stream ended, or closed with 1013), not {ended:?}"
        ),
    }
    let got = ids(&read.messages);
    assert!(got.len() < 2000, "it could not have been served everything");
    assert_ids_1_to(&read.messages, got.len() as u64, "what it got has no hole");
    let last = got.last().copied().unwrap_or(0);
    let resume = reconnecting_after(transport, last);
    let mut resumed = Connection::open(transport, &client(&service.base), "lag", resume).await;
    match resumed.receive(SECS).await {
        Event::Gap(gap) => {
            assert_eq!(gap.after, last);
            assert!(gap.resume_from > last + 1, "{gap:?}");
        }
        other => panic!("expected a gap, got {other:?}"),
    }
}

/// A client that does not read while 2,000 messages of 4 KB arrive (far
/// more than the socket buffers and its queue of 16 hold), then reads all it
/// is given. The service keeps `history_len` messages per room.
async fn fall_behind(
    transport: Transport,
    history_len: usize,
) -> (RedisServer, ServiceProcess, SlowRead) {
    let redis = RedisServer::start().await;
    let service = ServiceProcess::start(
        binary(transport),
        Some(&redis),
        &[
            ("CLIENT_QUEUE_LEN", "16".into()),
            ("HUB_RING_LEN", "32".into()),
            ("HISTORY_LEN", history_len.to_string()),
            ("SLOW_CLIENT_TIMEOUT_SECS", "60".into()),
            // A WebSocket client that does not read does not answer pings
            // either: no heartbeat may cut it off before it falls behind.
            ("HEARTBEAT_SECS", "60".into()),
        ],
    )
    .await;
    let lagging = SlowClient::connect(transport, service.port, "lag", 0, 4096).await;
    // The stream is open before the flood begins.
    tokio::time::sleep(Duration::from_millis(200)).await;

    flood(&service.base, "lag", 2000, 4000).await;

    let read = lagging.read(Duration::from_secs(20), 2000).await;
    (redis, service, read)
}

/// 1,000 clients on one instance each receive a burst of 100 messages, all
/// of them, in order.
pub async fn a_thousand_clients_each_receive_a_burst_of_100_in_order(transport: Transport) {
    raise_fd_limit();
    let redis = RedisServer::start().await;
    let app = AppBuilder::for_transport(transport)
        .redis(&redis)
        .spawn()
        .await;
    let client = client(&app.base);
    let mut connections = Vec::with_capacity(1000);
    for _ in 0..10 {
        let opening = (0..100).map(|_| Connection::open(transport, &client, "crowd", Resume::Live));
        connections.extend(join_all(opening).await);
    }
    eventually(
        Duration::from_secs(10),
        "1000 connected clients",
        || async { (app.metric("chat_connected_clients").await == 1000.0).then_some(()) },
    )
    .await;

    let sent = app.publish_many("crowd", "burst", 100).await;

    let readers = connections.into_iter().map(|mut connection| {
        tokio::spawn(async move { connection.messages(100, Duration::from_secs(60)).await })
    });
    for (index, received) in join_all(readers).await.into_iter().enumerate() {
        assert_eq!(received.expect("reader"), sent, "client {index}");
    }
}

/// Redis restarted (empty) while a client is connected: the client stays
/// connected and gets every message published after, ids without a gap.
pub async fn redis_restarted_mid_stream_clients_keep_going_without_a_gap(transport: Transport) {
    let mut redis = RedisServer::start().await;
    let app = AppBuilder::for_transport(transport)
        .redis(&redis)
        .spawn()
        .await;
    let mut connection =
        Connection::open(transport, &client(&app.base), "lobby", Resume::Live).await;
    let before = app.publish_many("lobby", "before", 3).await;
    assert_eq!(connection.messages(3, SECS).await, before);

    redis.restart().await;

    app.wait_ready().await;
    let mut after = vec![app.publish_when_possible("lobby", "after-1").await];
    after.extend(app.publish_many("lobby", "after", 4).await);
    assert_eq!(
        connection.messages(5, SECS).await,
        after,
        "the client stayed connected and got all"
    );
    assert_eq!(
        ids(&after),
        (4..=8).collect::<Vec<u64>>(),
        "ids continue without a gap"
    );
    if let Connection::Ws(socket) = &mut connection {
        socket.ping().await.expect("the session still answers");
    }
}
