//! ws-svc against a real Redis (and, where the test is about the transport
//! rather than Redis, also against the in-process broker): what is
//! WebSocket's own (acks, error frames, close codes, fragments, pings). The
//! scenarios every streaming transport must pass are in streaming.rs.
//!
//! Clients are chat-client's `WsConnection`s; frames no client library
//! would send (binary, invalid UTF-8, fragments) go through a
//! [`RawWebSocket`].

use std::time::{Duration, Instant};

use chat_client::{Disconnect, ErrorCode, Publish, WsConnection, WsEvent};
use chat_tests::client::{Receive, client, websocket};
use chat_tests::raw::RawWebSocket;
use chat_tests::{AppBuilder, Backend, RedisServer, TestApp, broker_tests, eventually, ids};
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

/// A raw WebSocket in room `lobby` of `app`.
async fn raw_socket(app: &TestApp) -> RawWebSocket {
    RawWebSocket::connect(&app.base, "/rooms/lobby/ws", &[])
        .await
        .expect("the WebSocket upgrade")
}

broker_tests!(
    a_publish_gets_an_ack_whose_id_is_the_broadcast_id,
    messages_published_over_http_reach_ws_clients_as_via_ws,
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
    let client = client(&app.base);
    let mut listener = websocket(&client, "lobby", None).await;
    let mut publisher = websocket(&client, "lobby", None).await;

    let ack = publisher
        .publish(Publish::new("hello").author("alice"))
        .await
        .expect("an ack");

    let [heard] = <[Message; 1]>::try_from(listener.messages(1, SECS).await).expect("one");
    assert_eq!(heard.id, ack.id);
    assert!(!ack.replayed, "a new message");
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
    let mut socket = websocket(&client(&app.base), "lobby", None).await;

    let sent = app.publish_many("lobby", "m", 3).await;

    assert_eq!(socket.messages(3, SECS).await, sent);
    assert!(
        sent.iter().all(|m| m.via == Via::Ws),
        "a POST to ws-svc is via ws"
    );
}

/// Sends `text` as a frame and expects an error frame with `code` (and
/// `reference`, or none), then checks the connection still works.
async fn assert_error_frame(
    socket: &mut WsConnection,
    text: &str,
    code: ErrorCode,
    reference: Option<Value>,
) {
    socket.send_text(text).await.expect("frame sent");
    let reply = tokio::time::timeout(SECS, async {
        // The room's messages (the socket's own publishes) may come first.
        loop {
            match socket.next_event().await {
                Ok(Some(WsEvent::Message(_))) => {}
                other => break other,
            }
        }
    })
    .await
    .expect("a reply in time");
    let Ok(Some(WsEvent::Error {
        reference: got,
        body,
    })) = reply
    else {
        panic!("expected an error frame for {text:?}, got {reply:?}");
    };
    assert_eq!((body.error, got), (code, reference), "for {text:?}");
    assert!(!body.detail.is_empty(), "for {text:?}");
    socket.ping().await.expect("the connection stays open");
}

async fn malformed_json_gets_an_error_frame_and_the_connection_stays_open(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut socket = websocket(&client(&app.base), "lobby", None).await;
    assert_error_frame(&mut socket, "{not json", ErrorCode::InvalidJson, None).await;
    assert_error_frame(&mut socket, "[1, 2]", ErrorCode::InvalidJson, None).await;
    let bad_field = json!({"type": "publish", "ref": "c2", "message": 42}).to_string();
    assert_error_frame(
        &mut socket,
        &bad_field,
        ErrorCode::InvalidJson,
        Some(json!("c2")),
    )
    .await;
}

async fn an_unknown_type_gets_an_error_frame_with_its_ref(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut socket = websocket(&client(&app.base), "lobby", None).await;
    let frame = json!({"type": "subscribe", "ref": "c3"}).to_string();
    assert_error_frame(
        &mut socket,
        &frame,
        ErrorCode::UnknownType,
        Some(json!("c3")),
    )
    .await;
    let untyped = json!({"ref": 9, "message": "hi"}).to_string();
    assert_error_frame(
        &mut socket,
        &untyped,
        ErrorCode::UnknownType,
        Some(json!(9)),
    )
    .await;
}

