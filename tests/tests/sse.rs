//! sse-svc against a real Redis (and, where the test is about the transport
//! rather than Redis, also against the in-process broker): what is SSE's
//! own. The scenarios every streaming transport must pass are in
//! streaming.rs.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chat_client::{Disconnect, Event, Gap, Resume, Transport};
use chat_tests::client::{Receive, client, events};
use chat_tests::process::ServiceProcess;
use chat_tests::scenario::resume_gets_exactly_the_missed_messages;
use chat_tests::slow::SlowEventStream;
use chat_tests::{
    AppBuilder, Backend, RedisServer, TestApp, assert_ids_1_to, broker_tests, eventually, ids,
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

const SECS: Duration = Duration::from_secs(5);

broker_tests!(
    a_stream_has_the_exact_headers_and_starts_with_retry,
    messages_published_after_connecting_are_streamed_live,
    resume_with_last_event_id_gets_exactly_the_missed_messages,
    resume_with_last_event_id_param_gets_exactly_the_missed_messages,
    the_last_event_id_header_wins_over_the_query,
    a_heartbeat_arrives_within_heartbeat_secs_plus_one,
    text_with_newlines_quotes_emoji_and_script_survives,
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
    let mut stream = events(&client(&app.base), "lobby", Resume::Live).await;

    let sent = app.publish_many("lobby", "live", 3).await;

    assert_eq!(stream.messages(3, SECS).await, sent);
    assert_eq!(stream.last_event_id(), Some(sent[2].id));
}

// Resuming with `?after=` is a scenario of every transport (streaming.rs).

async fn resume_with_last_event_id_gets_exactly_the_missed_messages(backend: Backend) {
    resume_gets_exactly_the_missed_messages(Transport::Sse, backend, Resume::Header).await;
}

async fn resume_with_last_event_id_param_gets_exactly_the_missed_messages(backend: Backend) {
    resume_gets_exactly_the_missed_messages(Transport::Sse, backend, Resume::LastEventIdParam)
        .await;
}

async fn the_last_event_id_header_wins_over_the_query(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let sent = app.publish_many("lobby", "m", 6).await;
    app.wait_for_id("lobby", 6).await;
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
    let mut stream = events(&client(&app.base), "lobby", Resume::Live).await;
    let tricky = "line one\nline two\r\n\"quoted\" 'single' \\ back\n\ndata: fake\nid: 99\n🙂 <script>alert(1)</script>";

    let sent = app.publish("lobby", "Zoë \"the\" <b>", tricky).await;

    let received = stream.messages(1, SECS).await;
    assert_eq!(received[0].message, tricky);
    assert_eq!(received[0].author, "Zoë \"the\" <b>");
    assert_eq!(received, [sent]);
    assert_eq!(
        stream.last_event_id(),
        Some(received[0].id),
        "the text cannot inject an id"
    );
}

async fn a_cursor_ahead_of_the_room_gets_a_gap_event(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let sent = app.publish_many("lobby", "m", 2).await;
    app.wait_for_id("lobby", 2).await;

    let mut stream = events(&client(&app.base), "lobby", Resume::Header(500)).await;

    assert_eq!(
        stream.receive(SECS).await,
        Event::Gap(Gap {
            after: 500,
            resume_from: 1
        })
    );
    assert_eq!(
        stream.last_event_id(),
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
    let client = client(&app.base);
    let streams =
        futures_util::future::join_all((0..3).map(|_| events(&client, "lobby", Resume::Live)))
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
    let mut stream = events(&client(&app.base), "lobby", Resume::Live).await;
    eventually(SECS, "the stream to be open", || async {
        (app.metric("chat_connected_clients").await == 1.0).then_some(())
    })
    .await;

    let token = app.shutdown_token();
    token.cancel();

    let (messages, ended) = stream.until_end(SECS).await;
    assert!(
        messages.is_empty() && ended == Disconnect::StreamEnded,
        "the stream ends, so the browser reconnects elsewhere: {messages:?}, {ended:?}"
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
    let mut stream = events(&client(&two.base), "lobby", Resume::Live).await;

    let sent = one.publish("lobby", "alice", "across instances").await;

    assert_eq!(stream.messages(1, SECS).await, [sent]);
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
    let sent = app.publish_many("lobby", "m", 40).await;
    app.wait_for_id("lobby", 40).await;
    let client = client(&app.base);
    let mut all = BTreeSet::new();
    for from in [0_u64, 10, 25, 39] {
        let mut stream = events(&client, "lobby", Resume::After(from)).await;
        let got = stream
            .messages(usize::try_from(40 - from).expect("small"), SECS)
            .await;
        assert_eq!(got, sent[usize::try_from(from).expect("small")..]);
        all.extend(ids(&got));
    }
    assert_eq!(all.len(), 40);
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
    let reader = SlowEventStream::connect(service.port, "steady", 0, 4096);
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
    assert_eq!(read.ended, None, "a client that reads is not cut off");
    // Whether it fell behind depends on how fast this machine floods; the
    // mechanism itself is tested deterministically in common's hub tests
    // (`a_lagging_client_is_cut_only_once_it_stops_making_progress`).
    assert_eq!(
        service.metric("chat_slow_clients_disconnected_total").await,
        0.0
    );
}
