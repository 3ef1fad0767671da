//! sse-svc against a real Redis (and, where the test is about the transport
//! rather than Redis, also against the in-process broker).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chat_tests::process::ServiceProcess;
use chat_tests::scenario::FLOOD_MESSAGES;
use chat_tests::sse::{RawSseClient, Resume, SseEvent, SseStream};
use chat_tests::{
    AppBuilder, Backend, RedisServer, TestApp, broker_tests, eventually, ids, raise_fd_limit,
};
use common::Message;
use futures_util::StreamExt;

/// A sse-svc on `backend` (the Redis, if any, must outlive it).
async fn start(
    backend: Backend,
    configure: impl FnOnce(AppBuilder) -> AppBuilder,
) -> (Option<RedisServer>, TestApp) {
    configure(AppBuilder::new(sse_svc::service()))
        .spawn_on(backend)
        .await
}

/// Asserts `messages` are exactly ids `1..=count`, in order, without
/// printing thousands of ids when they are not.
fn assert_ids_1_to(messages: &[Message], count: u64, what: &str) {
    let got = ids(messages);
    let first_wrong = got.iter().zip(1..).find(|(id, expected)| **id != *expected);
    assert!(
        got.len() as u64 == count && first_wrong.is_none(),
        "{what}: got {} messages (first {:?}, last {:?}), first out of place: {first_wrong:?}",
        got.len(),
        got.first(),
        got.last()
    );
}

const SECS: Duration = Duration::from_secs(5);

/// Publishes `count` messages named `prefix-1..` and returns them.
async fn publish_many(app: &TestApp, room: &str, prefix: &str, count: usize) -> Vec<Message> {
    let mut sent = Vec::with_capacity(count);
    for n in 1..=count {
        sent.push(app.publish(room, "alice", &format!("{prefix}-{n}")).await);
    }
    sent
}

/// Waits until the instance has appended `id` (so a following read sees it).
async fn wait_for_id(app: &TestApp, room: &str, id: u64) {
    eventually(SECS, &format!("id {id} to reach the instance"), || async {
        let history = app.history(room, "limit=1").await;
        history.last().is_some_and(|m| m.id >= id).then_some(())
    })
    .await;
}

broker_tests!(
    a_stream_has_the_exact_headers_and_starts_with_retry,
    messages_published_after_connecting_are_streamed_live,
    resume_with_last_event_id_gets_exactly_the_missed_messages,
    resume_with_after_gets_exactly_the_missed_messages,
    resume_with_last_event_id_param_gets_exactly_the_missed_messages,
    the_last_event_id_header_wins_over_the_query,
    resume_while_a_poster_keeps_posting_has_no_gap_and_no_duplicate,
    a_heartbeat_arrives_within_heartbeat_secs_plus_one,
    text_with_newlines_quotes_emoji_and_script_survives,
    a_cursor_older_than_history_gets_a_gap_event_first,
    a_cursor_ahead_of_the_room_gets_a_gap_event,
    a_bad_cursor_gets_400,
    a_disconnected_client_is_freed_within_one_heartbeat,
    shutdown_ends_streams_cleanly,
);

