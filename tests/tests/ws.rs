//! ws-svc with a real WebSocket client (tokio-tungstenite), against a real
//! Redis (and, where the test is about the transport rather than Redis,
//! also against the in-process broker).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_tests::process::ServiceProcess;
use chat_tests::raw::{slow_socket, websocket_upgrade};
use chat_tests::scenario::FLOOD_MESSAGES;
use chat_tests::ws::{Ended, WsClient, ws_url};
use chat_tests::{
    AppBuilder, Backend, RedisServer, TestApp, broker_tests, eventually, ids, raise_fd_limit,
};
use common::{Message, Via};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as RawFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const SECS: Duration = Duration::from_secs(5);

/// A ws-svc on `backend` (the Redis, if any, must outlive it).
async fn start(
    backend: Backend,
    configure: impl FnOnce(AppBuilder) -> AppBuilder,
) -> (Option<RedisServer>, TestApp) {
    configure(AppBuilder::new(ws_svc::service()))
        .spawn_on(backend)
        .await
}

/// A data frame built by hand: fragments, or bytes a client library would
/// refuse to send as text.
fn raw_frame(payload: &[u8], opcode: Data, is_final: bool) -> Frame {
    Frame::Frame(RawFrame::message(
        payload.to_vec(),
        OpCode::Data(opcode),
        is_final,
    ))
}

async fn publish_over_http(app: &TestApp, room: &str, count: usize) -> Vec<Message> {
    let mut sent = Vec::with_capacity(count);
    for n in 1..=count {
        sent.push(app.publish(room, "alice", &format!("m{n}")).await);
    }
    sent
}

broker_tests!(
    a_publish_gets_an_ack_whose_id_is_the_broadcast_id,
    messages_published_over_http_reach_ws_clients_as_via_ws,
    resume_with_after_gets_exactly_the_missed_messages,
    resume_with_after_while_another_client_keeps_publishing_has_no_gap_or_duplicate,
    a_cursor_older_than_history_gets_a_gap_frame_first,
    malformed_json_gets_an_error_frame_and_the_connection_stays_open,
    an_unknown_type_gets_an_error_frame_with_its_ref,
    an_empty_text_frame_gets_an_error_frame,
    an_invalid_message_gets_an_error_frame_with_its_ref,
    an_application_ping_gets_a_pong,
    publishing_too_fast_gets_a_rate_limited_error_frame,
    a_binary_frame_closes_with_1003,
    invalid_utf8_closes_with_1007,
    a_frame_over_the_size_limit_closes_with_1009,
    fragmented_messages_are_reassembled_within_the_limit,
    fragments_over_the_size_limit_close_with_1009,
    a_client_that_stops_answering_pings_is_dropped,
    shutdown_closes_with_1012,
    a_foreign_origin_is_refused_with_403,
    a_plain_request_gets_426_and_a_broken_handshake_400,
    a_disconnected_client_is_freed,
);

async fn a_publish_gets_an_ack_whose_id_is_the_broadcast_id(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut listener = WsClient::connect(&app.base, "lobby", None).await;
    let mut publisher = WsClient::connect(&app.base, "lobby", None).await;

    let acked = publisher.publish("c1", "alice", "hello").await;

    let [heard] = <[Message; 1]>::try_from(listener.messages(1, SECS).await).expect("one");
    assert_eq!(heard.id, acked);
    assert_eq!(
        (heard.author.as_str(), heard.message.as_str(), heard.via),
        ("alice", "hello", Via::Ws)
    );
    assert_eq!(
        publisher.messages(1, SECS).await,
        [heard],
        "the publisher hears its own message too"
    );
}

async fn messages_published_over_http_reach_ws_clients_as_via_ws(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;

    let sent = publish_over_http(&app, "lobby", 3).await;

    assert_eq!(client.messages(3, SECS).await, sent);
    assert!(
        sent.iter().all(|m| m.via == Via::Ws),
        "a POST to ws-svc is via ws"
    );
}

