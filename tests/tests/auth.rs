//! Authentication and authorization (docs/API.md, "Authentication and
//! authorization") on every transport and the seed's aliases: who may
//! connect, read and publish, as whom, and for how long.

use std::time::Duration;

use chat_client::{Client, Disconnect, Error, ErrorCode, Publish, Resume, SseEvent};
use chat_tests::client::{Receive, client_builder, events, websocket, websocket_refusal};
use chat_tests::process::ServiceProcess;
use chat_tests::raw::RawWebSocket;
use chat_tests::token::{SECRET, Token, key_file};
use chat_tests::{AppBuilder, RedisServer, TestApp, ids};
use common::{Message, Service};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

const SECS: Duration = Duration::from_secs(5);

/// A service with auth on: HS256 with the tests' secret, an issuer and an
/// audience to check, a backend API key.
async fn with_auth(service: Service) -> TestApp {
    AppBuilder::new(service)
        .var("JWT_SECRET", SECRET)
        .var("JWT_ISSUER", "chat-tests")
        .var("JWT_AUDIENCE", "chat")
        .var("PUBLISH_API_KEY", "backend-key-123")
        .var("LONGPOLL_TIMEOUT_SECS", 1)
        .spawn()
        .await
}

/// A token for `user` that the services of [`with_auth`] accept.
fn token(user: &str) -> Token {
    Token::for_user(user).issuer("chat-tests").audience("chat")
}

/// A client of the service at `base` that presents `token` (as
/// `Authorization: Bearer`, and as `?token=` on streams and sockets).
fn client_with(base: &str, token: &str) -> Client {
    client_builder(&[base])
        .token(token)
        .build()
        .expect("a client")
}

/// How a request carries its token.
#[derive(Debug, Clone, Copy)]
enum Carry {
    Header,
    Query,
}

/// One room route: method and path (with a query that keeps held requests
/// short), and whether it upgrades to a WebSocket.
#[derive(Debug, Clone, Copy)]
struct Route {
    method: &'static str,
    path: &'static str,
}

const POLL_ROUTES: [Route; 5] = [
    Route {
        method: "POST",
        path: "/rooms/lobby/messages",
    },
    Route {
        method: "GET",
        path: "/rooms/lobby/history",
    },
    Route {
        method: "GET",
        path: "/rooms/lobby/poll?timeout=0.2",
    },
    Route {
        method: "GET",
        path: "/get-messages",
    },
    Route {
        method: "POST",
        path: "/new-messages",
    },
];
const SSE_ROUTE: Route = Route {
    method: "GET",
    path: "/rooms/lobby/events",
};

/// The status `route` answers with `token` (if any) carried as `carry`.
async fn status_of(app: &TestApp, route: Route, token: Option<&str>, carry: Carry) -> u16 {
    let mut url = app.url(route.path);
    let mut request = match (token, carry) {
        (Some(token), Carry::Query) => {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("token={token}"));
            app.client
                .request(route.method.parse::<Method>().expect("method"), url)
        }
        (Some(token), Carry::Header) => app
            .client
            .request(route.method.parse::<Method>().expect("method"), url)
            .bearer_auth(token),
        (None, _) => app
            .client
            .request(route.method.parse::<Method>().expect("method"), url),
    };
    if route.method == "POST" {
        request = request.json(&json!({"message": "hi"}));
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    if status == 401 {
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|value| value.to_str().ok())
                .map(|value| value.starts_with("Bearer")),
            Some(true),
            "{} {}: a 401 says how to authenticate",
            route.method,
            route.path
        );
        let body: Value = response.json().await.expect("a JSON error");
        assert_eq!(body["error"], "unauthorized");
    }
    status
}

/// The status a WebSocket upgrade gets (101 when it upgraded).
async fn upgrade_status(app: &TestApp, token: Option<&str>, carry: Carry) -> u16 {
    let mut path = "/rooms/lobby/ws".to_owned();
    let mut authorization = None;
    match (token, carry) {
        (Some(token), Carry::Query) => path.push_str(&format!("?token={token}")),
        (Some(token), Carry::Header) => authorization = Some(format!("Bearer {token}")),
        (None, _) => {}
    }
    let headers: Vec<_> = authorization
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    match RawWebSocket::connect(&app.base, &path, &headers).await {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(err) => panic!("upgrade failed without an answer: {err}"),
    }
}

