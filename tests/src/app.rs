//! A service started in this test process, on a free port, with its real
//! dependencies: the same `Application::build` as the binaries.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::web::Data;
use chat_client::Transport;
use common::config::Env;
use common::http::AppState;
use common::{Application, Message, Service};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{Backend, RedisServer, eventually};

/// Configures a service for a test. Defaults: loopback, a free port, short
/// timeouts; everything else as in production.
#[derive(Debug, Clone)]
pub struct AppBuilder {
    service: Service,
    vars: HashMap<String, String>,
}

impl AppBuilder {
    /// The service of `transport`.
    pub fn for_transport(transport: Transport) -> Self {
        Self::new(match transport {
            Transport::LongPoll => longpoll_svc::service(),
            Transport::Sse => sse_svc::service(),
            Transport::Ws => ws_svc::service(),
        })
    }

    pub fn new(service: Service) -> Self {
        let vars = crate::TEST_DEFAULTS
            .into_iter()
            .chain([("PORT", "0"), ("SHUTDOWN_TIMEOUT_SECS", "2")])
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        AppBuilder { service, vars }
    }

    pub fn var(mut self, name: &str, value: impl ToString) -> Self {
        self.vars.insert(name.to_owned(), value.to_string());
        self
    }

    pub fn redis(self, redis: &RedisServer) -> Self {
        self.var("REDIS_URL", redis.url())
    }

    /// Uses `redis` for [`Backend::Redis`]; the in-process broker otherwise.
    pub fn backend(self, backend: Backend, redis: Option<&RedisServer>) -> Self {
        match (backend, redis) {
            (Backend::Redis, Some(redis)) => self.redis(redis),
            (Backend::Redis, None) => panic!("Backend::Redis needs a RedisServer"),
            (Backend::Memory, _) => self,
        }
    }

    /// Starts the service on `backend`, with a Redis of its own for
    /// [`Backend::Redis`], which the caller must keep alive as long as the
    /// service.
    pub async fn spawn_on(self, backend: Backend) -> (Option<RedisServer>, TestApp) {
        let redis = match backend {
            Backend::Redis => Some(RedisServer::start().await),
            Backend::Memory => None,
        };
        let app = self.backend(backend, redis.as_ref()).spawn().await;
        (redis, app)
    }

    /// Starts the service and waits until it is ready.
    pub async fn spawn(self) -> TestApp {
        let vars = self.vars;
        let env = Env::from_fn(move |name| vars.get(name).cloned());
        let app = Application::build(&env, self.service)
            .await
            .expect("service starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_token();
        let state = app.state();
        let server = tokio::spawn(app.run_until_stopped());
        let test_app = TestApp {
            base,
            client: http_client(),
            shutdown,
            state,
            server: Some(server),
        };
        test_app.wait_ready().await;
        test_app
    }
}

/// A running service.
#[derive(Debug)]
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    state: Data<AppState>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A plain HTTP client, for requests a test makes by hand (to check a
/// status, a header, a body to the byte): a generous overall timeout, since
/// long polls are held and streams read for seconds.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client builds")
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn wait_ready(&self) {
        eventually(
            Duration::from_secs(10),
            "the service to be ready",
            || async {
                let response = self.client.get(self.url("/readyz")).send().await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
    }

    /// Publishes and returns the stored message; panics unless `201`.
    pub async fn publish(&self, room: &str, author: &str, text: &str) -> Message {
        let response = self
            .post_message(room, &json!({"author": author, "message": text}))
            .await;
        assert_eq!(response.status(), 201, "publish in {room} failed");
        response.json().await.expect("a Message")
    }

    pub async fn post_message(&self, room: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/rooms/{room}/messages")))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Publishes `count` messages, `{prefix}1` and on, one after another;
    /// the stored messages.
    pub async fn publish_many(&self, room: &str, prefix: &str, count: usize) -> Vec<Message> {
        publish_many(&self.base, room, prefix, count).await
    }

    /// Waits until this instance holds `id` in `room` (so a read that
    /// follows sees it): the latest message of history is read from the
    /// instance's own memory once it has it.
    pub async fn wait_for_id(&self, room: &str, id: u64) {
        eventually(
            Duration::from_secs(5),
            &format!("id {id} to reach the instance"),
            || async {
                let latest = self.history(room, "limit=1").await;
                latest.last().is_some_and(|m| m.id >= id).then_some(())
            },
        )
        .await;
    }

    /// `GET /rooms/{room}/history` with an optional query.
    pub async fn history(&self, room: &str, query: &str) -> Vec<Message> {
        let response = self
            .client
            .get(self.url(&format!("/rooms/{room}/history?{query}")))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("JSON");
        serde_json::from_value(body["messages"].clone()).expect("messages")
    }

    /// The value of one series in `/metrics`, e.g. `chat_connected_clients`.
    pub async fn metric(&self, name: &str) -> f64 {
        metric(&self.client, &self.base, name).await
    }

    /// Publishes once the service accepts publishes again (e.g. after Redis
    /// came back), retrying for up to 10 s.
    pub async fn publish_when_possible(&self, room: &str, text: &str) -> Message {
        eventually(
            Duration::from_secs(10),
            "publishing to work again",
            || async {
                let response = self.post_message(room, &json!({"message": text})).await;
                if response.status() == 201 {
                    response.json::<Message>().await.ok()
                } else {
                    None
                }
            },
        )
        .await
    }

    /// Shuts the service down as SIGTERM would, and waits for it to stop.
    pub async fn shut_down(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let stopped = tokio::time::timeout(Duration::from_secs(10), server).await;
            assert!(stopped.is_ok(), "service did not stop within 10 s");
        }
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Publishes `count` messages, `{prefix}1` and on, one after another, at
/// the service at `base`; panics on any answer but `201`. The stored
/// messages.
pub async fn publish_many(base: &str, room: &str, prefix: &str, count: usize) -> Vec<Message> {
    let client = http_client();
    let url = format!("{base}/rooms/{room}/messages");
    let mut sent = Vec::with_capacity(count);
    for n in 1..=count {
        let body = json!({"author": "alice", "message": format!("{prefix}{n}")});
        let response = client.post(&url).json(&body).send().await.expect("sent");
        assert_eq!(response.status(), 201, "publish in {room} failed");
        sent.push(response.json().await.expect("a Message"));
    }
    sent
}

/// Posts `count` messages of `size` characters to `{base}/rooms/{room}/messages`
/// from 4 concurrent posters, as fast as they go; panics on any answer but
/// `201`.
pub async fn flood(base: &str, room: &str, count: usize, size: usize) {
    let client = http_client();
    let text = "y".repeat(size);
    let posters = (0..4).map(|poster| {
        let (client, url, text) = (
            client.clone(),
            format!("{base}/rooms/{room}/messages"),
            text.clone(),
        );
        // The first `count % 4` posters post one more, so all `count` go.
        let share = count / 4 + usize::from(poster < count % 4);
        tokio::spawn(async move {
            for _ in 0..share {
                let body = json!({"author": format!("p{poster}"), "message": text});
                let status = client
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .expect("sent")
                    .status();
                assert_eq!(status, 201);
            }
        })
    });
    for poster in posters.collect::<Vec<_>>() {
        poster.await.expect("poster");
    }
}

/// The value of one series in `{base}/metrics`; panics if it is absent.
pub async fn metric(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| line.split(['{', ' ']).next() == Some(name))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