async fn a_stream_has_the_exact_headers_and_starts_with_retry(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let response = chat_tests::app::http_client()
        .get(app.url("/rooms/lobby/events"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache, no-transform");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(
        !headers.contains_key("content-encoding"),
        "never compressed"
    );
    assert!(
        !headers.contains_key("content-length"),
        "streamed, not buffered"
    );
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(SECS, body.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("ok");
    assert_eq!(&first[..], b"retry: 3000\n\n");
}

async fn messages_published_after_connecting_are_streamed_live(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    app.publish("lobby", "alice", "before").await;
    let mut stream = SseStream::connect(&app.base, "lobby", Resume::Live).await;

    let sent = publish_many(&app, "lobby", "live", 3).await;

    assert_eq!(stream.messages(3, SECS).await, sent);
    assert_eq!(stream.last_event_id, Some(sent[2].id));
}

/// Connect, read 5, drop, post 20, reconnect with `resume`: exactly the 20.
async fn resume_gets_exactly_the_missed_messages(backend: Backend, resume: fn(u64) -> Resume) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut stream = SseStream::connect(&app.base, "lobby", Resume::Live).await;
    let first = publish_many(&app, "lobby", "first", 5).await;
    assert_eq!(stream.messages(5, SECS).await, first);
    let last_seen = stream.last_event_id.expect("ids on events");
    drop(stream);

    let missed = publish_many(&app, "lobby", "missed", 20).await;
    wait_for_id(&app, "lobby", missed[19].id).await;
    let mut resumed = SseStream::connect(&app.base, "lobby", resume(last_seen)).await;

    assert_eq!(resumed.messages(20, SECS).await, missed);
    let next = app.publish("lobby", "alice", "after resume").await;
    assert_eq!(
        resumed.messages(1, SECS).await,
        [next],
        "then live, nothing repeated"
    );
}

async fn resume_with_last_event_id_gets_exactly_the_missed_messages(backend: Backend) {
    resume_gets_exactly_the_missed_messages(backend, Resume::Header).await;
}

async fn resume_with_after_gets_exactly_the_missed_messages(backend: Backend) {
    resume_gets_exactly_the_missed_messages(backend, Resume::After).await;
}

async fn resume_with_last_event_id_param_gets_exactly_the_missed_messages(backend: Backend) {
    resume_gets_exactly_the_missed_messages(backend, Resume::LastEventIdParam).await;
}

async fn the_last_event_id_header_wins_over_the_query(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let sent = publish_many(&app, "lobby", "m", 6).await;
    wait_for_id(&app, "lobby", 6).await;
    let response = chat_tests::app::http_client()
        .get(app.url("/rooms/lobby/events?after=1&last_event_id=2"))
        .header("last-event-id", "4")
        .send()
        .await
        .expect("sent");
    let body = response.bytes_stream();
    let mut events = eventsource_stream::Eventsource::eventsource(body);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(SECS, events.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("ok");
        if event.event == "message" {
            seen.push(serde_json::from_str::<Message>(&event.data).expect("message"));
        }
    }
    assert_eq!(seen, sent[4..6]);
}

async fn resume_while_a_poster_keeps_posting_has_no_gap_and_no_duplicate(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let app = Arc::new(app);
    let posting = Arc::new(AtomicBool::new(true));
    let poster = {
        let (app, posting) = (Arc::clone(&app), Arc::clone(&posting));
        tokio::spawn(async move {
            let mut last = 0;
            while posting.load(Ordering::Relaxed) {
                last = app.publish("busy", "poster", "tick").await.id;
            }
            last
        })
    };

    // A client that reads a little, drops, and resumes, five times over.
    let mut received: Vec<Message> = Vec::new();
    let mut resume = Resume::After(0);
    for _ in 0..5 {
        let mut stream = SseStream::connect(&app.base, "busy", resume).await;
        received.extend(stream.messages(30, Duration::from_secs(10)).await);
        resume = Resume::Header(stream.last_event_id.expect("ids on events"));
        drop(stream);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    posting.store(false, Ordering::Relaxed);
    let last = poster.await.expect("poster");
    let mut stream = SseStream::connect(&app.base, "busy", resume).await;
    let already = received.last().map_or(0, |m| m.id);
    received.extend(
        stream
            .messages(usize::try_from(last - already).expect("small"), SECS)
            .await,
    );

    assert_eq!(
        ids(&received),
        (1..=last).collect::<Vec<u64>>(),
        "every id once, in order"
    );
}

async fn a_heartbeat_arrives_within_heartbeat_secs_plus_one(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("HEARTBEAT_SECS", 1)).await;
    let response = chat_tests::app::http_client()
        .get(app.url("/rooms/quiet/events"))
        .send()
        .await
        .expect("sent");
    let mut body = response.bytes_stream();
    let started = Instant::now();
    let mut seen = String::new();
    let mut heartbeats = Vec::new();
    while heartbeats.len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(2), body.next())
            .await
            .expect("a heartbeat within HEARTBEAT_SECS + 1 s")
            .expect("stream open")
            .expect("chunk");
        seen.push_str(std::str::from_utf8(&chunk).expect("text"));
        while let Some(at) = seen.find(": keepalive\n") {
            heartbeats.push(started.elapsed());
            seen.drain(..at + ": keepalive\n".len());
        }
    }
    assert!(heartbeats[0] < Duration::from_secs(2), "{heartbeats:?}");
    assert!(
        heartbeats[1] - heartbeats[0] < Duration::from_secs(2),
        "{heartbeats:?}"
    );
}

