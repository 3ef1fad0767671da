//! Deployment. There is no Docker engine here, so docker-compose.yml and the
//! Dockerfile are checked by reading them; the gateway runs for real
//! (Debian's nginx, the very files compose mounts) in front of real service
//! processes, and a real browser uses the demo page through it.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chat_client::{Publish, Resume, Transport};
use chat_tests::browser::Browser;
use chat_tests::client::{Receive, events, websocket};
use chat_tests::cluster::Cluster;
use chat_tests::gateway::{Gateway, repository};
use chat_tests::subscriber::Subscriber;
use chat_tests::{eventually, ids};
use common::Message;
use serde_json::{Value, json};
use thirtyfour::By;
use yaml_rust2::{Yaml, YamlLoader};

const WAIT: Duration = Duration::from_secs(15);

fn compose() -> Yaml {
    let text = std::fs::read_to_string(repository().join("docker-compose.yml"))
        .expect("docker-compose.yml");
    YamlLoader::load_from_str(&text)
        .expect("valid YAML")
        .remove(0)
}

/// A mapping with its `<<` merge keys applied (YAML 1.1 merges, which
/// compose supports and this YAML 1.2 parser leaves as plain keys).
fn merged(node: &Yaml) -> HashMap<String, Yaml> {
    let mut fields = HashMap::new();
    let Some(hash) = node.as_hash() else {
        return fields;
    };
    if let Some(base) = hash.get(&Yaml::String("<<".into())) {
        fields.extend(merged(base));
    }
    for (key, value) in hash {
        if let Some(key) = key.as_str().filter(|key| *key != "<<") {
            let value = match (fields.get(key), value) {
                (Some(base @ Yaml::Hash(_)), Yaml::Hash(_)) => {
                    let mut combined = merged(base);
                    combined.extend(merged(value));
                    Yaml::Hash(
                        combined
                            .into_iter()
                            .map(|(k, v)| (Yaml::String(k), v))
                            .collect(),
                    )
                }
                _ => value.clone(),
            };
            fields.insert(key.to_owned(), value);
        }
    }
    fields
}

fn strings(node: &Yaml) -> Vec<String> {
    node.as_vec()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_runs_redis_three_services_and_a_gateway_that_alone_publishes_a_port() {
    let compose = compose();
    let services = merged(&compose["services"]);
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["redis", "longpoll-svc", "sse-svc", "ws-svc", "gateway"])
    );
    for (name, service) in &services {
        let service = merged(service);
        assert_eq!(
            service.contains_key("ports"),
            name == "gateway",
            "{name}: only the gateway publishes a port"
        );
    }
    let gateway = merged(&services["gateway"]);
    assert_eq!(
        strings(&gateway["ports"]),
        [
            "${GATEWAY_PORT:-8080}:8080",
            "${GATEWAY_TLS_PORT:-8443}:8443"
        ]
    );
    // Two networks: the gateway reaches the services, the services Redis,
    // and the gateway never Redis.
    let networks = |name: &str| strings(&merged(&services[name])["networks"]);
    assert_eq!(networks("gateway"), ["edge"]);
    assert_eq!(networks("redis"), ["backend"]);
    for name in ["longpoll-svc", "sse-svc", "ws-svc"] {
        assert_eq!(networks(name), ["edge", "backend"], "{name}");
    }
}

#[test]
fn compose_services_run_their_binary_on_their_port_and_check_their_own_health() {
    let services = merged(&compose()["services"]);
    for (name, port) in [
        ("longpoll-svc", "8081"),
        ("sse-svc", "8082"),
        ("ws-svc", "8083"),
    ] {
        let service = merged(&services[name]);
        assert_eq!(strings(&service["command"]), [name], "{name}");
        assert_eq!(
            strings(&merged(&service["healthcheck"])["test"]),
            ["CMD", name, "--healthcheck"]
        );
        let environment = merged(&service["environment"]);
        assert_eq!(environment["PORT"].as_str(), Some(port), "{name}");
        assert_eq!(
            environment["REDIS_URL"].as_str(),
            Some("redis://redis:6379/0"),
            "{name}"
        );
        let build = merged(&service["build"]);
        assert_eq!(build["dockerfile"].as_str(), Some("deploy/Dockerfile"));
        assert!(
            merged(&service["depends_on"]).contains_key("redis"),
            "{name} waits for Redis"
        );
    }
    let redis = merged(&services["redis"]);
    assert!(
        strings(&redis["command"]).contains(&"--appendonly".to_owned()),
        "history survives a restart"
    );
}

