//! The system's promise, end to end, with the real binaries: a message
//! posted through any transport reaches every client of every transport, on
//! every instance, once, in order, and survives instance and Redis failures.

use std::time::{Duration, Instant};

use chat_client::{Disconnect, Error, ErrorCode, Gap, Transport, WsConnection};
use chat_tests::client::{client, websocket};
use chat_tests::cluster::Cluster;
use chat_tests::subscriber::Subscriber;
use chat_tests::{eventually, ids};
use common::{Message, Via};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// The ways a message can be published.
#[derive(Debug, Clone, Copy)]
enum Publish {
    /// `POST /rooms/{room}/messages` to an instance of this transport.
    Post(Transport),
    /// A `publish` frame on a WebSocket.
    Frame,
}

/// Publishes through every way in turn, on instance `index` of each.
struct Publisher {
    client: reqwest::Client,
    websocket: WsConnection,
}

impl Publisher {
    async fn new(cluster: &Cluster, room: &str, index: usize) -> Self {
        let base = cluster.base(Transport::Ws, index);
        Publisher {
            client: chat_tests::app::http_client(),
            websocket: websocket(&client(&base), room, None).await,
        }
    }

    /// Publishes `text` and returns its id.
    async fn publish(
        &mut self,
        cluster: &Cluster,
        how: Publish,
        index: usize,
        room: &str,
        text: &str,
    ) -> u64 {
        match how {
            Publish::Post(transport) => {
                let url = format!("{}/rooms/{room}/messages", cluster.base(transport, index));
                let response = self
                    .client
                    .post(url)
                    .json(&json!({"author": "e2e", "message": text}))
                    .send()
                    .await;
                let response = response.expect("sent");
                assert_eq!(response.status(), 201, "publish via {how:?}");
                response.json::<Message>().await.expect("a Message").id
            }
            Publish::Frame => publish_frame(&mut self.websocket, "e2e", text).await,
        }
    }
}

/// Publishes `text` as `author` with a frame on `socket`; the acked id.
async fn publish_frame(socket: &mut WsConnection, author: &str, text: &str) -> u64 {
    let ack = socket
        .publish(chat_client::Publish::new(text).author(author))
        .await
        .expect("an ack");
    // The socket is for publishing: the room's messages are of no interest.
    socket.discard_pending();
    ack.id
}

const EVERY_WAY: [Publish; 4] = [
    Publish::Post(Transport::LongPoll),
    Publish::Post(Transport::Sse),
    Publish::Post(Transport::Ws),
    Publish::Frame,
];