/// Every bad token a client might present, by what is wrong with it.
fn bad_tokens() -> Vec<(&'static str, Option<String>)> {
    vec![
        ("no token", None),
        ("malformed", Some("not-a-token".into())),
        ("malformed, three parts", Some("a.b.c".into())),
        (
            "wrong signature",
            Some(token("alice").signed(
                chat_tests::token::Algorithm::HS256,
                b"some other secret entirely",
            )),
        ),
        ("expired", Some(token("alice").expires_in(-5).hs256())),
        ("not yet valid", Some(token("alice").not_before(60).hs256())),
        (
            "wrong issuer",
            Some(
                Token::for_user("alice")
                    .issuer("someone-else")
                    .audience("chat")
                    .hs256(),
            ),
        ),
        (
            "wrong audience",
            Some(
                Token::for_user("alice")
                    .issuer("chat-tests")
                    .audience("another-app")
                    .hs256(),
            ),
        ),
        ("alg none", Some(token("alice").unsigned())),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_room_route_refuses_a_missing_or_bad_token_with_401() {
    let poll = with_auth(longpoll_svc::service()).await;
    let sse = with_auth(sse_svc::service()).await;
    let ws = with_auth(ws_svc::service()).await;
    for (what, bad) in bad_tokens() {
        for carry in [Carry::Header, Carry::Query] {
            for route in POLL_ROUTES {
                assert_eq!(
                    status_of(&poll, route, bad.as_deref(), carry).await,
                    401,
                    "{what} ({carry:?}) on {} {}",
                    route.method,
                    route.path
                );
            }
            assert_eq!(
                status_of(&sse, SSE_ROUTE, bad.as_deref(), carry).await,
                401,
                "{what} ({carry:?}) on the event stream"
            );
            assert_eq!(
                upgrade_status(&ws, bad.as_deref(), carry).await,
                401,
                "{what} ({carry:?}) on the WebSocket upgrade"
            );
        }
    }
    // Operations stay open: orchestrators carry no tokens.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let status = poll.client.get(poll.url(path)).send().await.expect("sent");
        assert_eq!(status.status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_token_works_in_the_header_and_in_the_query_on_every_route() {
    let poll = with_auth(longpoll_svc::service()).await;
    let sse = with_auth(sse_svc::service()).await;
    let ws = with_auth(ws_svc::service()).await;
    let good = token("alice").hs256();
    for carry in [Carry::Header, Carry::Query] {
        for route in POLL_ROUTES {
            let status = status_of(&poll, route, Some(&good), carry).await;
            assert!(
                [200, 201, 204, 408].contains(&status),
                "{carry:?} on {} {}: {status}",
                route.method,
                route.path
            );
        }
        assert_eq!(status_of(&sse, SSE_ROUTE, Some(&good), carry).await, 200);
        assert_eq!(upgrade_status(&ws, Some(&good), carry).await, 101);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rs256_service_takes_rs256_tokens_and_refuses_hs256_signed_with_its_public_key() {
    let app = AppBuilder::new(sse_svc::service())
        .var("JWT_PUBLIC_KEY_FILE", key_file("rsa-public.pem").display())
        .spawn()
        .await;
    let history = Route {
        method: "GET",
        path: "/rooms/lobby/history",
    };
    let user = Token::for_user("alice");
    assert_eq!(
        status_of(&app, history, Some(&user.rs256()), Carry::Header).await,
        200
    );
    for (what, forged) in [
        (
            "HS256 with the public key",
            user.hs256_with_the_public_key(),
        ),
        ("HS256 with a secret", user.hs256()),
        ("ES256", user.es256()),
        ("alg none", user.unsigned()),
    ] {
        assert_eq!(
            status_of(&app, history, Some(&forged), Carry::Header).await,
            401,
            "{what}"
        );
    }

    let ec = AppBuilder::new(sse_svc::service())
        .var("JWT_PUBLIC_KEY_FILE", key_file("ec-public.pem").display())
        .spawn()
        .await;
    assert_eq!(
        status_of(&ec, history, Some(&user.es256()), Carry::Query).await,
        200
    );
    assert_eq!(
        status_of(&ec, history, Some(&user.rs256()), Carry::Query).await,
        401
    );
}

/// Publishes `text` in `room` with `token`; the answer's status and body.
async fn publish_as(app: &TestApp, room: &str, token: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(&format!("/rooms/{room}/messages")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn read_status(app: &TestApp, room: &str, token: &str) -> u16 {
    app.client
        .get(app.url(&format!("/rooms/{room}/history")))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_patterns_decide_what_a_token_reads_and_publishes() {
    let app = with_auth(longpoll_svc::service()).await;
    let scoped = token("alice")
        .rooms(&["general", "team-*"])
        .read(&["news", "public-*"])
        .hs256();
    for room in ["general", "team-a", "team-"] {
        assert_eq!(read_status(&app, room, &scoped).await, 200, "{room}");
        let (status, _) = publish_as(&app, room, &scoped, json!({"message": "hi"})).await;
        assert_eq!(status, 201, "{room}");
    }
    for room in ["news", "public-1"] {
        assert_eq!(
            read_status(&app, room, &scoped).await,
            200,
            "read-only {room}"
        );
        let (status, body) = publish_as(&app, room, &scoped, json!({"message": "hi"})).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("forbidden_room")),
            "{room}"
        );
    }
    for room in ["generals", "teams", "other"] {
        assert_eq!(read_status(&app, room, &scoped).await, 403, "{room}");
        let (status, _) = publish_as(&app, room, &scoped, json!({"message": "hi"})).await;
        assert_eq!(status, 403, "{room}");
    }
    let everything = token("bob").rooms(&["*"]).hs256();
    assert_eq!(read_status(&app, "anything", &everything).await, 200);
    let unrestricted = token("carol").hs256();
    let (status, _) = publish_as(&app, "anywhere", &unrestricted, json!({"message": "hi"})).await;
    assert_eq!(status, 201);

    // The streaming routes refuse before the stream or upgrade starts.
    let sse = with_auth(sse_svc::service()).await;
    let response = sse
        .client
        .get(sse.url(&format!("/rooms/other/events?token={scoped}")))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 403);
    let ws = with_auth(ws_svc::service()).await;
    let refusal = websocket_refusal(&client_with(&ws.base, &scoped), "other").await;
    assert_eq!(refusal.status, 403, "a forbidden room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_author_is_the_tokens_identity_over_post_and_websocket() {
    let app = with_auth(ws_svc::service()).await;
    let named = token("u-17").name("Alice").hs256();
    let (status, message) = publish_as(
        &app,
        "lobby",
        &named,
        json!({"author": "the president", "message": "hi"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(message["author"], "Alice");
    let unnamed = token("u-18").hs256();
    let (_, message) = publish_as(
        &app,
        "lobby",
        &unnamed,
        json!({"author": "root", "message": "x"}),
    )
    .await;
    assert_eq!(message["author"], "u-18");

    let mut socket = websocket(&client_with(&app.base, &named), "lobby", None).await;
    socket
        .publish(Publish::new("over ws").author("someone else"))
        .await
        .expect("an ack");
    let received = socket.messages(1, SECS).await;
    assert_eq!(received[0].author, "Alice");
    assert_eq!(received[0].message, "over ws");

    // A read-only room refuses a WebSocket publish with an error frame.
    let reader = token("u-19").read(&["lobby"]).hs256();
    let mut socket = websocket(&client_with(&app.base, &reader), "lobby", None).await;
    let refused = socket.publish(Publish::new("may I?")).await;
    assert!(
        matches!(&refused, Err(Error::Rejected(body)) if body.error == ErrorCode::ForbiddenRoom),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_publishes_with_the_api_key_as_anyone() {
    let app = with_auth(longpoll_svc::service()).await;
    let publish = |key: &'static str| {
        app.client
            .post(app.url("/rooms/announcements/messages"))
            .header("x-api-key", key)
            .json(&json!({"author": "System", "message": "maintenance at noon"}))
            .send()
    };
    let response = publish("backend-key-123").await.expect("sent");
    assert_eq!(response.status(), 201);
    let message: Message = response.json().await.expect("a message");
    assert_eq!(message.author, "System");

    let response = publish("backend-key-124").await.expect("sent");
    assert_eq!(response.status(), 401);
    let response = app
        .client
        .get(app.url("/rooms/announcements/history"))
        .header("x-api-key", "backend-key-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401, "the API key only publishes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_budgets_key_on_the_token_subject() {
    let app = AppBuilder::new(longpoll_svc::service())
        .var("JWT_SECRET", SECRET)
        .var("PUBLISH_RATE_PER_SEC", 1)
        .var("PUBLISH_BURST", 2)
        .spawn()
        .await;
    let alice = Token::for_user("alice").hs256();
    let bob = Token::for_user("bob").hs256();
    for _ in 0..2 {
        assert_eq!(
            publish_as(&app, "r", &alice, json!({"message": "a"}))
                .await
                .0,
            201
        );
    }
    assert_eq!(
        publish_as(&app, "r", &alice, json!({"message": "a"}))
            .await
            .0,
        429
    );
    // Bob, from the same address, has his own budget; a second token for
    // Alice shares hers.
    assert_eq!(
        publish_as(&app, "r", &bob, json!({"message": "b"})).await.0,
        201
    );
    let alice_again = Token::for_user("alice").name("Alice").hs256();
    assert_eq!(
        publish_as(&app, "r", &alice_again, json!({"message": "a"}))
            .await
            .0,
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_ends_at_expiry_and_a_fresh_token_resumes_without_loss() {
    let redis = RedisServer::start().await;
    let app = AppBuilder::new(sse_svc::service())
        .redis(&redis)
        .var("JWT_SECRET", SECRET)
        .spawn()
        .await;
    let writer = Token::for_user("writer").hs256();
    let short = Token::for_user("reader").expires_in(2).hs256();
    let mut stream = events(
        &client_with(&app.base, &short),
        "expiring",
        Resume::After(0),
    )
    .await;
    let first = publish_as(&app, "expiring", &writer, json!({"message": "before"}))
        .await
        .1;
    assert_eq!(stream.messages(1, SECS).await[0].message, "before");

    // At `exp`, the stream says so and ends.
    let started = std::time::Instant::now();
    let expired = tokio::time::timeout(SECS, stream.next())
        .await
        .expect("in time");
    assert!(
        matches!(&expired, Ok(Some(SseEvent::Other { event, .. })) if event == chat_client::wire::sse::EXPIRED),
        "an `expired` event: {expired:?}"
    );
    let (messages, ended) = stream.until_end(SECS).await;
    assert!(
        messages.is_empty() && ended == Disconnect::StreamEnded,
        "then the end: {messages:?}, {ended:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));

    // Published meanwhile, then a fresh token and the cursor: nothing lost.
    let missed = publish_as(&app, "expiring", &writer, json!({"message": "while away"}))
        .await
        .1;
    let fresh = Token::for_user("reader").hs256();
    let cursor = stream.last_event_id().expect("a cursor");
    assert_eq!(cursor, first["id"].as_u64().expect("an id"));
    let mut resumed = events(
        &client_with(&app.base, &fresh),
        "expiring",
        Resume::Header(cursor),
    )
    .await;
    let received = resumed.messages(1, SECS).await;
    assert_eq!(received[0].id, missed["id"].as_u64().expect("an id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_closes_with_4001_at_expiry_and_a_fresh_token_resumes_without_loss() {
    let redis = RedisServer::start().await;
    let app = AppBuilder::new(ws_svc::service())
        .redis(&redis)
        .var("JWT_SECRET", SECRET)
        .spawn()
        .await;
    let writer = Token::for_user("writer").hs256();
    let short = Token::for_user("reader").expires_in(2).hs256();
    let mut socket = websocket(&client_with(&app.base, &short), "expiring", Some(0)).await;
    publish_as(&app, "expiring", &writer, json!({"message": "before"})).await;
    let seen = socket.messages(1, SECS).await;

    let (_, ended) = socket.until_end(SECS).await;
    assert!(
        matches!(ended, Disconnect::Closed { code: 4001, .. }),
        "closed at expiry with 4001: {ended:?}"
    );

    let missed = publish_as(&app, "expiring", &writer, json!({"message": "while away"}))
        .await
        .1;
    let fresh = Token::for_user("reader").hs256();
    let mut resumed = websocket(
        &client_with(&app.base, &fresh),
        "expiring",
        Some(seen[0].id),
    )
    .await;
    let received = resumed.messages(1, SECS).await;
    assert_eq!(ids(&received), [missed["id"].as_u64().expect("an id")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_poll_ends_at_expiry_and_the_next_needs_a_fresh_token() {
    let app = AppBuilder::new(longpoll_svc::service())
        .var("JWT_SECRET", SECRET)
        .spawn()
        .await;
    let short = Token::for_user("reader").expires_in(2).hs256();
    let started = std::time::Instant::now();
    let response = app
        .client
        .get(app.url("/rooms/r/poll?timeout=20"))
        .bearer_auth(&short)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 204);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered at expiry"
    );
    let again = app
        .client
        .get(app.url("/rooms/r/poll?timeout=1"))
        .bearer_auth(&short)
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_logs() {
    let redis = RedisServer::start().await;
    let service = ServiceProcess::start_logged(
        "sse-svc",
        Some(&redis),
        &[
            ("JWT_SECRET", SECRET.to_owned()),
            ("RUST_LOG", "debug".to_owned()),
        ],
    )
    .await;
    let good = Token::for_user("alice").hs256();
    let expired = Token::for_user("alice").expires_in(-5).hs256();
    let client = reqwest::Client::new();
    for token in [&good, &expired] {
        let _ = client
            .get(format!(
                "{}/rooms/r/history?after=0&token={token}",
                service.base
            ))
            .send()
            .await
            .expect("sent");
        let _ = client
            .post(format!("{}/rooms/r/messages", service.base))
            .bearer_auth(token)
            .json(&json!({"message": "hi"}))
            .send()
            .await
            .expect("sent");
    }
    let mut stream = client
        .get(format!("{}/rooms/r/events?token={good}", service.base))
        .send()
        .await
        .expect("sent")
        .bytes_stream();
    let _ = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let log = service.log();
    assert!(
        log.contains("token=***"),
        "the access log shows the masked query:\n{log}"
    );
    for token in [&good, &expired] {
        let signature = token.rsplit('.').next().expect("a signature");
        assert!(!log.contains(signature), "a token is in the log:\n{log}");
    }
}