#[test]
fn compose_mounts_gateway_files_that_exist() {
    let services = merged(&compose()["services"]);
    for volume in strings(&merged(&services["gateway"])["volumes"]) {
        let source = volume.split(':').next().expect("a source");
        assert!(
            repository().join(source).exists(),
            "{source} is mounted but missing"
        );
    }
}

#[test]
fn the_dockerfile_builds_every_service_binary_on_the_release_it_runs_on() {
    let dockerfile =
        std::fs::read_to_string(repository().join("deploy/Dockerfile")).expect("Dockerfile");
    for binary in ["longpoll-svc", "sse-svc", "ws-svc"] {
        assert!(
            dockerfile.contains(&format!("--bin {binary}")),
            "{binary} is built"
        );
    }
    // Every image the stages start from is a Debian 12 (bookworm) one:
    // the defaults of the ARGs they name, or an earlier stage.
    let defaults: Vec<&str> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("ARG "))
        .filter(|arg| arg.ends_with("_IMAGE") || arg.contains("_IMAGE="))
        .collect();
    assert!(
        defaults.len() >= 2 && defaults.iter().all(|arg| arg.contains("bookworm")),
        "build and run on the same Debian: {defaults:?}"
    );
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .collect();
    for target in ["AS runtime", "AS from-host", "AS build", "AS from-source"] {
        assert!(
            stages.iter().any(|stage| stage.ends_with(target)),
            "{target}: {stages:?}"
        );
    }
    assert!(
        dockerfile.lines().any(|line| line.starts_with("USER ")),
        "runs as a non-root user"
    );
}