async fn resume_with_after_gets_exactly_the_missed_messages(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    let first = publish_over_http(&app, "lobby", 5).await;
    assert_eq!(client.messages(5, SECS).await, first);
    let cursor = client.last_id.expect("a cursor");
    client.close().await;

    let missed = publish_over_http(&app, "lobby", 20).await;
    let mut resumed = WsClient::connect(&app.base, "lobby", Some(cursor)).await;

    assert_eq!(resumed.messages(20, SECS).await, missed);
    let next = app.publish("lobby", "bob", "live").await;
    assert_eq!(
        resumed.messages(1, SECS).await,
        [next],
        "then live, nothing repeated"
    );
}

async fn resume_with_after_while_another_client_keeps_publishing_has_no_gap_or_duplicate(
    backend: Backend,
) {
    let (_redis, app) = start(backend, |b| b).await;
    let publishing = Arc::new(AtomicBool::new(true));
    let last_acked = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (base, publishing, last_acked) = (
            app.base.clone(),
            Arc::clone(&publishing),
            Arc::clone(&last_acked),
        );
        tokio::spawn(async move {
            let mut client = WsClient::connect(&base, "busy", None).await;
            let mut n = 0;
            while publishing.load(Ordering::Relaxed) {
                n += 1;
                last_acked.store(
                    client.publish(&format!("p{n}"), "poster", "tick").await,
                    Ordering::Relaxed,
                );
            }
        })
    };

    let mut received: Vec<Message> = Vec::new();
    let mut after = Some(0);
    for _ in 0..5 {
        let mut client = WsClient::connect(&app.base, "busy", after).await;
        received.extend(client.messages(30, Duration::from_secs(10)).await);
        after = client.last_id;
        client.close().await;
    }
    publishing.store(false, Ordering::Relaxed);
    publisher.await.expect("publisher");
    let last = last_acked.load(Ordering::Relaxed);
    let mut client = WsClient::connect(&app.base, "busy", after).await;
    let already = received.last().map_or(0, |m| m.id);
    received.extend(
        client
            .messages(usize::try_from(last - already).expect("small"), SECS)
            .await,
    );

    assert_eq!(
        ids(&received),
        (1..=last).collect::<Vec<u64>>(),
        "every id once, in order"
    );
}

async fn a_cursor_older_than_history_gets_a_gap_frame_first(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("HUB_RING_LEN", 5).var("HISTORY_LEN", 10)).await;
    publish_over_http(&app, "lobby", 30).await;
    eventually(SECS, "the instance to hold id 30", || async {
        app.history("lobby", "limit=1")
            .await
            .last()
            .is_some_and(|m| m.id == 30)
            .then_some(())
    })
    .await;

    let mut client = WsClient::connect(&app.base, "lobby", Some(3)).await;

    assert_eq!(
        client.reply(SECS).await,
        json!({"type": "gap", "after": 3, "resume_from": 21})
    );
    assert_eq!(
        ids(&client.messages(10, SECS).await),
        (21..=30).collect::<Vec<u64>>()
    );
}

/// Sends `frame` and expects an error frame with `code` (and `reference`),
/// then checks the connection still works.
async fn assert_error_frame(client: &mut WsClient, frame: Frame, code: &str, reference: Value) {
    client.send(frame).await;
    let reply = client.reply(SECS).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["error"], code, "{reply}");
    assert_eq!(
        reply.get("ref").cloned().unwrap_or(Value::Null),
        reference,
        "{reply}"
    );
    assert!(
        reply["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{reply}"
    );
    client.send_json(json!({"type": "ping"})).await;
    assert_eq!(
        client.reply(SECS).await,
        json!({"type": "pong"}),
        "the connection stays open"
    );
}

