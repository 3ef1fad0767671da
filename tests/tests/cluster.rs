//! Per-room subscriptions and Redis Cluster (docs/API.md, "Redis Cluster"):
//! a local six-node cluster (three masters, three replicas) from Debian's
//! redis-server, two instances of every service, rooms on every shard.

use std::time::Duration;

use chat_client::Transport;
use chat_tests::process::{ServiceProcess, binary};
use chat_tests::redis_cluster::RedisCluster;
use chat_tests::subscriber::Subscriber;
use chat_tests::{RedisServer, eventually};
use common::Message;
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(20);

/// Two instances of every service on `cluster`.
async fn services(cluster: &RedisCluster) -> Vec<(Transport, Vec<ServiceProcess>)> {
    let vars = [("REDIS_CLUSTER_URLS", cluster.seed_urls())];
    let mut all = Vec::new();
    for transport in Transport::ALL {
        let mut instances = Vec::new();
        for _ in 0..2 {
            instances.push(ServiceProcess::start(binary(transport), None, &vars).await);
        }
        all.push((transport, instances));
    }
    all
}

/// Publishes `text` in `room` through `base`, retrying (with the same
/// idempotency key) while the cluster fails over; the stored message.
async fn publish(client: &reqwest::Client, base: &str, room: &str, text: &str) -> Message {
    eventually(WITHIN, &format!("{text} to be published"), || async {
        let response = client
            .post(format!("{base}/rooms/{room}/messages"))
            .header("idempotency-key", text)
            .json(&json!({ "message": text }))
            .send()
            .await
            .ok()?;
        match response.status().as_u16() {
            200 | 201 => response.json().await.ok(),
            503 => None,
            status => panic!("publishing {text} answered {status}, not 201 or 503"),
        }
    })
    .await
}

/// Asserts `seen` (what `subscriber` received) is `expected`: every
/// message once, in order, and none sent again or out of order (which the
/// subscription drops, and counts).
fn assert_in_order(subscriber: &Subscriber, seen: &[Message], expected: &[Message], who: &str) {
    let ids: Vec<u64> = seen.iter().map(|m| m.id).collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "{who}: ids went backwards or repeated: {ids:?}"
    );
    let dropped = subscriber.seen().duplicates_dropped;
    assert_eq!(dropped, 0, "{who}: ids went backwards or repeated");
    assert_eq!(seen, expected, "{who}: every message once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_fans_out_across_instances_in_rooms_on_every_shard() {
    let cluster = RedisCluster::start().await;
    let services = services(&cluster).await;
    let mut rooms = Vec::new();
    for (n, master) in cluster.masters().await.into_iter().enumerate() {
        rooms.push(cluster.room_on(master, &format!("shard{n}")).await);
    }

    // In every room, a subscriber of every transport on each instance.
    let mut subscribers = Vec::new();
    for room in &rooms {
        for (transport, instances) in &services {
            for instance in instances {
                subscribers.push((
                    room.clone(),
                    Subscriber::start(*transport, &[&instance.base], room, 0),
                ));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Published through every instance of every service, in turn.
    let client = reqwest::Client::new();
    let mut sent = std::collections::HashMap::<String, Vec<Message>>::new();
    for round in 0..4 {
        for room in &rooms {
            for (_, instances) in &services {
                for instance in instances {
                    let text = format!("{room}-{round}-{}", instance.port);
                    let message = publish(&client, &instance.base, room, &text).await;
                    sent.entry(room.clone()).or_default().push(message);
                }
            }
        }
    }
    for (room, subscriber) in &subscribers {
        let expected = &sent[room];
        let seen = subscriber.wait_for(expected.len(), WITHIN).await;
        let who = format!("{} in {room}", subscriber.transport);
        assert_in_order(subscriber, &seen, expected, &who);
    }
    let (_, sse) = &services[1];
    assert_eq!(
        sse[0].metric("chat_rooms_subscribed").await,
        rooms.len() as f64,
        "an instance subscribes to the rooms its clients use"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_hears_only_the_rooms_its_clients_use() {
    // On one Redis and on a cluster alike.
    let redis = RedisServer::start().await;
    let cluster = RedisCluster::start().await;
    for vars in [
        vec![("REDIS_URL", redis.url())],
        vec![("REDIS_CLUSTER_URLS", cluster.seed_urls())],
    ] {
        let listener = ServiceProcess::start("sse-svc", None, &vars).await;
        let publisher = ServiceProcess::start("longpoll-svc", None, &vars).await;
        let watcher = Subscriber::start(Transport::Sse, &[&listener.base], "room-a", 0);
        eventually(WITHIN, "room A subscribed", || async {
            (listener.metric("chat_rooms_subscribed").await == 1.0).then_some(())
        })
        .await;
        let heard_before = listener.metric("chat_messages_received_total").await;

        let client = reqwest::Client::new();
        for n in 0..200 {
            publish(&client, &publisher.base, "room-b", &format!("b-{n}")).await;
        }
        let a = publish(&client, &publisher.base, "room-a", "for-a").await;
        assert_eq!(watcher.wait_for(1, WITHIN).await, [a]);

        let heard = listener.metric("chat_messages_received_total").await - heard_before;
        eprintln!("{vars:?}: the instance heard {heard} of 201 messages (200 in room B)");
        assert_eq!(heard, 1.0, "only room A's message reached the instance");
        assert_eq!(listener.metric("chat_rooms_held").await, 1.0);
        drop(watcher);
        // Its client gone, the instance stops hearing the room.
        eventually(WITHIN, "room A unsubscribed", || async {
            (listener.metric("chat_rooms_subscribed").await == 0.0).then_some(())
        })
        .await;
        assert!(listener.metric("chat_room_unsubscribes_total").await >= 1.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_fails_over_and_every_acknowledged_message_reaches_everyone() {
    let mut cluster = RedisCluster::start().await;
    let services = services(&cluster).await;
    let master = cluster.masters().await[0];
    let room = cluster.room_on(master, "failover").await;
    let subscribers: Vec<Subscriber> = services
        .iter()
        .flat_map(|(transport, instances)| {
            let bases: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();
            let reversed: Vec<String> = bases.iter().rev().cloned().collect();
            [
                Subscriber::start(*transport, &bases, &room, 0),
                Subscriber::start(*transport, &reversed, &room, 0),
            ]
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let client = reqwest::Client::new();
    let bases: Vec<&str> = services
        .iter()
        .flat_map(|(_, instances)| instances.iter().map(|i| i.base.as_str()))
        .collect();
    let mut acknowledged = Vec::new();
    for n in 0..30 {
        let base = bases[n % bases.len()];
        acknowledged.push(publish(&client, base, &room, &format!("before-{n}")).await);
    }
    cluster.wait_replicated(master).await;

    // The room's master dies; its replica takes over after the node
    // timeout. Publishes meanwhile answer 503 (and are retried).
    cluster.kill(master);
    let started = std::time::Instant::now();
    for n in 0..30 {
        let base = bases[n % bases.len()];
        acknowledged.push(publish(&client, base, &room, &format!("after-{n}")).await);
    }
    eprintln!(
        "30 publishes through the failover took {:?}",
        started.elapsed()
    );
    assert_ne!(
        cluster
            .master_of(cluster.slot_of(&format!("chat:{{{room}}}:seq")).await)
            .await,
        master,
        "a replica took over"
    );

    for subscriber in &subscribers {
        let seen = subscriber.wait_for(acknowledged.len(), WITHIN).await;
        let who = subscriber.transport.to_string();
        assert_in_order(subscriber, &seen[..acknowledged.len()], &acknowledged, &who);
    }
}