async fn an_empty_text_frame_gets_an_error_frame(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut socket = websocket(&client(&app.base), "lobby", None).await;
    assert_error_frame(&mut socket, "", ErrorCode::InvalidJson, None).await;
    assert_error_frame(&mut socket, "  \n ", ErrorCode::InvalidJson, None).await;
}

async fn an_invalid_message_gets_an_error_frame_with_its_ref(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("MAX_MESSAGE_CHARS", 10)).await;
    let mut socket = websocket(&client(&app.base), "lobby", None).await;
    for (frame, code) in [
        (
            json!({"type": "publish", "ref": "a", "message": "x".repeat(11)}),
            ErrorCode::InvalidMessage,
        ),
        (
            json!({"type": "publish", "ref": "a", "message": "   "}),
            ErrorCode::InvalidMessage,
        ),
        (
            json!({"type": "publish", "ref": "a"}),
            ErrorCode::InvalidMessage,
        ),
        (
            json!({"type": "publish", "ref": "a", "message": "ok", "author": ""}),
            ErrorCode::InvalidAuthor,
        ),
    ] {
        assert_error_frame(&mut socket, &frame.to_string(), code, Some(json!("a"))).await;
    }
    assert!(
        app.history("lobby", "").await.is_empty(),
        "nothing invalid was stored"
    );
}

async fn an_application_ping_gets_a_pong(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut socket = raw_socket(&app).await;
    socket.send_json(json!({"type": "ping"})).await;
    assert_eq!(socket.next_json(SECS).await, json!({"type": "pong"}));
    socket.send_json(json!({"type": "ping", "ref": "p1"})).await;
    assert_eq!(
        socket.next_json(SECS).await,
        json!({"type": "pong", "ref": "p1"})
    );
}

async fn publishing_too_fast_gets_a_rate_limited_error_frame(backend: Backend) {
    let (_redis, app) = start(backend, |b| {
        b.var("PUBLISH_RATE_PER_SEC", 1).var("PUBLISH_BURST", 2)
    })
    .await;
    let mut socket = websocket(&client(&app.base), "lobby", None).await;
    for text in ["one", "two"] {
        socket
            .publish(Publish::new(text).author("alice"))
            .await
            .expect("within the burst");
    }
    let frame = json!({"type": "publish", "ref": "c", "message": "three"}).to_string();
    assert_error_frame(
        &mut socket,
        &frame,
        ErrorCode::RateLimited,
        Some(json!("c")),
    )
    .await;
    assert_eq!(app.history("lobby", "").await.len(), 2);
}

async fn a_binary_frame_closes_with_1003(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut socket = raw_socket(&app).await;
    socket.send(Frame::binary(vec![1, 2, 3])).await;
    assert_eq!(socket.close_code(SECS).await, 1003);
}

async fn invalid_utf8_closes_with_1007(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut socket = raw_socket(&app).await;
    socket
        .send(raw_frame(&[0x7b, 0xff, 0xfe, 0x7d], Data::Text, true))
        .await;
    assert_eq!(socket.close_code(SECS).await, 1007);
}

async fn a_frame_over_the_size_limit_closes_with_1009(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("WS_MAX_FRAME_BYTES", 4096)).await;
    let mut socket = websocket(&client(&app.base), "lobby", None).await;
    let big = json!({"type": "publish", "message": "x".repeat(5000)}).to_string();
    socket.send_text(&big).await.expect("frame sent");
    let (_, ended) = socket.until_end(SECS).await;
    assert!(
        matches!(ended, Disconnect::Closed { code: 1009, .. }),
        "{ended:?}"
    );
}