#[test]
fn the_compose_gateway_configuration_is_valid_nginx() {
    // Lay the files out as the gateway container sees them under /etc/nginx.
    let prefix = std::env::temp_dir().join(format!("chat-tests-nginx-{}", std::process::id()));
    std::fs::create_dir_all(prefix.join("chat")).expect("temp dir");
    let nginx_dir = repository().join("deploy/nginx");
    std::fs::copy(
        nginx_dir.join("nginx.compose.conf"),
        prefix.join("nginx.conf"),
    )
    .expect("copy");
    for file in [
        "chat-maps.conf",
        "chat-locations.conf",
        "chat-proxy-headers.conf",
    ] {
        std::fs::copy(nginx_dir.join(file), prefix.join("chat").join(file)).expect("copy");
    }
    let rendered = std::process::Command::new(nginx_dir.join("chat-render.sh"))
        .arg(prefix.join("chat-gen"))
        .status()
        .expect("chat-render.sh runs");
    assert!(rendered.success(), "chat-render.sh failed");
    // The self-signed certificate the gateway makes when none is mounted.
    let certified = std::process::Command::new(nginx_dir.join("chat-tls.sh"))
        .arg(prefix.join("chat-gen"))
        .env("TLS_SOURCE", prefix.join("no-such-dir"))
        .status()
        .expect("chat-tls.sh runs");
    assert!(certified.success(), "chat-tls.sh failed");
    std::fs::write(prefix.join("mime.types"), "types { text/html html; }\n").expect("mime.types");
    let nginx = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .unwrap_or("nginx");
    let output = std::process::Command::new(nginx)
        .args(["-t", "-e", "stderr", "-p"])
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .output()
        .expect("nginx runs (Debian package nginx-light)");
    let _ = std::fs::remove_dir_all(&prefix);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A publish of `size` characters through the gateway gets a JSON 413.
async fn assert_refused_as_too_large(client: &reqwest::Client, gateway: &Gateway, size: usize) {
    let huge = json!({"message": "x".repeat(size)});
    let response = client
        .post(gateway.url("/rooms/gw/messages"))
        .json(&huge)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.expect("JSON")["error"],
        "payload_too_large"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_routes_every_path_to_the_right_service() {
    let cluster = Cluster::start(1, &[]).await;
    let gateway = Gateway::start(&cluster).await;
    let client = chat_tests::app::http_client();

    // The demo page.
    let page = client.get(gateway.url("/")).send().await.expect("sent");
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html"))
    );
    assert!(page.text().await.expect("text").contains("<title>Chat"));

    // An SSE stream through the gateway, open before anything is published:
    // events must come through live, not buffered.
    let through_the_gateway = chat_tests::client::client(&gateway.base);
    let mut stream = events(&through_the_gateway, "gw", Resume::Live).await;
    let mut socket = websocket(&through_the_gateway, "gw", None).await;

    // Publish and history go to any service: over 30 posts, all three.
    let mut via = BTreeSet::new();
    for n in 0..30 {
        let response = client
            .post(gateway.url("/rooms/gw/messages"))
            .json(&json!({"message": format!("through the gateway {n}")}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 201);
        via.insert(
            response
                .json::<Message>()
                .await
                .expect("a Message")
                .via
                .as_str(),
        );
    }
    assert_eq!(via.len(), 3, "publishes spread over the services: {via:?}");
    assert_eq!(stream.messages(30, WAIT).await.len(), 30);
    let ack = socket
        .publish(Publish::new("over the gateway's WebSocket").author("gw"))
        .await
        .expect("an ack");
    assert_eq!(ack.id, 31);
    assert_eq!(
        ids(&socket.messages(31, WAIT).await),
        (1..=31).collect::<Vec<u64>>()
    );
    assert_eq!(stream.messages(1, WAIT).await[0].id, 31);

    let poll = client
        .get(gateway.url("/rooms/gw/poll?after=30&timeout=5"))
        .send()
        .await
        .expect("sent");
    assert_eq!(poll.status(), 200);
    let body: Value = poll.json().await.expect("JSON");
    assert_eq!(body["cursor"], 31);
    let history = client
        .get(gateway.url("/rooms/gw/history?limit=2"))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        history.json::<Value>().await.expect("JSON")["messages"][1]["id"],
        31
    );

    // The seed's aliases.
    let seed = client
        .post(gateway.url("/new-messages"))
        .json(&json!({"message": "seed", "id": 1}))
        .send()
        .await;
    assert_eq!(seed.expect("sent").status(), 201);

    // Errors are the services' JSON, not the gateway's HTML.
    let missing = client
        .get(gateway.url("/no/such/route"))
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.expect("JSON")["error"],
        "not_found"
    );
    assert_refused_as_too_large(&client, &gateway, 1024 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_services_down_the_gateway_fails_over_and_answers_in_the_api_shape() {
    let mut cluster = Cluster::start(1, &[]).await;
    let gateway = Gateway::start(&cluster).await;
    let client = chat_tests::app::http_client();
    cluster.instance_mut(Transport::Sse, 0).kill();
    cluster.instance_mut(Transport::Ws, 0).kill();

    // Browsers' EventSource must not be told to give up: 200 and `retry`.
    let events = client
        .get(gateway.url("/rooms/gw/events"))
        .send()
        .await
        .expect("sent");
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    assert_eq!(&events.bytes().await.expect("body")[..], b"retry: 3000\n\n");

    // Publishes go to whichever service is still up.
    for n in 0..12 {
        let response = client
            .post(gateway.url("/rooms/gw/messages"))
            .json(&json!({"message": format!("m{n}")}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 201, "publish {n} failed over");
    }

    // Nothing up: a JSON 503 that a page on another origin can read.
    cluster.instance_mut(Transport::LongPoll, 0).kill();
    let response = client
        .post(gateway.url("/rooms/gw/messages"))
        .header("origin", "http://localhost:3000")
        .json(&json!({"message": "nobody home"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    assert_eq!(
        response.json::<Value>().await.expect("JSON")["error"],
        "service_unavailable"
    );
    let poll = client
        .get(gateway.url("/rooms/gw/poll?timeout=1"))
        .send()
        .await
        .expect("sent");
    assert_eq!(poll.status(), 503);

    // The gateway's own refusals are JSON too.
    assert_refused_as_too_large(&client, &gateway, 3 * 1024 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_the_gateway_survive_losing_an_instance() {
    let mut cluster = Cluster::start(2, &[]).await;
    let gateway = Gateway::start(&cluster).await;
    // Clients know only the gateway, like browsers.
    let subscribers: Vec<Subscriber> = Transport::ALL
        .iter()
        .flat_map(|&t| std::iter::repeat_n(t, 4))
        .map(|t| Subscriber::start(t, &[&gateway.base], "scaled", 0))
        .collect();
    let client = chat_tests::app::http_client();
    let publish = |n: usize| {
        let (client, url) = (client.clone(), gateway.url("/rooms/scaled/messages"));
        async move {
            let response = client
                .post(url)
                .json(&json!({"message": format!("m{n}")}))
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), 201, "publish {n}");
        }
    };
    for n in 0..50 {
        publish(n).await;
    }
    for subscriber in &subscribers {
        subscriber.wait_for(50, WAIT).await;
    }

    for transport in Transport::ALL {
        cluster.instance_mut(transport, 0).kill();
    }
    // Publishing goes on through the gateway (a POST that hit the dead
    // instance is not replayed, so retry as a client would).
    for n in 50..100 {
        eventually(WAIT, "a publish through the gateway", || {
            let (client, url) = (client.clone(), gateway.url("/rooms/scaled/messages"));
            async move {
                let body = json!({"message": format!("m{n}")});
                let response = client.post(url).json(&body).send().await.ok()?;
                (response.status() == 201).then_some(())
            }
        })
        .await;
    }

    for subscriber in &subscribers {
        let received = subscriber.wait_for(100, WAIT).await;
        assert_eq!(
            ids(&received),
            (1..=100).collect::<Vec<u64>>(),
            "{:?}",
            subscriber.transport
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_sends_and_receives_over_every_transport() {
    let cluster = Cluster::start(1, &[]).await;
    let gateway = Gateway::start(&cluster).await;
    let browser = Browser::start_on(&gateway.url("/")).await;
    let texts = r#"return Array.from(document.querySelectorAll('#messages li .text')).map((e) => e.textContent);"#;
    browser
        .driver
        .find(By::Id("author"))
        .await
        .expect("name field")
        .send_keys("chromium")
        .await
        .expect("typed");

    for (n, transport) in ["longpoll", "sse", "ws"].into_iter().enumerate() {
        browser
            .driver
            .find(By::Id(format!("transport-{transport}")))
            .await
            .expect("radio")
            .click()
            .await
            .expect("click");
        browser
            .wait_for(
                "document.getElementById('status').className === 'live'",
                WAIT,
            )
            .await;
        let text = format!("hello over {transport} <b>not bold</b>");
        let input = browser
            .driver
            .find(By::Id("message-input"))
            .await
            .expect("input");
        input.send_keys(&text).await.expect("typed");
        browser
            .driver
            .find(By::Id("send"))
            .await
            .expect("button")
            .click()
            .await
            .expect("click");
        browser
            .wait_for(
                &format!(
                    "document.querySelectorAll('#messages li[data-id]').length === {}",
                    2 * n + 1
                ),
                WAIT,
            )
            .await;

        // And a message from someone else, over HTTP.
        let other = format!("from elsewhere while on {transport}");
        let response = chat_tests::app::http_client()
            .post(gateway.url("/rooms/general/messages"))
            .json(&json!({"author": "curl", "message": other}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 201);
        browser
            .wait_for(
                &format!(
                    "document.querySelectorAll('#messages li[data-id]').length === {}",
                    2 * n + 2
                ),
                WAIT,
            )
            .await;
        let shown = browser.run(texts).await;
        assert_eq!(
            shown[2 * n],
            json!(text),
            "{transport}: shown as text, exactly"
        );
        assert_eq!(shown[2 * n + 1], json!(other), "{transport}");
    }
    let ids_shown = browser
        .run("return Array.from(document.querySelectorAll('#messages li[data-id]')).map((e) => Number(e.dataset.id));")
        .await;
    assert_eq!(
        ids_shown,
        json!([1, 2, 3, 4, 5, 6]),
        "switching transports neither repeats nor skips"
    );
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_sends_its_token_and_says_when_it_is_refused_or_expired() {
    use chat_tests::token::{Algorithm, SECRET, Token};
    let cluster = Cluster::start(1, &[("JWT_SECRET", SECRET.to_owned())]).await;
    let gateway = Gateway::start(&cluster).await;
    let browser = Browser::start_on(&gateway.url("/")).await;
    let auth = "document.getElementById('status').dataset.auth";
    let set_token = "const field = document.getElementById('token'); \
                     field.value = arguments[0]; field.dispatchEvent(new Event('change'));";
    let choose = |transport: &str| {
        format!("document.getElementById('transport-{transport}').click(); return true;")
    };
    let live = "document.getElementById('status').className === 'live'";

    // Auth is on and the page has no token: it says one is needed.
    browser
        .wait_for(&format!("{auth} === 'missing'"), WAIT)
        .await;

    // With a token, every transport works, and the token's name is the
    // author whatever the Name field says.
    browser
        .run("document.getElementById('author').value = 'someone else'; return true;")
        .await;
    let good = Token::for_user("u-7")
        .name("Chromium")
        .rooms(&["general"])
        .hs256();
    browser.run_with(set_token, json!(good)).await;
    for (n, transport) in ["longpoll", "sse", "ws"].into_iter().enumerate() {
        browser.run(&choose(transport)).await;
        browser.wait_for(live, WAIT).await;
        browser
            .run_with(
                "document.getElementById('message-input').value = arguments[0]; \
                 document.getElementById('composer').requestSubmit(); return true;",
                json!(format!("with a token over {transport}")),
            )
            .await;
        browser
            .wait_for(
                &format!(
                    "document.querySelectorAll('#messages li[data-id]').length === {}",
                    n + 1
                ),
                WAIT,
            )
            .await;
    }
    let authors = browser
        .run("return Array.from(document.querySelectorAll('#messages li .author')).map((e) => e.textContent);")
        .await;
    assert_eq!(authors, json!(["Chromium", "Chromium", "Chromium"]));

    // A token that expires while the page streams: the page says so.
    browser.run(&choose("sse")).await;
    let short = Token::for_user("u-7").expires_in(3).hs256();
    browser.run_with(set_token, json!(short)).await;
    browser.wait_for(live, WAIT).await;
    browser
        .wait_for(&format!("{auth} === 'expired'"), WAIT)
        .await;

    // A forged token, over WebSocket (whose refusal the page cannot read:
    // it asks), and a token for other rooms, over long polling.
    browser.run(&choose("ws")).await;
    let forged = Token::for_user("u-7").signed(Algorithm::HS256, b"not the services' secret");
    browser.run_with(set_token, json!(forged)).await;
    browser
        .wait_for(&format!("{auth} === 'refused'"), WAIT)
        .await;
    let text = browser
        .run("return document.getElementById('status').textContent;")
        .await;
    assert!(
        text.as_str().is_some_and(|t| t.contains("Token refused")),
        "{text}"
    );
    browser.run(&choose("longpoll")).await;
    let elsewhere = Token::for_user("u-7").rooms(&["elsewhere"]).hs256();
    browser.run_with(set_token, json!(elsewhere)).await;
    browser
        .wait_for(&format!("{auth} === 'forbidden'"), WAIT)
        .await;
    browser.quit().await;
}
