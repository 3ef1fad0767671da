//! What the client does when things go wrong, against scripted servers:
//! retries that cannot duplicate, errors that come back typed, and
//! subscriptions that resume exactly where they were.

mod fake;

use std::time::Duration;

use chat_client::{
    Backoff, Client, Disconnect, Error, ErrorBody, ErrorCode, Event, Poll, Publish, RoomName,
    Start, Transport, WsConnection,
};
use fake::{Answer, HttpServer, Session, WsServer, event, json, message};
use wire::ws::ServerFrame;
use wire::{HistoryAnswer, PollAnswer};

fn room() -> RoomName {
    RoomName::parse("room").expect("a valid room")
}

/// A client of these bases that backs off for milliseconds, not seconds.
fn client(bases: &[&str]) -> Client {
    Client::builder()
        .bases(bases.iter().copied())
        .backoff(Backoff::new(
            Duration::from_millis(2),
            Duration::from_millis(20),
        ))
        .build()
        .expect("a client")
}

fn error_body(code: ErrorCode, detail: &str) -> String {
    json(&ErrorBody {
        error: code,
        detail: detail.into(),
    })
}

/// The next event, within a few seconds.
async fn next<M: chat_client::Payload>(
    subscription: &mut chat_client::Subscription<M>,
) -> Option<Event<M>> {
    tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .expect("an event within 5 s")
}

#[tokio::test]
async fn a_publish_that_meets_a_503_is_retried_at_the_next_base_with_the_same_key() {
    let unavailable = HttpServer::start(vec![
        Answer::json(503, error_body(ErrorCode::BrokerUnavailable, "down"))
            .with_header("retry-after", "0"),
    ])
    .await;
    let stored = message(7, "hello");
    let available = HttpServer::start(vec![Answer::json(201, json(&stored))]).await;
    let client = client(&[&unavailable.base, &available.base]);

    let published = client
        .publish(&room(), Publish::new("hello").author("tester"))
        .await
        .expect("published at the second base");

    assert_eq!((published.message, published.replayed), (stored, false));
    let (first, second) = (&unavailable.requests()[0], &available.requests()[0]);
    assert_eq!(
        (first.method.as_str(), first.target.as_str()),
        ("POST", "/rooms/room/messages")
    );
    let key = first.header("idempotency-key").expect("a key");
    assert_eq!(second.header("idempotency-key"), Some(key));
    assert_eq!(first.body, r#"{"author":"tester","message":"hello"}"#);
}

#[tokio::test]
async fn a_refused_publish_comes_back_at_once_with_its_error_body() {
    let server = HttpServer::start(vec![Answer::json(
        400,
        error_body(ErrorCode::InvalidMessage, "message is required"),
    )])
    .await;

    let refused = client(&[&server.base])
        .publish(&room(), Publish::new(" "))
        .await;

    let Err(Error::Api(api)) = refused else {
        panic!("an API error, not {refused:?}");
    };
    assert_eq!(
        (api.status, api.code()),
        (400, Some(ErrorCode::InvalidMessage))
    );
    assert_eq!(server.requests().len(), 1, "not retried");
}

#[tokio::test]
async fn a_rate_limited_publish_is_returned_unless_the_caller_opted_in() {
    let limited = || {
        Answer::json(429, error_body(ErrorCode::RateLimited, "slow down"))
            .with_header("retry-after", "0")
    };
    let server = HttpServer::start(vec![limited()]).await;
    let refused = client(&[&server.base])
        .publish(&room(), Publish::new("hi"))
        .await;
    assert!(
        matches!(&refused, Err(Error::Api(api)) if api.status == 429),
        "{refused:?}"
    );

    let server =
        HttpServer::start(vec![limited(), Answer::json(201, json(&message(1, "hi")))]).await;
    let patient = Client::builder()
        .base(server.base.as_str())
        .retry_rate_limited(true)
        .build()
        .expect("a client");
    assert!(patient.publish(&room(), Publish::new("hi")).await.is_ok());
}

#[tokio::test]
async fn a_replayed_publish_says_so() {
    let server = HttpServer::start(vec![
        Answer::json(200, json(&message(3, "hi"))).with_header("idempotent-replayed", "true"),
    ])
    .await;

    let published = client(&[&server.base])
        .publish(&room(), Publish::new("hi"))
        .await
        .expect("published");

    assert!(published.replayed);
}

#[tokio::test]
async fn a_poll_tells_a_timeout_from_a_release() {
    let server = HttpServer::start(vec![
        Answer::empty(204),
        Answer::empty(204).with_header("connection", "close"),
    ])
    .await;
    let client = client(&[&server.base]);

    let first = client.poll(&room(), Some(4), Duration::from_secs(1)).await;
    let second = client.poll(&room(), Some(4), Duration::from_secs(1)).await;

    assert!(matches!(first, Ok(Poll::Timeout)), "{first:?}");
    assert!(matches!(second, Ok(Poll::Released)), "{second:?}");
    assert_eq!(
        server.requests()[0].target,
        "/rooms/room/poll?after=4&timeout=1"
    );
}

#[tokio::test]
async fn a_live_long_poll_subscription_starts_where_the_room_is_and_follows_cursors() {
    let history = HistoryAnswer {
        messages: vec![message(5, "old")],
        gap: false,
    };
    let answer = PollAnswer {
        messages: vec![message(6, "new")],
        cursor: 6,
        gap: false,
    };
    let server = HttpServer::start(vec![
        Answer::json(200, json(&history)),
        Answer::json(200, json(&answer)),
    ])
    .await;
    let client = client(&[&server.base]);
    let mut subscription = client.subscribe(Transport::LongPoll, &room(), Start::Live);

    assert!(matches!(
        next(&mut subscription).await,
        Some(Event::Connected { .. })
    ));
    assert_eq!(
        next(&mut subscription).await,
        Some(Event::Message(message(6, "new")))
    );
    // The subscription works while it is asked for events: ask, and see
    // the poll it sends.
    let requests = tokio::select! {
        event = subscription.next() => panic!("nothing more to deliver, got {event:?}"),
        requests = server.wait_for_requests(3) => requests,
    };
    let targets: Vec<_> = requests.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "/rooms/room/history?limit=1",
            "/rooms/room/poll?after=5&timeout=25",
            "/rooms/room/poll?after=6&timeout=25",
        ]
    );
    assert_eq!(subscription.cursor(), Some(6));
}