async fn malformed_json_gets_an_error_frame_and_the_connection_stays_open(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    assert_error_frame(
        &mut client,
        Frame::text("{not json"),
        "invalid_json",
        Value::Null,
    )
    .await;
    assert_error_frame(
        &mut client,
        Frame::text("[1, 2]"),
        "invalid_json",
        Value::Null,
    )
    .await;
    let bad_field = json!({"type": "publish", "ref": "c2", "message": 42}).to_string();
    assert_error_frame(
        &mut client,
        Frame::text(bad_field),
        "invalid_json",
        json!("c2"),
    )
    .await;
}

async fn an_unknown_type_gets_an_error_frame_with_its_ref(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    let frame = Frame::text(json!({"type": "subscribe", "ref": "c3"}).to_string());
    assert_error_frame(&mut client, frame, "unknown_type", json!("c3")).await;
    let untyped = Frame::text(json!({"ref": 9, "message": "hi"}).to_string());
    assert_error_frame(&mut client, untyped, "unknown_type", json!(9)).await;
}

async fn an_empty_text_frame_gets_an_error_frame(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    assert_error_frame(&mut client, Frame::text(""), "invalid_json", Value::Null).await;
    assert_error_frame(
        &mut client,
        Frame::text("  \n "),
        "invalid_json",
        Value::Null,
    )
    .await;
}

async fn an_invalid_message_gets_an_error_frame_with_its_ref(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("MAX_MESSAGE_CHARS", 10)).await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    for (frame, code) in [
        (
            json!({"type": "publish", "ref": "a", "message": "x".repeat(11)}),
            "invalid_message",
        ),
        (
            json!({"type": "publish", "ref": "a", "message": "   "}),
            "invalid_message",
        ),
        (json!({"type": "publish", "ref": "a"}), "invalid_message"),
        (
            json!({"type": "publish", "ref": "a", "message": "ok", "author": ""}),
            "invalid_author",
        ),
    ] {
        assert_error_frame(
            &mut client,
            Frame::text(frame.to_string()),
            code,
            json!("a"),
        )
        .await;
    }
    assert!(
        app.history("lobby", "").await.is_empty(),
        "nothing invalid was stored"
    );
}

async fn an_application_ping_gets_a_pong(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    client.send_json(json!({"type": "ping"})).await;
    assert_eq!(client.reply(SECS).await, json!({"type": "pong"}));
    client.send_json(json!({"type": "ping", "ref": "p1"})).await;
    assert_eq!(
        client.reply(SECS).await,
        json!({"type": "pong", "ref": "p1"})
    );
}

async fn publishing_too_fast_gets_a_rate_limited_error_frame(backend: Backend) {
    let (_redis, app) = start(backend, |b| {
        b.var("PUBLISH_RATE_PER_SEC", 1).var("PUBLISH_BURST", 2)
    })
    .await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    client.publish("a", "alice", "one").await;
    client.publish("b", "alice", "two").await;
    let frame = Frame::text(json!({"type": "publish", "ref": "c", "message": "three"}).to_string());
    assert_error_frame(&mut client, frame, "rate_limited", json!("c")).await;
    assert_eq!(app.history("lobby", "").await.len(), 2);
}

async fn a_binary_frame_closes_with_1003(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    client.send(Frame::binary(vec![1, 2, 3])).await;
    assert_eq!(client.ended(SECS).await, Ended::Closed(1003));
}

async fn invalid_utf8_closes_with_1007(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    client
        .send(raw_frame(&[0x7b, 0xff, 0xfe, 0x7d], Data::Text, true))
        .await;
    assert_eq!(client.ended(SECS).await, Ended::Closed(1007));
}

async fn a_frame_over_the_size_limit_closes_with_1009(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("WS_MAX_FRAME_BYTES", 4096)).await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    let big = json!({"type": "publish", "message": "x".repeat(5000)}).to_string();
    client.send(Frame::text(big)).await;
    assert_eq!(client.ended(SECS).await, Ended::Closed(1009));
}