async fn text_with_newlines_quotes_emoji_and_script_survives(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut stream = SseStream::connect(&app.base, "lobby", Resume::Live).await;
    let tricky = "line one\nline two\r\n\"quoted\" 'single' \\ back\n\ndata: fake\nid: 99\n🙂 <script>alert(1)</script>";

    let sent = app.publish("lobby", "Zoë \"the\" <b>", tricky).await;

    let received = stream.messages(1, SECS).await;
    assert_eq!(received[0].message, tricky);
    assert_eq!(received[0].author, "Zoë \"the\" <b>");
    assert_eq!(received, [sent]);
    assert_eq!(
        stream.last_event_id,
        Some(received[0].id),
        "the text cannot inject an id"
    );
}

async fn a_cursor_older_than_history_gets_a_gap_event_first(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("HUB_RING_LEN", 5).var("HISTORY_LEN", 10)).await;
    publish_many(&app, "lobby", "m", 30).await;
    wait_for_id(&app, "lobby", 30).await;

    let mut stream = SseStream::connect(&app.base, "lobby", Resume::Header(3)).await;

    assert_eq!(
        stream.next(SECS).await,
        Some(SseEvent::Gap {
            after: 3,
            resume_from: 21
        })
    );
    assert_eq!(
        ids(&stream.messages(10, SECS).await),
        (21..=30).collect::<Vec<u64>>()
    );
}

async fn a_cursor_ahead_of_the_room_gets_a_gap_event(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let sent = publish_many(&app, "lobby", "m", 2).await;
    wait_for_id(&app, "lobby", 2).await;

    let mut stream = SseStream::connect(&app.base, "lobby", Resume::Header(500)).await;

    assert_eq!(
        stream.next(SECS).await,
        Some(SseEvent::Gap {
            after: 500,
            resume_from: 1
        })
    );
    assert_eq!(
        stream.last_event_id,
        Some(0),
        "the browser's cursor moves back to before the room's oldest message"
    );
    assert_eq!(stream.messages(2, SECS).await, sent);
    let next = app.publish("lobby", "alice", "three").await;
    assert_eq!(stream.messages(1, SECS).await, [next]);
}

async fn a_bad_cursor_gets_400(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let client = chat_tests::app::http_client();
    let bad_header = client
        .get(app.url("/rooms/lobby/events"))
        .header("last-event-id", "abc")
        .send()
        .await;
    assert_eq!(bad_header.expect("sent").status(), 400);
    let bad_query = client
        .get(app.url("/rooms/lobby/events?after=-3"))
        .send()
        .await
        .expect("sent");
    assert_eq!(bad_query.status(), 400);
    let body: serde_json::Value = bad_query.json().await.expect("JSON");
    assert_eq!(body["error"], "invalid_query");
    let bad_room = client
        .get(app.url("/rooms/no%20pe/events"))
        .send()
        .await
        .expect("sent");
    assert_eq!(bad_room.status(), 404);
}

async fn a_disconnected_client_is_freed_within_one_heartbeat(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("HEARTBEAT_SECS", 1)).await;
    let streams: Vec<SseStream> = futures_util::future::join_all(
        (0..3).map(|_| SseStream::connect(&app.base, "lobby", Resume::Live)),
    )
    .await;
    eventually(SECS, "3 connected clients", || async {
        (app.metric("chat_connected_clients").await == 3.0).then_some(())
    })
    .await;

    drop(streams);

    eventually(
        Duration::from_millis(1500),
        "the gauge back to 0 within a heartbeat",
        || async { (app.metric("chat_connected_clients").await == 0.0).then_some(()) },
    )
    .await;
}

async fn shutdown_ends_streams_cleanly(backend: Backend) {
    let (_redis, mut app) = start(backend, |b| b).await;
    let mut stream = SseStream::connect(&app.base, "lobby", Resume::Live).await;
    eventually(SECS, "the stream to be open", || async {
        (app.metric("chat_connected_clients").await == 1.0).then_some(())
    })
    .await;

    let token = app.shutdown_token();
    token.cancel();

    assert_eq!(
        stream.next(SECS).await,
        None,
        "the stream ends, so the browser reconnects elsewhere"
    );
    app.shut_down().await;
}