/// What a subscriber must have received: exactly ids 1..=count, in order,
/// none of them sent twice.
fn assert_complete(subscriber: &Subscriber, received: &[Message], count: u64) {
    let expected: Vec<u64> = (1..=count).collect();
    let got = ids(received);
    let seen = subscriber.seen();
    assert!(
        got == expected && seen.duplicates_dropped == 0,
        "{} subscriber: {} messages, first wrong at {:?}, gaps {:?}, {} sent twice",
        subscriber.transport,
        got.len(),
        got.iter().zip(1..).find(|(id, n)| **id != *n),
        seen.gaps,
        seen.duplicates_dropped
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_of_publishing_reaches_every_transport_on_other_instances_once_in_order() {
    let cluster = Cluster::start(2, &[]).await;
    // Subscribers on the second instance of each transport, publishers on
    // the first.
    let subscribers: Vec<Subscriber> = Transport::ALL
        .iter()
        .map(|&t| Subscriber::start(t, &[cluster.base(t, 1)], "matrix", 0))
        .collect();
    let mut publisher = Publisher::new(&cluster, "matrix", 0).await;

    let mut published = Vec::new();
    for round in 0..10 {
        for how in EVERY_WAY {
            let id = publisher
                .publish(&cluster, how, 0, "matrix", &format!("{how:?} #{round}"))
                .await;
            published.push((id, how));
        }
    }

    let reference = subscribers[0].wait_for(40, WAIT).await;
    for subscriber in &subscribers {
        let received = subscriber.wait_for(40, WAIT).await;
        assert_complete(subscriber, &received, 40);
        assert_eq!(
            received, reference,
            "every transport sees the very same messages"
        );
        assert!(subscriber.seen().gaps.is_empty());
    }
    for (message, (id, how)) in reference.iter().zip(&published) {
        assert_eq!(message.id, *id, "the publisher's id is the one delivered");
        let via = match how {
            Publish::Post(Transport::LongPoll) => Via::LongPoll,
            Publish::Post(Transport::Sse) => Via::Sse,
            Publish::Post(Transport::Ws) | Publish::Frame => Via::Ws,
        };
        assert_eq!(message.via, via, "{how:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_concurrent_publishers_and_thirty_subscribers_see_one_identical_complete_sequence() {
    const PER_PUBLISHER: usize = 200;
    let cluster = Cluster::start(2, &[]).await;
    let subscribers: Vec<Subscriber> = Transport::ALL
        .iter()
        .flat_map(|&t| (0..10).map(move |i| (t, i % 2)))
        .map(|(t, instance)| Subscriber::start(t, &cluster.bases_from(t, instance), "crowd", 0))
        .collect();

    // Two publishers per transport, one on each instance.
    let publishers = (0..6).map(|k| {
        let (transport, instance) = (Transport::ALL[k / 2], k % 2);
        let base = cluster.base(transport, instance);
        tokio::spawn(async move {
            let mut socket = match transport {
                Transport::Ws => Some(websocket(&client(&base), "crowd", None).await),
                _ => None,
            };
            let client = chat_tests::app::http_client();
            for n in 0..PER_PUBLISHER {
                let text = format!("{k}:{n}");
                match socket.as_mut() {
                    Some(socket) => {
                        publish_frame(socket, &format!("publisher{k}"), &text).await;
                    }
                    None => {
                        let body = json!({"author": format!("publisher{k}"), "message": text});
                        let response = client
                            .post(format!("{base}/rooms/crowd/messages"))
                            .json(&body)
                            .send()
                            .await;
                        assert_eq!(response.expect("sent").status(), 201);
                    }
                }
            }
        })
    });
    for publisher in futures_util::future::join_all(publishers).await {
        publisher.expect("publisher");
    }

    let total = 6 * PER_PUBLISHER;
    let reference = subscribers[0].wait_for(total, WAIT).await;
    assert_complete(&subscribers[0], &reference, total as u64);
    for k in 0..6 {
        let own: Vec<&str> = reference
            .iter()
            .filter(|m| m.author == format!("publisher{k}"))
            .map(|m| m.message.as_str())
            .collect();
        let sent: Vec<String> = (0..PER_PUBLISHER).map(|n| format!("{k}:{n}")).collect();
        assert_eq!(
            own, sent,
            "publisher {k}'s messages in the order it sent them"
        );
    }
    for subscriber in &subscribers {
        let received = subscriber.wait_for(total, WAIT).await;
        assert!(
            received == reference,
            "a {} subscriber saw a different sequence",
            subscriber.transport
        );
        assert_complete(subscriber, &received, total as u64);
    }
}

/// Publishes `count` messages one after another through instance `index`
/// of each transport in turn, pausing `pace` between them.
fn publish_steadily(
    cluster: &Cluster,
    index: usize,
    room: &str,
    count: usize,
    pace: Duration,
) -> tokio::task::JoinHandle<()> {
    let bases: Vec<String> = Transport::ALL
        .iter()
        .map(|&t| cluster.base(t, index))
        .collect();
    let room = room.to_owned();
    tokio::spawn(async move {
        let client = chat_tests::app::http_client();
        for n in 0..count {
            let url = format!("{}/rooms/{room}/messages", bases[n % bases.len()]);
            let response = client
                .post(url)
                .json(&json!({"message": format!("steady {n}")}))
                .send()
                .await;
            assert_eq!(response.expect("sent").status(), 201);
            tokio::time::sleep(pace).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_instance_reconnect_elsewhere_and_miss_nothing() {
    let mut cluster = Cluster::start(2, &[]).await;
    // Three subscribers per transport, all on instance 0 first.
    let subscribers: Vec<Subscriber> = Transport::ALL
        .iter()
        .flat_map(|&t| std::iter::repeat_n(t, 3))
        .map(|t| Subscriber::start(t, &cluster.bases_from(t, 0), "survive", 0))
        .collect();
    let publishing = publish_steadily(&cluster, 1, "survive", 300, Duration::from_millis(10));
    subscribers[0].wait_for(100, WAIT).await;

    for transport in Transport::ALL {
        cluster.instance_mut(transport, 0).kill();
    }

    publishing.await.expect("publisher");
    for subscriber in &subscribers {
        let received = subscriber.wait_for(300, WAIT).await;
        assert_complete(subscriber, &received, 300);
        assert!(
            !subscriber.seen().disconnections.is_empty(),
            "a {} subscriber never noticed its instance died",
            subscriber.transport
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_instance_exits_within_5_s_and_tells_its_clients_to_reconnect() {
    let mut cluster = Cluster::start(2, &[]).await;
    let subscribers: Vec<Subscriber> = Transport::ALL
        .iter()
        .map(|&t| Subscriber::start(t, &cluster.bases_from(t, 0), "restart", 0))
        .collect();
    for transport in Transport::ALL {
        let instance = cluster.instance(transport, 0);
        eventually(WAIT, "the subscriber to be connected", || async {
            (instance.metric("chat_connected_clients").await >= 1.0).then_some(())
        })
        .await;
    }
    let publishing = publish_steadily(&cluster, 1, "restart", 200, Duration::from_millis(10));
    subscribers[0].wait_for(50, WAIT).await;

    let terminated = Instant::now();
    for transport in Transport::ALL {
        cluster.instance(transport, 0).signal_terminate();
    }
    for transport in Transport::ALL {
        cluster
            .instance_mut(transport, 0)
            .wait_exit(Duration::from_secs(5))
            .await;
    }
    assert!(
        terminated.elapsed() < Duration::from_secs(5),
        "took {:?}",
        terminated.elapsed()
    );

    // Each was told to go elsewhere in its transport's own way.
    for subscriber in &subscribers {
        let transport = subscriber.transport;
        subscriber
            .wait_for_disconnection(WAIT, |why| match transport {
                Transport::LongPoll => *why == Disconnect::PollReleased,
                Transport::Sse => *why == Disconnect::StreamEnded,
                Transport::Ws => matches!(why, Disconnect::Closed { code: 1012, .. }),
            })
            .await;
    }
    publishing.await.expect("publisher");
    for subscriber in &subscribers {
        let received = subscriber.wait_for(200, WAIT).await;
        assert_complete(subscriber, &received, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_everything_services_recover_ids_continue_and_nobody_stalls() {
    let mut cluster = Cluster::start(2, &[]).await;
    let subscribers: Vec<Subscriber> = Transport::ALL
        .iter()
        .flat_map(|&t| [0, 1].map(|i| (t, i)))
        .map(|(t, i)| Subscriber::start(t, &[cluster.base(t, i)], "outage", 0))
        .collect();
    let mut publisher = Publisher::new(&cluster, "outage", 0).await;
    for n in 0..10 {
        publisher
            .publish(
                &cluster,
                EVERY_WAY[n % 4],
                n % 2,
                "outage",
                &format!("before {n}"),
            )
            .await;
    }
    for subscriber in &subscribers {
        subscriber.wait_for(10, WAIT).await;
    }

    cluster.redis.kill();

    // Publishes fail fast and store nothing.
    let client = chat_tests::app::http_client();
    for transport in Transport::ALL {
        let started = Instant::now();
        let url = format!("{}/rooms/outage/messages", cluster.base(transport, 0));
        let response = client
            .post(url)
            .json(&json!({"message": "lost"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 503, "{transport:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    let refused = publisher
        .websocket
        .publish(chat_client::Publish::new("lost"))
        .await;
    assert!(
        matches!(&refused, Err(Error::Rejected(body)) if body.error == ErrorCode::BrokerUnavailable),
        "{refused:?}"
    );

    // Redis comes back on the same port, empty, as a restarted cache would.
    cluster.redis.restart().await;
    cluster.wait_ready(WAIT).await;

    // Ids continue where they were: no client waits for an id that will
    // never come, and none sees the refused messages.
    let mut after = Vec::new();
    for n in 0..10 {
        let url = format!(
            "{}/rooms/outage/messages",
            cluster.base(Transport::ALL[n % 3], n % 2)
        );
        let id = eventually(WAIT, "publishing to work again", || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let response = client
                    .post(url)
                    .json(&json!({"message": format!("after {n}")}))
                    .send()
                    .await
                    .ok()?;
                let stored = response.status() == 201;
                if stored {
                    response.json::<Message>().await.ok()
                } else {
                    None
                }
            }
        })
        .await
        .id;
        after.push(id);
    }
    assert_eq!(
        after,
        (11..=20).collect::<Vec<u64>>(),
        "ids continue without a gap"
    );
    for subscriber in &subscribers {
        let received = subscriber.wait_for(20, WAIT).await;
        assert_complete(subscriber, &received, 20);
        assert!(received.iter().all(|m| m.message != "lost"));
    }

    // A new instance knows nothing and Redis lost the history: a client
    // resuming from an old cursor there is told about the gap at once.
    for transport in Transport::ALL {
        let fresh = cluster.add(transport, &[]).await;
        let late = Subscriber::start(transport, &[cluster.base(transport, fresh)], "outage", 2);
        let received = late.wait_for(10, WAIT).await;
        assert_eq!(
            ids(&received),
            (11..=20).collect::<Vec<u64>>(),
            "{transport:?}"
        );
        let gap = Gap {
            after: 2,
            resume_from: 11,
        };
        assert_eq!(late.seen().gaps, [gap], "{transport:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_stay_isolated_under_load() {
    const ROOMS: usize = 5;
    const PER_ROOM: usize = 100;
    let cluster = Cluster::start(1, &[]).await;
    let subscribers: Vec<(usize, Subscriber)> = (0..ROOMS)
        .flat_map(|room| Transport::ALL.map(|t| (room, t)))
        .map(|(room, t)| {
            (
                room,
                Subscriber::start(t, &[cluster.base(t, 0)], &format!("room{room}"), 0),
            )
        })
        .collect();

    let posters = (0..ROOMS).map(|room| {
        let bases: Vec<String> = Transport::ALL.iter().map(|&t| cluster.base(t, 0)).collect();
        tokio::spawn(async move {
            let client = chat_tests::app::http_client();
            for n in 0..PER_ROOM {
                let url = format!("{}/rooms/room{room}/messages", bases[n % bases.len()]);
                let body = json!({"message": format!("room{room} #{n}")});
                assert_eq!(
                    client
                        .post(url)
                        .json(&body)
                        .send()
                        .await
                        .expect("sent")
                        .status(),
                    201
                );
            }
        })
    });
    for poster in futures_util::future::join_all(posters).await {
        poster.expect("poster");
    }

    for (room, subscriber) in &subscribers {
        let received = subscriber.wait_for(PER_ROOM, WAIT).await;
        assert_complete(subscriber, &received, PER_ROOM as u64);
        let name = format!("room{room}");
        assert!(
            received.iter().all(|m| m.room.as_str() == name),
            "only its own room"
        );
        let texts: Vec<String> = received.iter().map(|m| m.message.clone()).collect();
        assert_eq!(
            texts,
            (0..PER_ROOM)
                .map(|n| format!("{name} #{n}"))
                .collect::<Vec<_>>()
        );
        // And nothing more arrives later, nor anything again.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let seen = subscriber.seen();
        assert_eq!(
            (seen.messages.len(), seen.duplicates_dropped),
            (PER_ROOM, 0)
        );
    }
}

/// Requests a client should never send, each answered with its own 4xx (or
/// the connection closed): not HTTP at all, broken framing, bad JSON, wrong
/// types, bad rooms and methods, a broken header, a broken upgrade.
fn malformed_request(kind: usize) -> Vec<u8> {
    let post = |content_type: &str, body: &str| {
        format!(
            "POST /rooms/steady/messages HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let text = match kind % 11 {
        0 => "\x16\x03\x01\x02\x00 not HTTP at all\r\n\r\n".to_owned(),
        1 => "GET /rooms/steady/history HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n".to_owned(),
        2 => post("application/json", "{not json"),
        3 => post("text/plain", r#"{"message":"hi"}"#),
        4 => "POST /rooms/steady/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1048576\r\n\r\n{\"message\":\""
            .to_owned(),
        5 => "GET /rooms/bad%20room/history HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        6 => "PATCH /rooms/steady/messages HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        7 => "GET /rooms/steady/history?after=-1&limit=x HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
        8 => "GET /healthz HTTP/1.1\r\nHost: x\r\nthis header line has no colon\r\n\r\n".to_owned(),
        9 => "GET /rooms/steady/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n"
            .to_owned(),
        _ => "POST /rooms/steady/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
            .to_owned(),
    };
    text.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_at_volume_does_not_disturb_a_valid_subscriber() {
    const MALFORMED: usize = 500;
    const HALF_OPEN: usize = 200;
    let cluster = Cluster::start(1, &[]).await;
    let subscribers =
        Transport::ALL.map(|t| Subscriber::start(t, &[cluster.base(t, 0)], "steady", 0));
    let ports: Vec<u16> = Transport::ALL
        .iter()
        .map(|&t| cluster.instance(t, 0).port)
        .collect();

    // Half-open connections: half stop in the middle of a request head,
    // half never send a byte. They are held through the whole attack.
    let mut half_open = Vec::new();
    for &port in &ports {
        for n in 0..HALF_OPEN {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            if n % 2 == 0 {
                use tokio::io::AsyncWriteExt;
                stream
                    .write_all(b"GET /rooms/steady/poll HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .expect("partial head");
            }
            half_open.push(stream);
        }
    }

    let publishing = publish_steadily(&cluster, 0, "steady", 200, Duration::from_millis(15));
    let attacks = ports.iter().flat_map(|&port| {
        (0..25).map(move |worker| {
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for n in 0..MALFORMED / 25 {
                    let request = malformed_request(worker * MALFORMED / 25 + n);
                    statuses.push(
                        chat_tests::raw::exchange(port, &request, Duration::from_secs(10)).await,
                    );
                }
                statuses
            })
        })
    });
    let statuses: Vec<u16> = futures_util::future::join_all(attacks.collect::<Vec<_>>())
        .await
        .into_iter()
        .flat_map(|worker| worker.expect("attacker"))
        .collect();
    publishing.await.expect("publisher");

    assert_eq!(statuses.len(), 3 * MALFORMED);
    let mut histogram = std::collections::BTreeMap::new();
    for status in &statuses {
        *histogram.entry(*status).or_insert(0) += 1;
    }
    eprintln!(
        "answers to {} malformed requests (0: closed without one): {histogram:?}",
        statuses.len()
    );
    assert!(
        statuses
            .iter()
            .all(|status| *status == 0 || (400..500).contains(status)),
        "every one refused with a 4xx (or the connection closed): {histogram:?}"
    );
    for subscriber in &subscribers {
        let received = subscriber.wait_for(200, WAIT).await;
        assert_complete(subscriber, &received, 200);
        assert!(
            subscriber.seen().disconnections.is_empty(),
            "the valid subscriber was never cut off"
        );
    }
    cluster.wait_ready(WAIT).await;

    // The server does not keep half-open connections forever: each is
    // answered 408 or closed once the request-head timeout passes.
    for stream in half_open.iter_mut() {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buffer)).await;
        assert!(
            read.is_ok(),
            "a half-open connection is still held open by the server"
        );
    }
}