async fn fragmented_messages_are_reassembled_within_the_limit(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    let text = json!({"type": "publish", "ref": "frag", "message": "in three pieces"}).to_string();
    let (one, rest) = text.split_at(10);
    let (two, three) = rest.split_at(12);
    client
        .send(raw_frame(one.as_bytes(), Data::Text, false))
        .await;
    client
        .send(raw_frame(two.as_bytes(), Data::Continue, false))
        .await;
    client
        .send(raw_frame(three.as_bytes(), Data::Continue, true))
        .await;

    let reply = client.reply(SECS).await;
    assert_eq!(
        (reply["type"].as_str(), reply["ref"].as_str()),
        (Some("ack"), Some("frag")),
        "{reply}"
    );
    assert_eq!(client.messages(1, SECS).await[0].message, "in three pieces");
}

async fn fragments_over_the_size_limit_close_with_1009(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("WS_MAX_FRAME_BYTES", 4096)).await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    client
        .send(raw_frame(&[b'x'; 3000], Data::Text, false))
        .await;
    client
        .send(raw_frame(&[b'x'; 3000], Data::Continue, false))
        .await;
    client.send(raw_frame(b"}", Data::Continue, true)).await;
    assert_eq!(client.ended(SECS).await, Ended::Closed(1009));
}

async fn a_client_that_stops_answering_pings_is_dropped(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("HEARTBEAT_SECS", 1)).await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    eventually(SECS, "the client to be counted", || async {
        (app.metric("chat_connected_clients").await == 1.0).then_some(())
    })
    .await;

    // Not reading means not answering pings: within about three heartbeats
    // the server gives up on the client.
    let started = Instant::now();
    eventually(
        Duration::from_secs(6),
        "the silent client to be dropped",
        || async { (app.metric("chat_connected_clients").await == 0.0).then_some(()) },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before a ping went unanswered"
    );
    assert_eq!(client.ended(SECS).await, Ended::Closed(1001));
}

async fn shutdown_closes_with_1012(backend: Backend) {
    let (_redis, mut app) = start(backend, |b| b).await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    eventually(SECS, "the client to be counted", || async {
        (app.metric("chat_connected_clients").await == 1.0).then_some(())
    })
    .await;

    app.shutdown_token().cancel();

    assert_eq!(
        client.ended(SECS).await,
        Ended::Closed(1012),
        "told to reconnect elsewhere"
    );
    app.shut_down().await;
}

async fn a_foreign_origin_is_refused_with_403(backend: Backend) {
    let (_redis, app) = start(backend, |b| {
        b.var(
            "ALLOWED_ORIGINS",
            "https://chat.example, http://localhost:3000",
        )
    })
    .await;
    let url = ws_url(&app.base, "lobby", None);

    let refused = WsClient::connect_with(&url, &[("origin", "https://evil.example")]).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .expect("a JSON error body");
            assert_eq!(body["error"], "forbidden_origin");
        }
        other => panic!("expected 403, got {other:?}"),
    }
    assert!(
        WsClient::connect_with(&url, &[("origin", "http://localhost:3000")])
            .await
            .is_ok()
    );
    assert!(
        WsClient::connect_with(&url, &[]).await.is_ok(),
        "no Origin: not a browser"
    );
}

async fn a_plain_request_gets_426_and_a_broken_handshake_400(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let plain = app
        .client
        .get(app.url("/rooms/lobby/ws"))
        .send()
        .await
        .expect("sent");
    assert_eq!(plain.status(), 426);
    assert_eq!(plain.headers()["upgrade"], "websocket");
    assert_eq!(
        plain.json::<Value>().await.expect("JSON")["error"],
        "upgrade_required"
    );

    let no_key = app
        .client
        .get(app.url("/rooms/lobby/ws"))
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-version", "13")
        .send()
        .await
        .expect("sent");
    assert_eq!(no_key.status(), 400);
    assert_eq!(
        no_key.json::<Value>().await.expect("JSON")["error"],
        "invalid_handshake"
    );

    let bad_room = app
        .client
        .get(app.url("/rooms/no%20pe/ws"))
        .send()
        .await
        .expect("sent");
    assert_eq!(bad_room.status(), 404);
}

