//! The docker-compose deployment on a real Docker engine: docker-compose.yml
//! as it is, with the images scripts/images.sh builds, scaled, killed,
//! restarted, partitioned and used by a real browser over HTTPS and HTTP/2.
//!
//! Each test has a compose project of its own, taken down with its volumes
//! when the test ends, however it ends. They run one at a time (the
//! `compose` test group in .config/nextest.toml). Without a Docker engine
//! they fail, saying so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_client::{Client, IdempotencyKey, Publish, Transport};
use chat_tests::browser::Browser;
use chat_tests::client::{client_builder, client_of, room, websocket};
use chat_tests::compose::{Deployment, Replica};
use chat_tests::subscriber::Subscriber;
use chat_tests::{assert_ids_1_to, eventually};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);

/// Publishes in `room` through `base` (the gateway), one message at a time,
/// every `every`, until stopped; each with a key of its own that its
/// retries reuse, retried until stored (so an answer lost to a kill never
/// loses or doubles a message). Returns the ids stored, in order.
struct Publisher {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<u64>>,
}

impl Publisher {
    fn start(base: &str, room_name: &str, every: Duration) -> Self {
        let client = client_builder(&[base])
            .request_timeout(Duration::from_secs(10))
            .build()
            .expect("a client");
        let room = room(room_name);
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let mut ids = Vec::new();
                let mut number = 0;
                while !stop.load(Ordering::Acquire) {
                    number += 1;
                    let publish = Publish::new(format!("message {number}"))
                        .author("publisher")
                        .key(IdempotencyKey::generate());
                    let mut attempts = 0;
                    let id = loop {
                        match client.publish(&room, publish.clone()).await {
                            Ok(published) => break published.message.id,
                            Err(err) => {
                                attempts += 1;
                                assert!(attempts < 30, "publish {number} keeps failing: {err}");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    };
                    ids.push(id);
                    tokio::time::sleep(every).await;
                }
                ids
            }
        });
        Publisher { stop, task }
    }

    /// Stops, and returns the ids stored.
    async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Release);
        self.task.await.expect("the publisher did not panic")
    }
}

/// Subscribers of every transport through `base`, `each` per transport,
/// in `room_name` from its start.
fn subscribers(base: &str, room_name: &str, each: usize) -> Vec<Subscriber> {
    Transport::ALL
        .into_iter()
        .flat_map(|transport| {
            (0..each).map(move |_| Subscriber::start(transport, &[base], room_name, 0))
        })
        .collect()
}

/// `each` subscribers per transport in `room_name`, and a publisher posting
/// there every 50 ms, once every subscriber has its first messages.
async fn under_load(base: &str, room_name: &str, each: usize) -> (Vec<Subscriber>, Publisher) {
    let clients = subscribers(base, room_name, each);
    let publisher = Publisher::start(base, room_name, Duration::from_millis(50));
    for subscriber in &clients {
        subscriber.wait_for(5, WAIT).await;
    }
    (clients, publisher)
}

/// Waits until every subscriber has 20 messages beyond what the furthest
/// had: they are all live again (after kills, restarts or a partition).
async fn keep_receiving(subscribers: &[Subscriber]) {
    let furthest = subscribers
        .iter()
        .map(|subscriber| subscriber.seen().messages.len())
        .max()
        .unwrap_or(0);
    for subscriber in subscribers {
        subscriber.wait_for(furthest + 20, WAIT).await;
    }
}

/// Every subscriber got exactly the `published` messages (ids 1..=n), in
/// order, no gap announced, nothing sent twice.
async fn assert_all_delivered(subscribers: &[Subscriber], published: &[u64], what: &str) {
    let count = published.len() as u64;
    assert_eq!(
        published,
        (1..=count).collect::<Vec<_>>(),
        "{what}: the ids given to the publisher"
    );
    for subscriber in subscribers {
        let messages = subscriber.wait_for(published.len(), WAIT).await;
        // A moment for anything extra to show.
        let seen = subscriber.seen();
        assert_ids_1_to(
            &messages,
            count,
            &format!("{what}, {}", subscriber.transport),
        );
        assert!(seen.gaps.is_empty(), "{what}: gaps {:?}", seen.gaps);
        assert_eq!(
            seen.duplicates_dropped, 0,
            "{what}: a {} subscriber was sent messages twice",
            subscriber.transport
        );
    }
}

