//! longpoll-svc against a real Redis (and, where the test is about the
//! transport rather than Redis, also against the in-process broker).

use std::time::{Duration, Instant};

use chat_client::Poll;
use chat_tests::client::{Receive, client, polls, room};
use chat_tests::{AppBuilder, Backend, RedisServer, TestApp, broker_tests, eventually, ids};
use common::Message;
use serde_json::{Value, json};

/// A longpoll-svc on `backend` (the Redis, if any, must outlive it).
async fn start(
    backend: Backend,
    configure: impl FnOnce(AppBuilder) -> AppBuilder,
) -> (Option<RedisServer>, TestApp) {
    configure(AppBuilder::new(longpoll_svc::service()))
        .spawn_on(backend)
        .await
}

broker_tests!(
    poll_receives_a_message_posted_while_it_waits,
    poll_answers_at_once_when_messages_are_waiting,
    poll_without_after_waits_for_the_next_message,
    poll_answers_204_within_the_timeout_plus_one_second,
    poll_timeout_is_capped_by_config,
    a_poller_following_cursors_gets_500_concurrent_messages_once_in_order,
    after_older_than_the_ring_is_served_from_history,
    after_older_than_history_answers_with_a_gap,
    after_beyond_the_last_id_answers_with_a_gap,
    history_returns_the_latest_or_those_after_a_cursor,
    seed_get_messages_returns_the_next_message_as_one_object,
    seed_get_messages_answers_408_with_json_on_timeout,
    seed_new_messages_answers_201_with_the_message,
    bad_requests_get_400_with_a_json_body,
    bad_rooms_and_routes_get_404_with_a_json_body,
    wrong_methods_get_405_with_an_allow_header,
    a_1_mib_body_gets_413,
    a_body_that_is_not_json_gets_415,
    publishing_too_fast_gets_429_with_retry_after,
    errors_carry_cors_headers,
    a_client_leaving_mid_poll_frees_its_wait,
    shutdown_answers_held_polls_at_once,
);

