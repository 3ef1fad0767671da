//! The services on the open internet: clients that flood rooms, connections
//! and publishes, replay idempotency keys, forge pub/sub payloads, or meet
//! a Redis that lost data or memory. Real processes, real Redis.

use std::net::IpAddr;
use std::time::Duration;

use chat_client::{Error, ErrorCode, Event, Gap, Poll, Publish, Resume, Transport};
use chat_tests::app::publish_many;
use chat_tests::client::{Receive, client, events, room, websocket, websocket_refusal};
use chat_tests::process::ServiceProcess;
use chat_tests::raw::{RawWebSocket, exchange, stream_request};
use chat_tests::{RedisServer, eventually, ids};
use common::Message;
use serde_json::{Value, json};

const SECS: Duration = Duration::from_secs(5);

/// An HTTP client whose connections come from `source` (a 127.0.0.x
/// address): a different client, as far as per-client limits go.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().expect("an address"))
        .connect_timeout(SECS)
        .build()
        .expect("HTTP client builds")
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    room: &str,
    body: Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = client
        .post(format!("{base}/rooms/{room}/messages"))
        .json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("request sent")
}

/// `error` of a JSON error answer, after checking its status.
async fn error_code(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status, "status");
    let body: Value = response.json().await.expect("a JSON error body");
    body["error"].as_str().expect("an error code").to_owned()
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    pairs
        .iter()
        .map(|(name, value)| {
            let name: &'static str = Box::leak(name.to_string().into_boxed_str());
            (name, value.to_string())
        })
        .collect()
}

/// Keys under `chat:` in `redis`, and how many of them never expire.
async fn keys_without_ttl(redis: &RedisServer) -> (u64, u64) {
    let script = "local all, forever = 0, 0 \
                  for _, key in ipairs(redis.call('KEYS', 'chat:*')) do \
                    all = all + 1 \
                    if redis.call('TTL', key) < 0 then forever = forever + 1 end \
                  end \
                  return {all, forever}";
    let reply = redis.command(&["EVAL", script, "0"]).await;
    let numbers: Vec<u64> = reply
        .lines()
        .filter_map(|line| line.strip_prefix(':')?.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 2, "unexpected reply {reply:?}");
    (numbers[0], numbers[1])
}