#[tokio::test]
async fn an_sse_subscription_resumes_with_last_event_id_and_drops_what_it_had() {
    let (one, two, three) = (message(1, "a"), message(2, "b"), message(3, "c"));
    let server = HttpServer::start(vec![
        Answer::Events {
            body: format!("retry: 3000\n\n{}{}", event(&one), event(&two)),
            hold: false,
        },
        Answer::Events {
            body: format!("{}{}: keepalive\n\n", event(&two), event(&three)),
            hold: true,
        },
    ])
    .await;
    let client = client(&[&server.base]);
    let mut subscription = client.subscribe(Transport::Sse, &room(), Start::After(0));

    let mut seen = Vec::new();
    while seen.len() < 6 {
        seen.push(next(&mut subscription).await.expect("an event"));
    }

    let base = client.bases()[0].clone();
    assert_eq!(
        seen,
        [
            Event::Connected { base: base.clone() },
            Event::Message(one),
            Event::Message(two),
            Event::Disconnected {
                base: base.clone(),
                reason: Disconnect::StreamEnded
            },
            Event::Connected { base },
            Event::Message(three),
        ]
    );
    let requests = server.requests();
    assert_eq!(requests[0].target, "/rooms/room/events?after=0");
    assert_eq!(requests[1].target, "/rooms/room/events");
    assert_eq!(requests[1].header("last-event-id"), Some("2"));
    assert_eq!(subscription.duplicates_dropped(), 1);
    assert_eq!(subscription.cursor(), Some(3));
}