async fn fragmented_messages_are_reassembled_within_the_limit(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut socket = raw_socket(&app).await;
    let text = json!({"type": "publish", "ref": "frag", "message": "in three pieces"}).to_string();
    let (one, rest) = text.split_at(10);
    let (two, three) = rest.split_at(12);
    socket
        .send(raw_frame(one.as_bytes(), Data::Text, false))
        .await;
    socket
        .send(raw_frame(two.as_bytes(), Data::Continue, false))
        .await;
    socket
        .send(raw_frame(three.as_bytes(), Data::Continue, true))
        .await;

    // The ack and the message, in either order.
    let mut frames = [socket.next_json(SECS).await, socket.next_json(SECS).await];
    frames.sort_by_key(|frame| frame["type"] != "ack");
    let [ack, message] = frames;
    assert_eq!(
        (ack["type"].as_str(), ack["ref"].as_str()),
        (Some("ack"), Some("frag")),
        "{ack}"
    );
    assert_eq!(
        (
            message["type"].as_str(),
            message["data"]["message"].as_str()
        ),
        (Some("message"), Some("in three pieces")),
        "{message}"
    );
}

async fn fragments_over_the_size_limit_close_with_1009(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("WS_MAX_FRAME_BYTES", 4096)).await;
    let mut socket = raw_socket(&app).await;
    socket
        .send(raw_frame(&[b'x'; 3000], Data::Text, false))
        .await;
    socket
        .send(raw_frame(&[b'x'; 3000], Data::Continue, false))
        .await;
    socket.send(raw_frame(b"}", Data::Continue, true)).await;
    assert_eq!(socket.close_code(SECS).await, 1009);
}

async fn a_client_that_stops_answering_pings_is_dropped(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("HEARTBEAT_SECS", 1)).await;
    let mut socket = websocket(&client(&app.base), "lobby", None).await;
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
    let (_, ended) = socket.until_end(SECS).await;
    assert!(
        matches!(ended, Disconnect::Closed { code: 1001, .. }),
        "{ended:?}"
    );
}

async fn shutdown_closes_with_1012(backend: Backend) {
    let (_redis, mut app) = start(backend, |b| b).await;
    let mut socket = websocket(&client(&app.base), "lobby", None).await;
    eventually(SECS, "the client to be counted", || async {
        (app.metric("chat_connected_clients").await == 1.0).then_some(())
    })
    .await;

    app.shutdown_token().cancel();

    let (_, ended) = socket.until_end(SECS).await;
    assert!(
        matches!(ended, Disconnect::Closed { code: 1012, .. }),
        "told to reconnect elsewhere: {ended:?}"
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
    let connect = |origin: &'static [(&'static str, &'static str)]| {
        RawWebSocket::connect(&app.base, "/rooms/lobby/ws", origin)
    };

    let refused = connect(&[("origin", "https://evil.example")]).await;
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
        connect(&[("origin", "http://localhost:3000")])
            .await
            .is_ok()
    );
    assert!(connect(&[]).await.is_ok(), "no Origin: not a browser");
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
    let client = client(&app.base);
    let sockets =
        futures_util::future::join_all((0..3).map(|_| websocket(&client, "lobby", None))).await;
    eventually(SECS, "3 connected clients", || async {
        (app.metric("chat_connected_clients").await == 3.0).then_some(())
    })
    .await;

    let mut sockets = sockets.into_iter();
    if let Some(polite) = sockets.next() {
        polite.close().await.expect("closed");
    }
    drop(sockets);

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
    let mut socket = websocket(&client(&app.base), "replay", Some(0)).await;
    for _ in 0..300 {
        socket
            .send_text(r#"{"type":"ping"}"#)
            .await
            .expect("ping sent");
    }
    let (mut replayed, mut pongs) = (Vec::new(), 0);
    while replayed.len() < 1200 || pongs < 300 {
        let event = tokio::time::timeout(Duration::from_secs(30), socket.next_event())
            .await
            .expect("the replay and the pongs in time");
        match event {
            Ok(Some(WsEvent::Message(message))) => replayed.push(message),
            Ok(Some(WsEvent::Pong { reference: None })) => pongs += 1,
            other => panic!("expected messages and pongs, got {other:?}"),
        }
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
    let mut listener = websocket(&client(&two.base), "lobby", None).await;
    let mut publisher = websocket(&client(&one.base), "lobby", None).await;

    let ack = publisher
        .publish(Publish::new("across instances").author("alice"))
        .await
        .expect("an ack");

    let heard = listener.messages(1, SECS).await;
    assert_eq!(
        (heard[0].id, heard[0].message.as_str()),
        (ack.id, "across instances")
    );
}