/// Runs `work` for each of `0..count` on `workers` concurrent tasks.
async fn in_parallel<F, Fut>(count: usize, workers: usize, work: F)
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let tasks = (0..workers).map(|worker| {
        let work = work.clone();
        tokio::spawn(async move {
            let mut item = worker;
            while item < count {
                work(item).await;
                item += workers;
            }
        })
    });
    for task in futures_util::future::join_all(tasks).await {
        task.expect("worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_rooms_from_one_client_stay_within_the_memory_budget_then_are_freed() {
    const ROOMS: usize = 20_000;
    let redis = RedisServer::start().await;
    let service = ServiceProcess::start(
        "longpoll-svc",
        Some(&redis),
        &vars(&[("HUB_MEMORY_MB", "4"), ("ROOM_IDLE_SECS", "10")]),
    )
    .await;
    let baseline = service.resident_bytes();
    let memory = service.sample_memory();

    // One client reads 20,000 rooms and posts a message of 4,000 characters
    // into each right after: a read makes the instance hold the room for a
    // while, so every message arrives in a room held here and grows a ring.
    let client = reqwest::Client::new();
    let base = service.base.clone();
    let text = "x".repeat(4000);
    in_parallel(ROOMS, 16, move |room| {
        let (client, base, text) = (client.clone(), base.clone(), text.clone());
        async move {
            let room = format!("flood-{room}");
            let url = format!("{base}/rooms/{room}/history");
            let status = client.get(url).send().await.expect("read").status();
            assert_eq!(status, 200);
            let response = post(&client, &base, &room, json!({ "message": text }), None).await;
            assert_eq!(response.status(), 201);
        }
    })
    .await;
    let budget = 4 << 20;
    let held_bytes = service.metric("chat_hub_memory_bytes").await;
    let peak = memory.peak();
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "{ROOMS} rooms: RSS {} MB -> peak {} MB (+{} MB); the hub holds {} KB in {} rooms, {} \
         evicted",
        baseline >> 20,
        peak >> 20,
        growth >> 20,
        held_bytes as u64 >> 10,
        service.metric("chat_rooms_held").await,
        service.metric("chat_rooms_evicted_total").await,
    );
    assert!(
        held_bytes <= f64::from(budget),
        "the hub holds {held_bytes} bytes, over its budget of {budget}"
    );
    assert!(
        service.metric("chat_rooms_evicted_total").await > 0.0,
        "the budget made the hub evict rooms"
    );
    // The bound: the hub's budget (4 MB, where 20,000 rooms of 4 KB
    // messages would take 80 MB), plus what serving 40,000 requests costs
    // (connection buffers, the allocator's slack).
    assert!(
        growth < 40 << 20,
        "memory grew by {} MB for {ROOMS} rooms with a 4 MB budget",
        growth >> 20
    );

    // Once idle, every room is freed, and the memory given back.
    eventually(Duration::from_secs(20), "every room freed", || async {
        (service.metric("chat_rooms_held").await == 0.0).then_some(())
    })
    .await;
    assert_eq!(service.metric("chat_hub_memory_bytes").await, 0.0);
    let after = service.resident_bytes();
    eprintln!("after the idle time: RSS {} MB", after >> 20);
    assert!(
        after < peak,
        "RSS fell back ({} MB at the peak, {} MB after)",
        peak >> 20,
        after >> 20
    );

    // Every key the product wrote in Redis expires.
    let (keys, forever) = keys_without_ttl(&redis).await;
    assert!(keys >= 2 * ROOMS as u64, "only {keys} keys");
    assert_eq!(forever, 0, "{forever} of {keys} keys never expire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_are_refused_at_both_caps_while_existing_clients_keep_receiving() {
    let redis = RedisServer::start().await;
    let caps = vars(&[
        ("MAX_CONNECTIONS", "12"),
        ("MAX_CONNECTIONS_PER_CLIENT", "5"),
    ]);
    let sse = ServiceProcess::start("sse-svc", Some(&redis), &caps).await;
    let ws = ServiceProcess::start("ws-svc", Some(&redis), &caps).await;
    let poll = ServiceProcess::start("longpoll-svc", Some(&redis), &caps).await;

    // An existing client of the event stream service, from an address of
    // its own (the library's clients connect from 127.0.0.1, which nothing
    // else here holds a connection from).
    let mut watcher = events(&client(&sse.base), "flooded", Resume::After(0)).await;

    // One address opens streams until refused: 429 at its own cap, as
    // JSON, before any stream starts. (Only the answers matter here, so
    // these are plain requests, their bodies left unread.)
    let open_from = |source: &reqwest::Client| {
        source
            .get(format!("{}/rooms/flooded/events", sse.base))
            .send()
    };
    let flooder = client_from("127.0.0.3");
    let mut held = Vec::new();
    for _ in 0..5 {
        let stream = open_from(&flooder).await.expect("sent");
        assert_eq!(stream.status(), 200);
        held.push(stream);
    }
    let refused = open_from(&flooder).await.expect("sent");
    assert_eq!(error_code(refused, 429).await, "too_many_connections");

    // Other addresses fill the instance: 503 once it holds 12, with
    // Retry-After.
    for n in 4..=9 {
        let stream = open_from(&client_from(&format!("127.0.0.{n}")))
            .await
            .expect("sent");
        if stream.status() == 200 {
            held.push(stream);
        } else {
            assert_eq!(stream.status(), 503);
            break;
        }
    }
    assert_eq!(held.len() + 1, 12, "the instance holds its cap");
    let full = open_from(&client_from("127.0.0.10")).await.expect("sent");
    assert!(full.headers().contains_key("retry-after"));
    assert_eq!(error_code(full, 503).await, "too_many_connections");

    // A WebSocket upgrade and a held poll are refused the same way, before
    // the upgrade or the hold.
    let ws_client = client(&ws.base);
    let mut ws_held = Vec::new();
    for _ in 0..5 {
        ws_held.push(websocket(&ws_client, "flooded", None).await);
    }
    let refusal = websocket_refusal(&ws_client, "flooded").await;
    assert_eq!(refusal.status, 429, "over the per-client cap");
    let poll_client = client(&poll.base);
    let pollers: Vec<_> = (0..5)
        .map(|_| {
            let poll_client = poll_client.clone();
            tokio::spawn(async move {
                poll_client
                    .poll(&room("flooded"), None, Duration::from_secs(20))
                    .await
            })
        })
        .collect();
    eventually(SECS, "five held polls", || async {
        (poll.metric("chat_connected_clients").await == 5.0).then_some(())
    })
    .await;
    let sixth = reqwest::Client::new()
        .get(format!("{}/rooms/flooded/poll?timeout=1", poll.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(error_code(sixth, 429).await, "too_many_connections");

    // Meanwhile the existing client receives everything.
    let mut sent = Vec::new();
    for n in 0..20 {
        let response = post(
            &reqwest::Client::new(),
            &sse.base,
            "flooded",
            json!({ "message": format!("m{n}") }),
            None,
        )
        .await;
        assert_eq!(response.status(), 201);
        sent.push(response.json::<Message>().await.expect("a message"));
    }
    assert_eq!(watcher.messages(20, SECS).await, sent);
    for poller in pollers {
        poller.abort();
    }

    // Closing streams gives their places back.
    drop(held);
    eventually(SECS, "places given back", || async {
        (sse.metric("chat_connected_clients").await == 1.0).then_some(())
    })
    .await;
    let again = open_from(&flooder).await.expect("sent");
    assert_eq!(again.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_budget_per_client_is_shared_by_http_and_websocket() {
    let redis = RedisServer::start().await;
    let ws = ServiceProcess::start(
        "ws-svc",
        Some(&redis),
        &vars(&[("PUBLISH_RATE_PER_SEC", "1"), ("PUBLISH_BURST", "3")]),
    )
    .await;
    let http = reqwest::Client::new();
    let mut socket = websocket(&client(&ws.base), "budget", None).await;

    // Three at once pass, whichever way they come...
    for n in 0..2 {
        let response = post(
            &http,
            &ws.base,
            "budget",
            json!({"message": n.to_string()}),
            None,
        )
        .await;
        assert_eq!(response.status(), 201);
    }
    socket
        .publish(Publish::new("over ws").author("alice"))
        .await
        .expect("the third passes");
    // ...and the fourth is refused on both (an error frame answering it).
    let refused = socket.publish(Publish::new("too many")).await;
    assert!(
        matches!(&refused, Err(Error::Rejected(body)) if body.error == ErrorCode::RateLimited),
        "{refused:?}"
    );
    let response = post(&http, &ws.base, "budget", json!({"message": "fifth"}), None).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(error_code(response, 429).await, "rate_limited");

    // Another client has its own budget.
    let other = post(
        &client_from("127.0.0.5"),
        &ws.base,
        "budget",
        json!({"message": "someone else"}),
        None,
    )
    .await;
    assert_eq!(other.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_stores_one_message_over_http_ws_and_across_services() {
    let redis = RedisServer::start().await;
    let poll = ServiceProcess::start("longpoll-svc", Some(&redis), &[]).await;
    let sse = ServiceProcess::start("sse-svc", Some(&redis), &[]).await;
    let ws = ServiceProcess::start("ws-svc", Some(&redis), &[]).await;
    let http = reqwest::Client::new();

    // HTTP: 201, then 200 with Idempotent-Replayed and the first message,
    // whatever the second body says; on another service too.
    let first = post(
        &http,
        &poll.base,
        "once",
        json!({"message": "first"}),
        Some("k-1"),
    )
    .await;
    assert_eq!(first.status(), 201);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first: Message = first.json().await.expect("a message");
    for base in [&poll.base, &sse.base, &ws.base] {
        let again = post(
            &http,
            base,
            "once",
            json!({"message": "other"}),
            Some("k-1"),
        )
        .await;
        assert_eq!(again.status(), 200);
        assert_eq!(
            again
                .headers()
                .get("idempotent-replayed")
                .map(|value| value.as_bytes()),
            Some(&b"true"[..])
        );
        assert_eq!(again.json::<Message>().await.expect("a message"), first);
    }

    // WebSocket: the same key, acked with the first id and "replayed" (and
    // without it the first time: read to the letter).
    let mut socket = RawWebSocket::connect(&ws.base, "/rooms/once/ws", &[])
        .await
        .expect("the WebSocket upgrade");
    socket
        .send_json(json!({"type": "publish", "ref": "a", "message": "ws", "key": "k-2"}))
        .await;
    let ack = socket.reply(SECS).await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack.get("replayed"), None);
    let id = ack["id"].as_u64().expect("an id");
    socket
        .send_json(json!({"type": "publish", "ref": "b", "message": "again", "key": "k-2"}))
        .await;
    let replay = socket.reply(SECS).await;
    assert_eq!(
        (replay["id"].as_u64(), replay["replayed"].as_bool()),
        (Some(id), Some(true))
    );
    let over_http = post(
        &http,
        &sse.base,
        "once",
        json!({"message": "x"}),
        Some("k-2"),
    )
    .await;
    assert_eq!(over_http.status(), 200);

    // A key is per room; a malformed key is refused.
    let elsewhere = post(
        &http,
        &poll.base,
        "twice",
        json!({"message": "y"}),
        Some("k-1"),
    )
    .await;
    assert_eq!(elsewhere.status(), 201);
    let bad = post(
        &http,
        &poll.base,
        "once",
        json!({"message": "z"}),
        Some("has space"),
    )
    .await;
    assert_eq!(error_code(bad, 400).await, "invalid_idempotency_key");
    socket
        .send_json(json!({"type": "publish", "ref": "c", "message": "z", "key": ""}))
        .await;
    let reply = socket.reply(SECS).await;
    assert_eq!(reply["error"], "invalid_idempotency_key");

    // Exactly two messages were stored in the room: one per key.
    let history: Value = http
        .get(format!("{}/rooms/once/history", poll.base))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|message| message["message"].as_str())
        .collect();
    assert_eq!(texts, ["first", "ws"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_pub_sub_payloads_are_dropped_and_the_ring_stays_intact() {
    let redis = RedisServer::start().await;
    let service = ServiceProcess::start_logged("sse-svc", Some(&redis), &[]).await;
    let mut stream = events(&client(&service.base), "forged", Resume::After(0)).await;
    let http = reqwest::Client::new();
    let first = post(
        &http,
        &service.base,
        "forged",
        json!({"message": "real 1"}),
        None,
    )
    .await
    .json::<Message>()
    .await
    .expect("a message");

    // Anyone who reaches Redis can publish on a room's live channel.
    for payload in [
        "not json at all",
        r#"{"id":0,"room":"forged","author":"x","message":"id zero","ts":1,"via":"sse"}"#,
        r#"{"id":2,"room":"bad room!","author":"x","message":"bad room","ts":1,"via":"sse"}"#,
        r#"{"id":2,"room":"elsewhere","author":"x","message":"wrong room","ts":1,"via":"sse"}"#,
        r#"{"id":999,"room":"forged","author":"x","message":"far ahead","ts":1,"via":"sse"}"#,
        r#"{"id":2,"room":"forged","author":"x","message":"wrong via","ts":1,"via":"smtp"}"#,
    ] {
        redis
            .command(&["PUBLISH", "chat:{forged}:live", payload])
            .await;
    }
    let second = post(
        &http,
        &service.base,
        "forged",
        json!({"message": "real 2"}),
        None,
    )
    .await
    .json::<Message>()
    .await
    .expect("a message");

    assert_eq!(second.id, first.id + 1, "the forgeries moved no ids");
    assert_eq!(stream.messages(2, SECS).await, [first, second.clone()]);
    let history: Value = http
        .get(format!("{}/rooms/forged/history?after=0", service.base))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(2));
    let log = service.log();
    assert!(log.contains("absent from history"), "logged:\n{log}");
    assert!(
        log.contains("on the channel of room forged"),
        "logged:\n{log}"
    );
    assert_eq!(
        reqwest::get(service.url("/readyz"))
            .await
            .expect("sent")
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_in_history_is_announced_as_a_gap_on_every_transport() {
    let redis = RedisServer::start().await;
    let poll = ServiceProcess::start("longpoll-svc", Some(&redis), &[]).await;
    let sse = ServiceProcess::start("sse-svc", Some(&redis), &[]).await;
    let ws = ServiceProcess::start("ws-svc", Some(&redis), &[]).await;
    publish_many(&poll.base, "holed", "m", 10).await;
    // Redis lost ids 4-6 (e.g. a failover), and the sequence went on.
    for id in ["4-0", "5-0", "6-0"] {
        redis.command(&["XDEL", "chat:{holed}:history", id]).await;
    }

    // Every transport resuming after 2: 3, then the gap, then 7..=10.
    let poll_client = client(&poll.base);
    let holed = room("holed");
    let Ok(Poll::Messages {
        messages,
        cursor,
        gap,
    }) = poll_client.poll(&holed, Some(2), SECS).await
    else {
        panic!("a poll after 2 is answered at once");
    };
    assert_eq!((ids(&messages), cursor, gap), (vec![3], 3, false));
    let Ok(Poll::Messages { messages, gap, .. }) = poll_client.poll(&holed, Some(3), SECS).await
    else {
        panic!("a poll after 3 is answered at once");
    };
    assert!(gap, "the hole is announced");
    assert_eq!(ids(&messages), [7, 8, 9, 10]);

    let the_gap = Event::Gap(Gap {
        after: 3,
        resume_from: 7,
    });
    let mut stream = events(&client(&sse.base), "holed", Resume::After(2)).await;
    assert_eq!(ids(&stream.messages(1, SECS).await), [3]);
    assert_eq!(stream.receive(SECS).await, the_gap);
    assert_eq!(ids(&stream.messages(4, SECS).await), [7, 8, 9, 10]);

    let mut socket = websocket(&client(&ws.base), "holed", Some(2)).await;
    assert_eq!(ids(&socket.messages(1, SECS).await), [3]);
    assert_eq!(socket.receive(SECS).await, the_gap);
    assert_eq!(ids(&socket.messages(4, SECS).await), [7, 8, 9, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_answers_503_with_retry_after_never_500() {
    let redis = RedisServer::start().await;
    let service = ServiceProcess::start("longpoll-svc", Some(&redis), &[]).await;
    publish_many(&service.base, "full", "m", 1).await;
    redis.command(&["CONFIG", "SET", "maxmemory", "1"]).await;
    redis
        .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .await;

    let response = post(
        &reqwest::Client::new(),
        &service.base,
        "full",
        json!({"message": "no room left"}),
        None,
    )
    .await;
    assert_eq!(
        response.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_eq!(error_code(response, 503).await, "broker_unavailable");

    // Memory back: publishing works again.
    redis.command(&["CONFIG", "SET", "maxmemory", "0"]).await;
    let again = post(
        &reqwest::Client::new(),
        &service.base,
        "full",
        json!({"message": "room again"}),
        None,
    )
    .await;
    assert_eq!(again.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_password_never_reaches_the_logs() {
    let redis = RedisServer::start().await;
    redis
        .command(&["CONFIG", "SET", "requirepass", "s3cret-passw0rd"])
        .await;
    let url = format!("redis://:s3cret-passw0rd@127.0.0.1:{}/", redis.port());
    let service = ServiceProcess::start_logged(
        "sse-svc",
        None,
        &vars(&[("REDIS_URL", &url), ("RUST_LOG", "debug")]),
    )
    .await;
    publish_many(&service.base, "secret", "m", 2).await;
    let _ = events(&client(&service.base), "secret", Resume::After(0)).await;

    let log = service.log();
    assert!(!log.is_empty(), "the service logged");
    assert!(
        !log.contains("s3cret-passw0rd"),
        "the password is in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_socket_upgrade_over_a_cap_is_refused_before_upgrading() {
    let redis = RedisServer::start().await;
    let ws =
        ServiceProcess::start("ws-svc", Some(&redis), &vars(&[("MAX_CONNECTIONS", "1")])).await;
    let first = websocket(&client(&ws.base), "one", None).await;
    let upgrade = stream_request(Transport::Ws, "one", None);
    let status = exchange(ws.port, upgrade.as_bytes(), SECS).await;
    assert_eq!(status, 503);
    first.close().await.expect("closed");
}