#[tokio::test]
async fn a_subscription_moves_to_the_next_base_when_one_refuses() {
    let down = HttpServer::start(vec![Answer::json(
        503,
        error_body(ErrorCode::ShuttingDown, "stopping"),
    )])
    .await;
    let up = HttpServer::start(vec![Answer::Events {
        body: event(&message(1, "a")),
        hold: true,
    }])
    .await;
    let client = client(&[&down.base, &up.base]);
    let mut subscription = client.subscribe(Transport::Sse, &room(), Start::After(0));

    let Some(Event::Disconnected {
        reason: Disconnect::Status(api),
        ..
    }) = next(&mut subscription).await
    else {
        panic!("the first base refuses");
    };
    assert_eq!(
        (api.status, api.code()),
        (503, Some(ErrorCode::ShuttingDown))
    );
    assert_eq!(
        next(&mut subscription).await,
        Some(Event::Connected {
            base: client.bases()[1].clone()
        })
    );
    assert_eq!(
        next(&mut subscription).await,
        Some(Event::Message(message(1, "a")))
    );
}

#[tokio::test]
async fn a_websocket_subscription_reconnects_after_1012_and_stops_at_1008() {
    let frame = |id, text| {
        json(&ServerFrame::Message {
            data: message(id, text),
        })
    };
    let server = WsServer::start(vec![
        Session {
            frames: vec![frame(1, "a")],
            close: 1012,
        },
        Session {
            frames: vec![frame(1, "a"), frame(2, "b")],
            close: 1008,
        },
    ])
    .await;
    let client = client(&[&server.base]);
    let mut subscription = client.subscribe(Transport::Ws, &room(), Start::After(0));

    let mut seen = Vec::new();
    while let Some(event) = next(&mut subscription).await {
        seen.push(event);
    }

    let messages: Vec<_> = seen
        .iter()
        .filter_map(|event| match event {
            Event::Message(message) => Some(message.id),
            _ => None,
        })
        .collect();
    let closes: Vec<_> = seen
        .iter()
        .filter_map(|event| match event {
            Event::Disconnected {
                reason: Disconnect::Closed { code, .. },
                ..
            } => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(messages, [1, 2]);
    assert_eq!(closes, [1012, 1008]);
    assert_eq!(
        server.targets(),
        ["/rooms/room/ws?after=0", "/rooms/room/ws?after=1"]
    );
    assert_eq!(subscription.duplicates_dropped(), 1);
}

#[tokio::test]
async fn a_refused_upgrade_shows_its_status_and_error_body() {
    let server = HttpServer::start(vec![Answer::json(
        403,
        error_body(ErrorCode::ForbiddenOrigin, "origin not allowed"),
    )])
    .await;
    let client = client(&[&server.base]);

    let refused = WsConnection::connect(&client, &client.bases()[0], &room(), None).await;

    let Err(Error::Api(api)) = refused else {
        panic!("an API error, not {refused:?}");
    };
    assert_eq!(
        (api.status, api.code()),
        (403, Some(ErrorCode::ForbiddenOrigin))
    );
}

#[tokio::test]
async fn a_token_goes_in_the_header_of_requests_and_the_query_of_streams() {
    let server = HttpServer::start(vec![
        Answer::json(
            200,
            json(&HistoryAnswer::<wire::Message> {
                messages: Vec::new(),
                gap: false,
            }),
        ),
        Answer::Events {
            body: String::new(),
            hold: true,
        },
    ])
    .await;
    let client = Client::builder()
        .base(server.base.as_str())
        .token("t0k3n")
        .build()
        .expect("a client");

    client.history(&room(), None, None).await.expect("history");
    let _stream = chat_client::SseConnection::open(
        &client,
        &client.bases()[0],
        &room(),
        chat_client::Resume::Live,
    )
    .await
    .expect("a stream");

    let requests = server.requests();
    assert_eq!(requests[0].header("authorization"), Some("Bearer t0k3n"));
    assert_eq!(requests[1].target, "/rooms/room/events?token=t0k3n");
}