/// Replicas of `service` holding at least one client, with how many.
async fn holding(deployment: &Deployment, service: &str) -> Vec<(Replica, u64)> {
    let mut held = Vec::new();
    for replica in deployment.replicas(service).await {
        let clients = deployment.connected_clients(&replica).await;
        if clients > 0 {
            held.push((replica, clients));
        }
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaled_deployment_spreads_clients_and_survives_kills_and_a_rolling_restart() {
    chat_tests::raise_fd_limit();
    let scale = [("longpoll-svc", 2), ("sse-svc", 3), ("ws-svc", 2)];
    let deployment = Deployment::up("scaled", &scale, &[]).await;
    let gateway = deployment.http.clone();

    // Every replica up and healthy.
    for (service, replicas) in scale {
        let found = deployment.replicas(service).await;
        assert_eq!(found.len(), replicas, "{service}: {found:?}");
        for replica in &found {
            assert_eq!(deployment.health(replica).await, "healthy", "{service}");
            assert_eq!(deployment.ready(replica).await, 200, "{service}");
        }
    }

    // New connections through the gateway spread over every replica: each
    // one's /metrics counts some of them.
    let spread = {
        let clients: Vec<Subscriber> = subscribers(&gateway, "spread", 24);
        for (service, _) in scale {
            // Each replica's log is shown if it gets none.
            for replica in deployment.replicas(service).await {
                deployment.wait_clients(&replica, true, WAIT).await;
            }
            let mut counts = Vec::new();
            for replica in &deployment.replicas(service).await {
                counts.push(deployment.connected_clients(replica).await);
            }
            eprintln!("{service}: connected clients per replica {counts:?}");
        }
        clients
    };
    drop(spread);

    // Every transport through the gateway, publishing through each: POSTs
    // through the gateway (any service), WebSocket publish frames through
    // the gateway, and POSTs to every replica of every service directly.
    let listeners = subscribers(&gateway, "every-transport", 2);
    // Connected before anything is published (they start from 0 anyway:
    // this only makes the test exercise live delivery).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut published = Vec::new();
    let through_gateway = client_of(&[&gateway]);
    let every = room("every-transport");
    for number in 0..10 {
        let sent = through_gateway
            .publish(&every, Publish::new(format!("post {number}")))
            .await
            .expect("published through the gateway");
        published.push(sent.message.id);
    }
    let mut socket = websocket(&through_gateway, "every-transport", None).await;
    for number in 0..10 {
        let ack = socket
            .publish(Publish::new(format!("frame {number}")))
            .await
            .expect("published over the gateway's WebSocket");
        published.push(ack.id);
    }
    socket.discard_pending();
    let _ = socket.close().await;
    for (service, _) in scale {
        for replica in deployment.replicas(service).await {
            let direct = client_of(&[deployment.base(&replica).await]);
            let sent = direct
                .publish(&every, Publish::new(format!("direct to {service}")))
                .await
                .expect("published to a replica directly");
            assert_eq!(
                sent.message.via.as_str(),
                service.trim_end_matches("-svc"),
                "accepted by {service}"
            );
            published.push(sent.message.id);
        }
    }
    assert_all_delivered(&listeners, &published, "every transport").await;
    drop(listeners);

    // docker kill of one replica of each service, mid-stream: the clients
    // resume on another replica and miss nothing.
    let (clients, publisher) = under_load(&gateway, "kill", 3).await;
    let mut killed = Vec::new();
    for (service, _) in scale {
        let victims = eventually(
            WAIT,
            &format!("a {service} replica with clients"),
            || async {
                let held = holding(&deployment, service).await;
                held.into_iter().next()
            },
        )
        .await;
        eprintln!(
            "killing {service} {} ({} clients)",
            victims.0.short(),
            victims.1
        );
        deployment.docker(&["kill", &victims.0.id]).await;
        killed.push(victims.0);
    }
    keep_receiving(&clients).await;
    let published = publisher.finish().await;
    assert_all_delivered(&clients, &published, "killed replicas").await;
    drop(clients);
    for replica in &killed {
        deployment.docker(&["start", &replica.id]).await;
    }
    for replica in &killed {
        deployment.wait_healthy(replica, WAIT).await;
    }

    // A rolling restart of every service, one replica at a time (SIGTERM,
    // then the same container starts again), under load.
    let (clients, publisher) = under_load(&gateway, "rolling", 3).await;
    for (service, _) in scale {
        for replica in deployment.replicas(service).await {
            eprintln!("restarting {service} {}", replica.short());
            deployment
                .docker(&["restart", "-t", "10", &replica.id])
                .await;
            deployment.wait_healthy(&replica, WAIT).await;
        }
    }
    keep_receiving(&clients).await;
    let published = publisher.finish().await;
    assert!(
        published.len() > 100,
        "under load: {} published",
        published.len()
    );
    assert_all_delivered(&clients, &published, "rolling restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_redis_sends_its_clients_elsewhere_and_takes_clients_again() {
    chat_tests::raise_fd_limit();
    let scale = [("longpoll-svc", 2), ("sse-svc", 2), ("ws-svc", 2)];
    let deployment = Deployment::up("partition", &scale, &[]).await;
    let gateway = deployment.http.clone();
    let backend = deployment.network("backend");

    let (clients, publisher) = under_load(&gateway, "partition", 6).await;

    // One replica of each service, holding clients, loses Redis (and only
    // Redis: the gateway still reaches it).
    let mut cut = Vec::new();
    for (service, _) in scale {
        let (replica, count) =
            eventually(WAIT, &format!("a {service} replica with clients"), || {
                let deployment = &deployment;
                async move { holding(deployment, service).await.into_iter().next() }
            })
            .await;
        eprintln!(
            "cutting {service} {} off Redis ({count} clients)",
            replica.short()
        );
        cut.push(replica);
    }
    let started = tokio::time::Instant::now();
    for replica in &cut {
        deployment
            .docker(&["network", "disconnect", &backend, &replica.id])
            .await;
    }
    for replica in &cut {
        deployment
            .wait_ready(replica, 503, Duration::from_secs(10))
            .await;
    }
    // Within the grace (3 s here) and a little, no client is left there.
    for replica in &cut {
        deployment
            .wait_clients(replica, false, Duration::from_secs(15))
            .await;
    }
    eprintln!("cut-off replicas emptied after {:?}", started.elapsed());
    keep_receiving(&clients).await;
    // The streams that were on the cut-off replicas were ended there (held
    // polls were answered, which is no disconnection), and resumed.
    for transport in [Transport::Sse, Transport::Ws] {
        let moved = clients
            .iter()
            .filter(|c| c.transport == transport && !c.seen().disconnections.is_empty())
            .count();
        assert!(moved > 0, "no {transport} subscriber was sent elsewhere");
    }

    // Reconnected, each is ready again and takes new clients.
    for replica in &cut {
        deployment
            .docker(&["network", "connect", &backend, &replica.id])
            .await;
    }
    for replica in &cut {
        deployment.wait_ready(replica, 200, WAIT).await;
    }
    let newcomers = subscribers(&gateway, "partition", 12);
    for replica in &cut {
        deployment.wait_clients(replica, true, WAIT).await;
    }
    let published = publisher.finish().await;
    assert_all_delivered(&clients, &published, "partition").await;
    assert_all_delivered(&newcomers, &published, "after the partition").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_ids_survive_redis_restarting_with_its_volume() {
    let deployment = Deployment::up("redis", &[], &[]).await;
    let client = client_of(&[&deployment.http]);
    let durable = room("durable");
    for number in 1..=20 {
        let sent = client
            .publish(&durable, Publish::new(format!("kept {number}")))
            .await
            .expect("published");
        assert_eq!(sent.message.id, number);
    }
    // A new Redis container on the same volume.
    deployment.compose_ok(&["stop", "-t", "10", "redis"]).await;
    deployment.compose_ok(&["rm", "-f", "redis"]).await;
    deployment
        .compose_ok(&["up", "-d", "--no-deps", "redis"])
        .await;
    deployment.wait_all_healthy(Duration::from_secs(60)).await;

    let history = eventually(WAIT, "the history back", || async {
        client
            .history(&durable, Some(0), Some(100))
            .await
            .ok()
            .map(|history| history.messages)
            .filter(|messages| !messages.is_empty())
    })
    .await;
    assert_ids_1_to(&history, 20, "history after the restart");
    assert_eq!(history[19].message, "kept 20");
    let next = eventually(WAIT, "a publish after the restart", || async {
        client.publish(&durable, Publish::new("after")).await.ok()
    })
    .await;
    assert_eq!(next.message.id, 21, "ids go on where they were");
}

/// Opens an `EventSource` per room in the page; `window.streams[room]`
/// records whether it opened and the messages it got.
const OPEN_STREAMS: &str = r#"
    window.streams = {};
    for (const room of arguments[0]) {
        const state = { open: false, messages: [] };
        const source = new EventSource('/rooms/' + room + '/events');
        source.onopen = () => { state.open = true; };
        source.addEventListener('message', (event) => state.messages.push(JSON.parse(event.data).message));
        window.streams[room] = state;
    }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_holds_ten_live_event_streams_over_https_and_http2() {
    let deployment = Deployment::up("browser", &[], &[]).await;
    let browser = Browser::start_with(&["--ignore-certificate-errors"]).await;
    browser
        .driver
        .goto(format!("{}/", deployment.https))
        .await
        .expect("the demo page loads over HTTPS");
    let protocol = browser
        .run("return performance.getEntriesByType('navigation')[0].nextHopProtocol;")
        .await;
    assert_eq!(protocol, "h2", "the page came over HTTP/2");
    let title = browser.run("return document.title;").await;
    assert!(
        title.as_str().is_some_and(|t| !t.is_empty()),
        "the demo page: {title:?}"
    );

    let rooms: Vec<String> = (1..=10).map(|n| format!("browser-{n}")).collect();
    browser.run_with(OPEN_STREAMS, json!(rooms)).await;
    browser
        .wait_for("Object.values(window.streams).every((s) => s.open)", WAIT)
        .await;
    // Ten streams: over HTTP/1.1 a browser would hold six per origin and
    // leave the rest waiting; over HTTP/2 they share one connection.
    let client = Client::new(&deployment.http).expect("a client");
    for name in &rooms {
        client
            .publish(&room(name), Publish::new(format!("live in {name}")))
            .await
            .expect("published");
    }
    let streams = browser
        .wait_for(
            "Object.values(window.streams).every((s) => s.messages.length === 1) && window.streams",
            WAIT,
        )
        .await;
    for name in &rooms {
        assert_eq!(
            streams[name]["messages"],
            Value::from(vec![format!("live in {name}")]),
            "{name}"
        );
    }
    browser.quit().await;
}