async fn a_disconnected_client_is_freed(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let clients =
        futures_util::future::join_all((0..3).map(|_| WsClient::connect(&app.base, "lobby", None)))
            .await;
    eventually(SECS, "3 connected clients", || async {
        (app.metric("chat_connected_clients").await == 3.0).then_some(())
    })
    .await;

    let mut clients = clients.into_iter();
    if let Some(polite) = clients.next() {
        polite.close().await;
    }
    drop(clients);

    eventually(SECS, "the gauge back to 0", || async {
        (app.metric("chat_connected_clients").await == 0.0).then_some(())
    })
    .await;
}

// --- Redis only -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_during_a_replay_from_history_do_not_restart_it() {
    let redis = RedisServer::start().await;
    let app = AppBuilder::new(ws_svc::service())
        .redis(&redis)
        .var("HUB_RING_LEN", 5)
        .var("HISTORY_LEN", 2000)
        .spawn()
        .await;
    chat_tests::app::flood(&app.base, "replay", 1200, 10).await;
    let xranges = || async {
        let stats = redis.command(&["INFO", "commandstats"]).await;
        stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_xrange:calls="))
            .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = xranges().await;

    // Replaying 1,200 messages takes three reads of history; 300 pings sent
    // meanwhile must not restart them.
    let mut client = WsClient::connect(&app.base, "replay", Some(0)).await;
    for _ in 0..300 {
        client.send_json(json!({"type": "ping"})).await;
    }
    let replayed = client.messages(1200, Duration::from_secs(30)).await;
    for _ in 0..300 {
        assert_eq!(client.reply(SECS).await, json!({"type": "pong"}));
    }

    assert_eq!(ids(&replayed), (1..=1200).collect::<Vec<u64>>());
    let reads = xranges().await - before;
    assert!(
        reads <= 6,
        "{reads} reads of history for a replay of three batches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_over_ws_on_one_instance_received_over_ws_on_another() {
    let redis = RedisServer::start().await;
    let one = AppBuilder::new(ws_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    let two = AppBuilder::new(ws_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    let mut listener = WsClient::connect(&two.base, "lobby", None).await;
    let mut publisher = WsClient::connect(&one.base, "lobby", None).await;

    let acked = publisher.publish("x1", "alice", "across instances").await;

    let heard = listener.messages(1, SECS).await;
    assert_eq!(
        (heard[0].id, heard[0].message.as_str()),
        (acked, "across instances")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_session_sessions_stay_open_without_a_gap() {
    let mut redis = RedisServer::start().await;
    let app = AppBuilder::new(ws_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    let mut client = WsClient::connect(&app.base, "lobby", None).await;
    let before = publish_over_http(&app, "lobby", 3).await;
    assert_eq!(client.messages(3, SECS).await, before);

    redis.restart().await;

    app.wait_ready().await;
    let mut after = vec![app.publish_when_possible("lobby", "after-1").await];
    after.extend(publish_over_http(&app, "lobby", 4).await);
    assert_eq!(
        client.messages(5, SECS).await,
        after,
        "the session stayed open and got all"
    );
    assert_eq!(
        ids(&after),
        (4..=8).collect::<Vec<u64>>(),
        "ids continue without a gap"
    );
    client.send_json(json!({"type": "ping"})).await;
    assert_eq!(client.reply(SECS).await, json!({"type": "pong"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_each_receive_a_burst_of_100_in_order() {
    raise_fd_limit();
    let redis = RedisServer::start().await;
    let app = AppBuilder::new(ws_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    let mut clients = Vec::with_capacity(1000);
    for _ in 0..10 {
        let batch = futures_util::future::join_all(
            (0..100).map(|_| WsClient::connect(&app.base, "crowd", None)),
        )
        .await;
        clients.extend(batch);
    }
    eventually(
        Duration::from_secs(10),
        "1000 connected sessions",
        || async { (app.metric("chat_connected_clients").await == 1000.0).then_some(()) },
    )
    .await;

    let sent = publish_over_http(&app, "crowd", 100).await;

    let readers = clients.into_iter().map(|mut client| {
        tokio::spawn(async move { client.messages(100, Duration::from_secs(60)).await })
    });
    for (index, received) in futures_util::future::join_all(readers)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(received.expect("reader"), sent, "session {index}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_without_slowing_others_or_growing_memory() {
    let redis = RedisServer::start().await;
    let service = ServiceProcess::start(
        "ws-svc",
        Some(&redis),
        &[("SLOW_CLIENT_TIMEOUT_SECS", "2".into())],
    )
    .await;
    let slow = slow_socket(service.port, &websocket_upgrade("/rooms/flood/ws"), 4096);
    let mut fast = WsClient::connect(&service.base, "flood", None).await;
    let fast_reads = async move {
        fast.messages(FLOOD_MESSAGES, Duration::from_secs(120))
            .await
    };

    chat_tests::scenario::a_client_that_never_reads(&service, "flood", slow, fast_reads).await;
}

/// A client that does not read while 2,000 messages of 4 KB arrive (far
/// more than the socket buffers and its queue of 16 hold), then reads all it
/// is given. The service keeps `history_len` messages per room.
async fn fall_behind(
    history_len: usize,
) -> (Vec<Message>, Option<Ended>, ServiceProcess, RedisServer) {
    let redis = RedisServer::start().await;
    let service = ServiceProcess::start(
        "ws-svc",
        Some(&redis),
        &[
            ("CLIENT_QUEUE_LEN", "16".into()),
            ("HUB_RING_LEN", "32".into()),
            ("HISTORY_LEN", history_len.to_string()),
            ("SLOW_CLIENT_TIMEOUT_SECS", "60".into()),
            ("HEARTBEAT_SECS", "60".into()),
        ],
    )
    .await;
    let mut lagging = WsClient::connect_slow(&service.base, "lag", Some(0), 4096).await;

    chat_tests::app::flood(&service.base, "lag", 2000, 4000).await;

    // Caught up, it gets all 2,000 and stays open; too far behind, it gets
    // what it can and the connection ends.
    let (received, ended) = if history_len >= 2000 {
        (lagging.messages(2000, Duration::from_secs(20)).await, None)
    } else {
        let (received, ended) = lagging.all_messages(Duration::from_secs(20)).await;
        (received, Some(ended))
    };
    (received, ended, service, redis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_caught_up_from_history() {
    let (received, _, service, _redis) = fall_behind(5000).await;

    assert!(
        received.iter().zip(1..).all(|(m, id)| m.id == id),
        "all of them, in order"
    );
    assert_eq!(received.len(), 2000);
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
async fn a_slow_reader_further_behind_than_history_is_closed_with_1013() {
    let (received, ended, service, _redis) = fall_behind(100).await;

    assert_eq!(
        ended,
        Some(Ended::Closed(1013)),
        "told to reconnect with its cursor"
    );
    assert!(
        received.len() < 2000,
        "it could not have been served everything"
    );
    assert!(
        received.iter().zip(1..).all(|(m, id)| m.id == id),
        "what it got has no hole"
    );
    // Reconnecting with its cursor, it is told what it missed.
    let cursor = received.last().map_or(0, |m| m.id);
    let mut resumed = WsClient::connect(&service.base, "lag", Some(cursor)).await;
    let gap = resumed.reply(SECS).await;
    assert_eq!(
        (gap["type"].as_str(), gap["after"].as_u64()),
        (Some("gap"), Some(cursor)),
        "{gap}"
    );
}