// --- Redis only -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_stream_for_an_unknown_room_asks_the_browser_to_come_back() {
    let mut redis = RedisServer::start().await;
    let app = AppBuilder::new(sse_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    redis.kill();

    let response = chat_tests::app::http_client()
        .get(app.url("/rooms/never-seen/events"))
        .send()
        .await
        .expect("sent");

    // Not a 503: that would make a browser's EventSource give up for good.
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = tokio::time::timeout(SECS, response.bytes())
        .await
        .expect("it ends")
        .expect("body");
    assert_eq!(&body[..], b"retry: 3000\n\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_posted_on_one_instance_is_streamed_on_another() {
    let redis = RedisServer::start().await;
    let one = AppBuilder::new(sse_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    let two = AppBuilder::new(sse_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    let mut stream = SseStream::connect(&two.base, "lobby", Resume::Live).await;

    let sent = one.publish("lobby", "alice", "across instances").await;

    assert_eq!(stream.messages(1, SECS).await, [sent]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_stream_streams_keep_going_without_a_gap() {
    let mut redis = RedisServer::start().await;
    let app = AppBuilder::new(sse_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    let mut stream = SseStream::connect(&app.base, "lobby", Resume::Live).await;
    let before = publish_many(&app, "lobby", "before", 3).await;
    assert_eq!(stream.messages(3, SECS).await, before);

    redis.restart().await;

    app.wait_ready().await;
    let after = app.publish_when_possible("lobby", "after-1").await;
    let mut sent_after = vec![after];
    sent_after.extend(publish_many(&app, "lobby", "after", 4).await);
    assert_eq!(
        stream.messages(5, SECS).await,
        sent_after,
        "the stream stayed open and got all"
    );
    assert_eq!(
        ids(&sent_after),
        (4..=8).collect::<Vec<u64>>(),
        "ids continue without a gap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_each_get_a_burst_of_100_in_order() {
    raise_fd_limit();
    let redis = RedisServer::start().await;
    let app = AppBuilder::new(sse_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    let client = chat_tests::app::http_client();
    let mut streams = Vec::with_capacity(1000);
    for chunk in 0..10 {
        let opened = futures_util::future::join_all(
            (0..100).map(|_| SseStream::open(&client, &app.base, "crowd", Resume::Live)),
        )
        .await;
        assert!(opened.iter().all(|s| s.status == 200), "chunk {chunk}");
        streams.extend(opened);
    }
    eventually(
        Duration::from_secs(10),
        "1000 connected streams",
        || async { (app.metric("chat_connected_clients").await == 1000.0).then_some(()) },
    )
    .await;

    let sent = publish_many(&app, "crowd", "burst", 100).await;

    let readers = streams.into_iter().map(|mut stream| {
        tokio::spawn(async move { stream.messages(100, Duration::from_secs(60)).await })
    });
    let results = futures_util::future::join_all(readers).await;
    for (index, received) in results.into_iter().enumerate() {
        assert_eq!(received.expect("reader"), sent, "stream {index}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_ended_without_slowing_others_or_growing_memory() {
    let redis = RedisServer::start().await;
    let service = ServiceProcess::start(
        "sse-svc",
        Some(&redis),
        &[("SLOW_CLIENT_TIMEOUT_SECS", "2".into())],
    )
    .await;
    let request = "GET /rooms/flood/events HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let slow = chat_tests::raw::slow_socket(service.port, request, 4096);
    let mut fast = SseStream::connect(&service.base, "flood", Resume::Live).await;
    let fast_reads = async move {
        fast.messages(FLOOD_MESSAGES, Duration::from_secs(120))
            .await
    };

    chat_tests::scenario::a_client_that_never_reads(&service, "flood", slow, fast_reads).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_seen_by_many_resuming_clients_form_one_sequence() {
    // A smaller, faster cousin of the cross-transport matrix: several
    // clients each resuming at different points see the same sequence.
    let redis = RedisServer::start().await;
    let app = AppBuilder::new(sse_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    let sent = publish_many(&app, "lobby", "m", 40).await;
    wait_for_id(&app, "lobby", 40).await;
    let mut all = BTreeSet::new();
    for from in [0_u64, 10, 25, 39] {
        let mut stream = SseStream::connect(&app.base, "lobby", Resume::After(from)).await;
        let got = stream
            .messages(usize::try_from(40 - from).expect("small"), SECS)
            .await;
        assert_eq!(got, sent[usize::try_from(from).expect("small")..]);
        all.extend(ids(&got));
    }
    assert_eq!(all.len(), 40);
}

/// A client that does not read while 2,000 messages of 4 KB arrive (far
/// more than the socket buffers and its queue of 16 hold), then reads all it
/// is given. The service keeps `history_len` messages per room.
async fn fall_behind(
    history_len: usize,
) -> (RedisServer, ServiceProcess, chat_tests::sse::RawSseRead) {
    let redis = RedisServer::start().await;
    let service = ServiceProcess::start(
        "sse-svc",
        Some(&redis),
        &[
            ("CLIENT_QUEUE_LEN", "16".into()),
            ("HUB_RING_LEN", "32".into()),
            ("HISTORY_LEN", history_len.to_string()),
            ("SLOW_CLIENT_TIMEOUT_SECS", "60".into()),
        ],
    )
    .await;
    let lagging = RawSseClient::connect(service.port, "/rooms/lag/events?after=0", 4096);
    tokio::time::sleep(Duration::from_millis(200)).await;

    chat_tests::app::flood(&service.base, "lag", 2000, 4000).await;

    let read = tokio::task::spawn_blocking(move || lagging.read_for(Duration::from_secs(20), 2000))
        .await
        .expect("reader");
    (redis, service, read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_slowly_but_steadily_is_never_cut_off() {
    let redis = RedisServer::start().await;
    let service = ServiceProcess::start(
        "sse-svc",
        Some(&redis),
        &[
            ("CLIENT_QUEUE_LEN", "256".into()),
            ("HISTORY_LEN", "5000".into()),
            ("SLOW_CLIENT_TIMEOUT_SECS", "1".into()),
        ],
    )
    .await;
    let reader = RawSseClient::connect(service.port, "/rooms/steady/events?after=0", 4096);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 1,200 messages of 4 KB (more than the socket buffers hold) arrive
    // faster than the client reads (4 KB every 5 ms): it falls behind, and
    // draining its full queue of 256 takes longer than the slow-client
    // timeout. It keeps reading, so it must not be cut off.
    let flooding = tokio::spawn({
        let base = service.base.clone();
        async move { chat_tests::app::flood(&base, "steady", 1200, 4000).await }
    });
    let read = tokio::task::spawn_blocking(move || {
        reader.read_paced(
            Duration::from_secs(60),
            1200,
            4096,
            Duration::from_millis(5),
        )
    })
    .await
    .expect("reader");
    flooding.await.expect("flood");

    assert_ids_1_to(&read.messages, 1200, "all of them, in order");
    assert!(!read.closed, "a client that reads is not cut off");
    // Whether it fell behind depends on how fast this machine floods; the
    // mechanism itself is tested deterministically in common's hub tests
    // (`a_lagging_client_is_cut_only_once_it_stops_making_progress`).
    assert_eq!(
        service.metric("chat_slow_clients_disconnected_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_is_caught_up_from_history() {
    let (_redis, service, read) = fall_behind(5000).await;

    assert_ids_1_to(&read.messages, 2000, "all of them, in order");
    assert!(read.gaps.is_empty());
    assert!(
        service.metric("chat_slow_clients_total").await >= 1.0,
        "it did fall behind"
    );
    assert_eq!(
        service.metric("chat_slow_clients_disconnected_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_further_than_history_is_ended() {
    let (_redis, service, read) = fall_behind(100).await;

    assert!(
        read.ended_cleanly,
        "the stream was ended (the client reconnects with its cursor)"
    );
    let got = ids(&read.messages);
    assert!(got.len() < 2000, "it could not have been served everything");
    assert_ids_1_to(&read.messages, got.len() as u64, "what it got has no hole");
    // Reconnecting with its cursor, it is told what it missed.
    let last = got.last().copied().unwrap_or(0);
    let mut resumed = SseStream::connect(&service.base, "lag", Resume::Header(last)).await;
    match resumed.next(SECS).await {
        Some(SseEvent::Gap { after, resume_from }) => {
            assert_eq!(after, last);
            assert!(resume_from > last + 1);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
}
