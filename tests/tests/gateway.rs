//! The gateway's own rules (docs/API.md, "Gateway"): what it keeps from
//! the public, how it answers by itself, and how it re-sends publishes
//! without ever storing one twice. Debian's nginx with the deployed files.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_client::Transport;
use chat_tests::cluster::Cluster;
use chat_tests::gateway::Gateway;
use chat_tests::wait::eventually;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A stand-in for every service: answers each request `201` with a message
/// (but holds event streams open, never answering), and keeps each
/// request's head, to see what the gateway sent.
#[derive(Debug, Clone)]
struct Recorder {
    address: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => request.extend_from_slice(&buffer[..read]),
                        }
                    }
                    let head = String::from_utf8_lossy(&request).into_owned();
                    let holds = head.starts_with("GET /rooms/r/events");
                    recorded.lock().expect("lock").push(head);
                    if holds {
                        // Until the gateway hangs up.
                        let _ = socket.read(&mut buffer).await;
                        return;
                    }
                    let body =
                        r#"{"id":1,"room":"r","author":"a","message":"m","ts":1,"via":"sse"}"#;
                    let answer = format!(
                        "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        Recorder { address, heads }
    }

    /// The gateway in front of this recorder as every service.
    async fn gateway(&self, env: &[(&str, &str)]) -> Gateway {
        Gateway::in_front_of(
            [
                self.address.clone(),
                self.address.clone(),
                self.address.clone(),
            ],
            env,
        )
        .await
    }

    /// The value of `header` in each request received, in order.
    fn header_values(&self, header: &str) -> Vec<Option<String>> {
        let prefix = format!("{}:", header.to_ascii_lowercase());
        self.heads
            .lock()
            .expect("lock")
            .iter()
            .map(|head| {
                head.lines()
                    .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
                    .map(|line| line[prefix.len()..].trim().to_owned())
            })
            .collect()
    }
}