async fn poll_receives_a_message_posted_while_it_waits(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let client = client(&app.base);
    let waiting = tokio::spawn(async move {
        client
            .poll(&room("lobby"), Some(0), Duration::from_secs(10))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let sent = app.publish("lobby", "alice", "hello").await;

    match waiting.await.expect("poll task").expect("poll answered") {
        Poll::Messages {
            messages,
            cursor,
            gap,
        } => {
            assert_eq!(messages, std::slice::from_ref(&sent));
            assert_eq!(cursor, sent.id);
            assert!(!gap);
        }
        other => panic!("the poll was answered without the message: {other:?}"),
    }
}

async fn poll_answers_at_once_when_messages_are_waiting(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    for n in 1..=3 {
        app.publish("lobby", "alice", &format!("m{n}")).await;
    }
    let client = client(&app.base);

    let started = Instant::now();
    let Ok(Poll::Messages {
        messages, cursor, ..
    }) = client
        .poll(&room("lobby"), Some(1), Duration::from_secs(10))
        .await
    else {
        panic!("expected messages");
    };

    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(ids(&messages), [2, 3]);
    assert_eq!(cursor, 3);
    assert!(
        messages
            .iter()
            .all(|m| m.via == common::Via::LongPoll && m.room.as_str() == "lobby")
    );
}

async fn poll_without_after_waits_for_the_next_message(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    app.publish("lobby", "alice", "old").await;
    let client = client(&app.base);
    let waiting = tokio::spawn(async move {
        client
            .poll(&room("lobby"), None, Duration::from_secs(10))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let sent = app.publish("lobby", "alice", "new").await;

    let Ok(Poll::Messages { messages, .. }) = waiting.await.expect("poll task") else {
        panic!("timed out")
    };
    assert_eq!(messages, [sent]);
}

async fn poll_answers_204_within_the_timeout_plus_one_second(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let started = Instant::now();
    let response = app
        .client
        .get(app.url("/rooms/lobby/poll?after=0&timeout=1"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 204);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.bytes().await.expect("body").is_empty());

    let client = client(&app.base);
    let started = Instant::now();
    assert!(matches!(
        client
            .poll(&room("lobby"), Some(0), Duration::from_secs(2))
            .await,
        Ok(Poll::Timeout)
    ));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

async fn poll_timeout_is_capped_by_config(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("LONGPOLL_TIMEOUT_SECS", 1)).await;
    let client = client(&app.base);
    let started = Instant::now();
    assert!(matches!(
        client
            .poll(&room("lobby"), Some(0), Duration::from_secs(30))
            .await,
        Ok(Poll::Timeout)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

async fn a_poller_following_cursors_gets_500_concurrent_messages_once_in_order(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let mut poller = polls(&client(&app.base), "busy", 0);
    let collecting = tokio::spawn(async move {
        let received = poller.messages(500, Duration::from_secs(60)).await;
        (received, poller.duplicates_dropped())
    });

    let posters = (0..4).map(|poster| {
        let (client, url) = (app.client.clone(), app.url("/rooms/busy/messages"));
        tokio::spawn(async move {
            for n in 0..125 {
                let body = json!({"author": format!("poster{poster}"), "message": format!("{poster}-{n}")});
                let response = client.post(&url).json(&body).send().await.expect("sent");
                assert_eq!(response.status(), 201);
            }
        })
    });
    for poster in posters.collect::<Vec<_>>() {
        poster.await.expect("poster");
    }

    let (received, duplicates) = collecting.await.expect("collector");
    assert_eq!(
        ids(&received),
        (1..=500).collect::<Vec<u64>>(),
        "exactly once, in order, contiguous"
    );
    assert_eq!(duplicates, 0, "nothing sent twice");
    for poster in 0..4 {
        let own: Vec<&str> = received
            .iter()
            .filter(|m| m.author == format!("poster{poster}"))
            .map(|m| m.message.as_str())
            .collect();
        let expected: Vec<String> = (0..125).map(|n| format!("{poster}-{n}")).collect();
        assert_eq!(
            own, expected,
            "each poster's messages in the order it sent them"
        );
    }
}

async fn after_older_than_the_ring_is_served_from_history(backend: Backend) {
    let (_redis, app) = start(backend, |b| {
        b.var("HUB_RING_LEN", 5).var("HISTORY_LEN", 100)
    })
    .await;
    app.publish_many("lobby", "m", 20).await;
    // Wait until this instance has heard of all 20 (the ring then holds 16-20).
    app.wait_for_id("lobby", 20).await;

    let Ok(Poll::Messages {
        messages,
        cursor,
        gap,
    }) = client(&app.base)
        .poll(&room("lobby"), Some(2), Duration::from_secs(5))
        .await
    else {
        panic!("expected messages");
    };

    assert_eq!(ids(&messages), (3..=20).collect::<Vec<u64>>());
    assert_eq!(cursor, 20);
    assert!(!gap);
    assert_eq!(messages[0].message, "m3");
}

async fn after_older_than_history_answers_with_a_gap(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("HUB_RING_LEN", 5).var("HISTORY_LEN", 10)).await;
    app.publish_many("lobby", "m", 30).await;
    app.wait_for_id("lobby", 30).await;
    let client = client(&app.base);

    let Ok(Poll::Messages {
        messages,
        cursor,
        gap,
    }) = client
        .poll(&room("lobby"), Some(3), Duration::from_secs(5))
        .await
    else {
        panic!("expected messages");
    };

    assert!(gap, "the cursor is older than everything held");
    let history: Value = app
        .client
        .get(app.url("/rooms/lobby/history?after=3&limit=5"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(history["gap"], true, "history says so too: {history}");
    assert_eq!(history["messages"][0]["id"], 21);
    assert_eq!(
        ids(&messages),
        (21..=30).collect::<Vec<u64>>(),
        "what history still holds, in order"
    );
    assert_eq!(cursor, 30);
    // From the new cursor on, no more gap.
    app.publish("lobby", "alice", "m31").await;
    let Ok(Poll::Messages { messages, gap, .. }) = client
        .poll(&room("lobby"), Some(cursor), Duration::from_secs(5))
        .await
    else {
        panic!("expected m31");
    };
    assert!(!gap);
    assert_eq!(ids(&messages), [31]);
}

async fn after_beyond_the_last_id_answers_with_a_gap(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let first = app.publish("lobby", "alice", "one").await;
    let client = client(&app.base);

    // A cursor from the future (from before the room's ids started over:
    // Redis lost its data, or the room expired) must not wait for ids that
    // will never come, nor skip the room's messages since.
    let Ok(Poll::Messages {
        messages,
        cursor,
        gap,
    }) = client
        .poll(&room("lobby"), Some(500), Duration::from_secs(5))
        .await
    else {
        panic!("a cursor ahead of the room must not be held");
    };

    assert!(gap);
    assert!(messages.is_empty());
    assert_eq!(cursor, 0, "resume before the room's oldest message");
    let next = polls(&client, "lobby", cursor)
        .messages(1, Duration::from_secs(5))
        .await;
    assert_eq!(next, [first]);
}

async fn history_returns_the_latest_or_those_after_a_cursor(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("HUB_RING_LEN", 4)).await;
    app.publish_many("lobby", "m", 60).await;
    app.wait_for_id("lobby", 60).await;

    assert_eq!(
        ids(&app.history("lobby", "").await),
        (11..=60).collect::<Vec<u64>>(),
        "default: latest 50"
    );
    assert_eq!(ids(&app.history("lobby", "limit=3").await), [58, 59, 60]);
    assert_eq!(
        ids(&app.history("lobby", "after=5&limit=3").await),
        [6, 7, 8]
    );
    assert_eq!(
        app.history("lobby", "limit=100000").await.len(),
        60,
        "limit is capped, not refused"
    );
    assert!(app.history("lobby", "after=60").await.is_empty());
    assert!(app.history("empty-room", "").await.is_empty());
}

async fn seed_get_messages_returns_the_next_message_as_one_object(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    app.publish("general", "alice", "before").await;
    let (client, url) = (app.client.clone(), app.url("/get-messages"));
    let waiting = tokio::spawn(async move { client.get(url).send().await.expect("sent") });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let sent = app.publish("general", "bob", "next").await;

    let response = waiting.await.expect("task");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(
        serde_json::from_value::<Message>(body).expect("one Message object"),
        sent
    );
}

async fn seed_get_messages_answers_408_with_json_on_timeout(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("LONGPOLL_TIMEOUT_SECS", 1)).await;
    let started = Instant::now();
    let response = app
        .client
        .get(app.url("/get-messages"))
        .send()
        .await
        .expect("sent");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        response.status(),
        408,
        "never an empty 2xx the seed's client would render"
    );
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["error"], "timeout");
    assert!(body["detail"].is_string());
}

async fn seed_new_messages_answers_201_with_the_message(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let response = app
        .client
        .post(app.url("/new-messages"))
        .json(&json!({"message": "from the seed", "id": 1764000000000_u64}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    let message: Message = response.json().await.expect("a Message");
    assert_eq!(message.room.as_str(), "general");
    assert_eq!(message.message, "from the seed");
    assert_eq!(message.author, "anonymous");
    assert_eq!(message.id, 1, "the client's id is ignored");
    assert_eq!(app.history("general", "").await, [message]);
}

/// Asserts a JSON error answer: status, code, and a human detail.
async fn assert_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> reqwest::header::HeaderMap {
    assert_eq!(response.status(), status, "for {}", response.url());
    let headers = response.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("application/json")),
        "JSON content type"
    );
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    headers
}

async fn bad_requests_get_400_with_a_json_body(backend: Backend) {
    let (_redis, app) = start(backend, |b| b.var("MAX_MESSAGE_CHARS", 10)).await;
    let raw = |body: &'static str| {
        app.client
            .post(app.url("/rooms/lobby/messages"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_error(raw("{not json").await.expect("sent"), 400, "invalid_json").await;
    assert_error(raw("").await.expect("sent"), 400, "invalid_json").await;
    assert_error(
        raw(r#"{"message": 5}"#).await.expect("sent"),
        400,
        "invalid_json",
    )
    .await;
    assert_error(
        raw(r#"["hello"]"#).await.expect("sent"),
        400,
        "invalid_json",
    )
    .await;
    for (body, code) in [
        (json!({"author": "alice"}), "invalid_message"),
        (json!({"message": null}), "invalid_message"),
        (json!({"message": ""}), "invalid_message"),
        (json!({"message": " \n\t "}), "invalid_message"),
        (json!({"message": "12345678901"}), "invalid_message"),
        (json!({"message": "ok", "author": ""}), "invalid_author"),
        (
            json!({"message": "ok", "author": "a".repeat(65)}),
            "invalid_author",
        ),
    ] {
        assert_error(app.post_message("lobby", &body).await, 400, code).await;
    }
    assert_eq!(
        app.post_message("lobby", &json!({"message": "1234567890"}))
            .await
            .status(),
        201
    );
    for query in ["after=-1", "after=abc", "limit=0", "limit=x"] {
        let response = app
            .client
            .get(app.url(&format!("/rooms/lobby/history?{query}")))
            .send()
            .await;
        assert_error(response.expect("sent"), 400, "invalid_query").await;
    }
    for query in ["after=x", "timeout=-1", "timeout=soon"] {
        let response = app
            .client
            .get(app.url(&format!("/rooms/lobby/poll?{query}")))
            .send()
            .await;
        assert_error(response.expect("sent"), 400, "invalid_query").await;
    }
    assert!(
        app.history("lobby", "").await.len() == 1,
        "nothing invalid was stored"
    );
}

async fn bad_rooms_and_routes_get_404_with_a_json_body(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let long_room = "r".repeat(65);
    for path in [
        "/rooms/bad%20room/history",
        "/rooms/a.b/poll",
        &format!("/rooms/{long_room}/history"),
    ] {
        assert_error(
            app.client.get(app.url(path)).send().await.expect("sent"),
            404,
            "invalid_room",
        )
        .await;
    }
    let response = app
        .post_message("bad!room", &json!({"message": "hi"}))
        .await;
    assert_error(response, 404, "invalid_room").await;
    for path in ["/", "/nope", "/rooms/lobby", "/rooms/lobby/unknown"] {
        assert_error(
            app.client.get(app.url(path)).send().await.expect("sent"),
            404,
            "not_found",
        )
        .await;
    }
}

async fn wrong_methods_get_405_with_an_allow_header(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let cases = [
        (reqwest::Method::GET, "/rooms/lobby/messages", "POST"),
        (reqwest::Method::DELETE, "/rooms/lobby/history", "GET"),
        (reqwest::Method::POST, "/rooms/lobby/poll", "GET"),
        (reqwest::Method::PUT, "/get-messages", "GET"),
        (reqwest::Method::GET, "/new-messages", "POST"),
        (reqwest::Method::POST, "/healthz", "GET"),
    ];
    for (method, path, allow) in cases {
        let response = app
            .client
            .request(method, app.url(path))
            .send()
            .await
            .expect("sent");
        let headers = assert_error(response, 405, "method_not_allowed").await;
        assert_eq!(headers["allow"], allow, "{path}");
    }
}

async fn a_1_mib_body_gets_413(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let huge = json!({"message": "x".repeat(1024 * 1024)});
    assert_error(
        app.post_message("lobby", &huge).await,
        413,
        "payload_too_large",
    )
    .await;
    // Also when the size is not announced up front (chunked upload).
    let chunks =
        futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 16 * 1024])));
    let response = app
        .client
        .post(app.url("/rooms/lobby/messages"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("sent");
    assert_error(response, 413, "payload_too_large").await;
}

async fn a_body_that_is_not_json_gets_415(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let url = app.url("/rooms/lobby/messages");
    let plain = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body(r#"{"message":"hi"}"#);
    assert_error(
        plain.send().await.expect("sent"),
        415,
        "unsupported_media_type",
    )
    .await;
    let form = app
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("message=hi");
    assert_error(
        form.send().await.expect("sent"),
        415,
        "unsupported_media_type",
    )
    .await;
    let untyped = app.client.post(&url).body(r#"{"message":"hi"}"#);
    assert_error(
        untyped.send().await.expect("sent"),
        415,
        "unsupported_media_type",
    )
    .await;
}

async fn publishing_too_fast_gets_429_with_retry_after(backend: Backend) {
    let (_redis, app) = start(backend, |b| {
        b.var("PUBLISH_RATE_PER_SEC", 1).var("PUBLISH_BURST", 2)
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            app.post_message("lobby", &json!({"message": "hi"}))
                .await
                .status(),
            201
        );
    }
    let headers = assert_error(
        app.post_message("lobby", &json!({"message": "hi"})).await,
        429,
        "rate_limited",
    )
    .await;
    let retry_after: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(
        app.history("lobby", "").await.len(),
        2,
        "the refused message was not stored"
    );
}

async fn errors_carry_cors_headers(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let response = app
        .client
        .get(app.url("/rooms/bad%20room/history"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert_error(response, 404, "invalid_room").await;

    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/new-messages"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("sent");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
}

async fn a_client_leaving_mid_poll_frees_its_wait(backend: Backend) {
    let (_redis, app) = start(backend, |b| b).await;
    let client = client(&app.base);
    let waiting = tokio::spawn(async move {
        client
            .poll(&room("lobby"), Some(0), Duration::from_secs(30))
            .await
    });
    eventually(Duration::from_secs(5), "the poll to be held", || async {
        (app.metric("chat_connected_clients").await == 1.0).then_some(())
    })
    .await;

    waiting.abort();

    eventually(
        Duration::from_secs(2),
        "the held poll to be freed",
        || async { (app.metric("chat_connected_clients").await == 0.0).then_some(()) },
    )
    .await;
}

async fn shutdown_answers_held_polls_at_once(backend: Backend) {
    let (_redis, mut app) = start(backend, |b| b).await;
    let client = client(&app.base);
    let waiting = tokio::spawn(async move {
        client
            .poll(&room("lobby"), Some(0), Duration::from_secs(30))
            .await
    });
    eventually(Duration::from_secs(5), "the poll to be held", || async {
        (app.metric("chat_connected_clients").await == 1.0).then_some(())
    })
    .await;

    let started = Instant::now();
    let stopping = app.shutdown_token();
    stopping.cancel();

    let answer = waiting.await.expect("task");
    assert!(
        matches!(answer, Ok(Poll::Released)),
        "told to poll again, elsewhere (204 with Connection: close): {answer:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        started.elapsed()
    );
    app.shut_down().await;
}

// --- Redis only -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_posted_on_one_instance_reaches_a_poller_on_another() {
    let redis = RedisServer::start().await;
    let one = AppBuilder::new(longpoll_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    let two = AppBuilder::new(longpoll_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    let client = client(&two.base);
    let waiting = tokio::spawn(async move {
        client
            .poll(&room("lobby"), Some(0), Duration::from_secs(10))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let sent = one.publish("lobby", "alice", "across instances").await;

    let Ok(Poll::Messages { messages, .. }) = waiting.await.expect("task") else {
        panic!("timed out")
    };
    assert_eq!(messages, [sent]);
    assert_eq!(two.history("lobby", "").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_gives_503s_keeps_pollers_and_recovers_without_a_restart() {
    let mut redis = RedisServer::start().await;
    let app = AppBuilder::new(longpoll_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    let client = client(&app.base);
    // A client uses the room while `first` arrives, so this instance holds
    // it in memory when Redis goes.
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .poll(&room("lobby"), Some(0), Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = app.publish("lobby", "alice", "before").await;
    assert!(matches!(
        waiting.await.expect("task"),
        Ok(Poll::Messages { .. })
    ));
    let held = tokio::spawn(async move {
        client
            .poll(&room("lobby"), Some(first.id), Duration::from_secs(30))
            .await
    });

    redis.kill();

    let started = Instant::now();
    let response = app
        .post_message("lobby", &json!({"message": "during"}))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "503 took {:?}",
        started.elapsed()
    );
    let headers = assert_error(response, 503, "broker_unavailable").await;
    assert!(headers.contains_key("retry-after"));
    eventually(Duration::from_secs(5), "/readyz to report 503", || async {
        let status = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .ok()?
            .status();
        (status == 503).then_some(())
    })
    .await;
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    assert!(!held.is_finished(), "the held poll stays held");

    redis.restart().await;

    app.wait_ready().await;
    let after = app.publish_when_possible("lobby", "after").await;
    assert_eq!(
        after.id,
        first.id + 1,
        "ids continue without a gap, though Redis lost its data"
    );
    let Ok(Poll::Messages { messages, .. }) = held.await.expect("task") else {
        panic!("held poll timed out")
    };
    assert_eq!(messages, std::slice::from_ref(&after));
    // History: what this instance still holds in memory survives the loss.
    assert_eq!(ids(&app.history("lobby", "").await), [first.id, after.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_pub_sub_never_delivered_is_filled_from_history() {
    let redis = RedisServer::start().await;
    let app = AppBuilder::new(longpoll_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    let first = app.publish("lobby", "alice", "one").await;
    app.wait_for_id("lobby", first.id).await;

    // Id 2 goes into history without being published, as if pub/sub had
    // dropped it; then id 3 arrives normally.
    redis
        .command(&[
            "XADD",
            "chat:{lobby}:history",
            "2-0",
            "a",
            "bob",
            "m",
            "lost on the wire",
            "t",
            "1",
            "v",
            "sse",
        ])
        .await;
    redis.command(&["SET", "chat:{lobby}:seq", "2"]).await;
    let third = app.publish("lobby", "carol", "three").await;
    assert_eq!(third.id, 3);

    let received = polls(&client(&app.base), "lobby", first.id)
        .messages(2, Duration::from_secs(5))
        .await;
    assert_eq!(ids(&received), [2, 3]);
    assert_eq!(received[0].message, "lost on the wire");
}