async fn publish(client: &reqwest::Client, gateway: &Gateway, key: Option<&str>) -> u16 {
    let mut request = client
        .post(gateway.url("/rooms/r/messages"))
        .json(&json!({"message": "hi"}));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("sent").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_adds_an_idempotency_key_when_the_client_sends_none() {
    let recorder = Recorder::start().await;
    let gateway = recorder.gateway(&[]).await;
    let client = reqwest::Client::new();

    assert_eq!(publish(&client, &gateway, None).await, 201);
    assert_eq!(publish(&client, &gateway, None).await, 201);
    assert_eq!(publish(&client, &gateway, Some("client-key-7")).await, 201);

    let keys = recorder.header_values("idempotency-key");
    assert_eq!(keys.len(), 3);
    let made: Vec<&str> = keys[..2].iter().flatten().map(String::as_str).collect();
    assert_eq!(made.len(), 2, "every publish carries a key: {keys:?}");
    assert_ne!(made[0], made[1], "one key per request");
    assert!(
        made.iter()
            .all(|key| key.len() <= 64 && key.starts_with("gateway-"))
    );
    assert_eq!(
        keys[2].as_deref(),
        Some("client-key-7"),
        "the client's key is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_metrics_are_not_public() {
    let recorder = Recorder::start().await;
    let gateway = recorder.gateway(&[]).await;
    for path in ["/readyz", "/metrics"] {
        let response = reqwest::get(gateway.url(path)).await.expect("sent");
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "not_found");
    }
    assert!(
        recorder.header_values("host").is_empty(),
        "nothing reached a service"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_answers_follow_allowed_origins() {
    let recorder = Recorder::start().await;
    let gateway = recorder
        .gateway(&[("ALLOWED_ORIGINS", "https://chat.example")])
        .await;
    let client = reqwest::Client::new();
    let allow_origin = |origin: &str| {
        let request = client.get(gateway.url("/metrics")).header("origin", origin);
        async move {
            let response = request.send().await.expect("sent");
            assert_eq!(response.status(), 404);
            response
                .headers()
                .get("access-control-allow-origin")
                .map(|value| value.to_str().unwrap_or_default().to_owned())
        }
    };
    assert_eq!(
        allow_origin("https://chat.example").await.as_deref(),
        Some("https://chat.example")
    );
    assert_eq!(allow_origin("https://evil.example").await, None);

    // With the default (`*`), any origin.
    let open = recorder.gateway(&[]).await;
    let response = client
        .get(open.url("/readyz"))
        .header("origin", "https://anywhere.example")
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|value| value.as_bytes()),
        Some(&b"*"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_limits_publishes_and_connections_per_address_in_json() {
    let recorder = Recorder::start().await;
    let gateway = recorder
        .gateway(&[
            ("GATEWAY_PUBLISH_RATE_PER_SEC", "1"),
            ("GATEWAY_PUBLISH_BURST", "2"),
        ])
        .await;
    let client = reqwest::Client::new();
    let statuses: Vec<u16> =
        futures_util::future::join_all((0..20).map(|_| publish(&client, &gateway, None))).await;
    assert!(statuses.contains(&429), "over the rate: {statuses:?}");
    let response = eventually(Duration::from_secs(10), "a refused publish", || async {
        let response = client
            .post(gateway.url("/rooms/r/messages"))
            .json(&json!({"message": "hi"}))
            .send()
            .await
            .ok()?;
        (response.status() == 429).then_some(response)
    })
    .await;
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"], "rate_limited");

    // Connections: a low cap per address, then a JSON 429 too.
    let capped = recorder
        .gateway(&[("GATEWAY_CONNECTIONS_PER_ADDRESS", "2")])
        .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", capped.port))
            .await
            .expect("connect");
        // A connection counts once its request is being served: these wait
        // on an event stream the stand-in never answers.
        socket
            .write_all(b"GET /rooms/r/events HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        held.push(socket);
    }
    eventually(
        Duration::from_secs(10),
        "both streams held upstream",
        || async {
            let streams = recorder
                .heads
                .lock()
                .expect("lock")
                .iter()
                .filter(|head| head.starts_with("GET /rooms/r/events"))
                .count();
            (streams == 2).then_some(())
        },
    )
    .await;
    let request = b"GET /rooms/r/history HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let status = chat_tests::raw::exchange(capped.port, request, Duration::from_secs(5)).await;
    assert_eq!(
        status, 429,
        "a third connection from the address is refused"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_gateway_cannot_read_get_json_errors() {
    let recorder = Recorder::start().await;
    let gateway = recorder.gateway(&[]).await;
    let client = reqwest::Client::new();
    let long_path = format!("/rooms/{}/history", "a".repeat(20_000));
    let response = client
        .get(gateway.url(&long_path))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 414);
    let body: Value = response.json().await.expect("a JSON 414");
    assert_eq!(body["error"], "bad_request");

    let response = client
        .get(gateway.url("/rooms/r/history"))
        .header("x-huge", "b".repeat(40_000))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("a JSON 400");
    assert_eq!(body["error"], "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_through_the_gateway_while_instances_are_killed_are_stored_once() {
    let mut cluster = Cluster::start(2, &[]).await;
    let gateway = Gateway::start(&cluster).await;

    let publishing = {
        let gateway_url = gateway.base.clone();
        tokio::spawn(async move {
            let gateway = GatewayUrl(gateway_url);
            publish_until_accepted_at(&gateway, 300).await
        })
    };
    // Kill an instance of every service while publishes flow through.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for transport in Transport::ALL {
        cluster.instance_mut(transport, 0).kill();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = publishing.await.expect("publisher");

    let history: Value = reqwest::get(gateway.url("/rooms/failover/history?after=0&limit=500"))
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
    assert_eq!(texts.len(), 300, "each publish stored exactly once");
    let mut unique = texts.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 300, "no message stored twice");
    assert_eq!(stored.len(), 300);
}

/// The gateway's address, for a task that outlives the borrow.
struct GatewayUrl(String);

/// Publishes `count` messages through the gateway, each with its own key,
/// retrying each (with the same key) until it is accepted, as a careful
/// client does after a lost answer.
async fn publish_until_accepted_at(gateway: &GatewayUrl, count: usize) -> HashMap<String, u64> {
    let url = |path: &str| format!("{}{path}", gateway.0);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut stored = HashMap::new();
    for n in 0..count {
        let text = format!("once-{n}");
        let id = eventually(Duration::from_secs(20), "the publish accepted", || {
            let request = client
                .post(url("/rooms/failover/messages"))
                .header("idempotency-key", format!("key-{n}"))
                .json(&json!({ "message": text }));
            async move {
                let response = request.send().await.ok()?;
                if !response.status().is_success() {
                    return None;
                }
                response.json::<Value>().await.ok()?["id"].as_u64()
            }
        })
        .await;
        stored.insert(text, id);
    }
    stored
}
