//! The transports against a real browser (headless Chromium): what its
//! built-in `EventSource` does is what users get.

use std::time::Duration;

use chat_tests::browser::Browser;
use chat_tests::redis::free_port;
use chat_tests::{AppBuilder, RedisServer};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

/// Opens an `EventSource` in the page and records what it sees in
/// `window.received` (id and message of each event), `window.gaps` and
/// `window.opened` (how many times the connection opened).
const OPEN_EVENT_SOURCE: &str = r#"
    window.received = []; window.gaps = []; window.opened = 0;
    const source = new EventSource(arguments[0]);
    source.onopen = () => { window.opened += 1; };
    source.addEventListener('message', (event) => {
        window.received.push({ id: Number(event.lastEventId), message: JSON.parse(event.data) });
    });
    source.addEventListener('gap', (event) => window.gaps.push(JSON.parse(event.data)));
    window.source = source;
"#;

async fn open_event_source(browser: &Browser, path: &str) {
    browser
        .driver
        .execute(OPEN_EVENT_SOURCE, vec![json!(path)])
        .await
        .expect("EventSource opens");
}

fn ids(received: &Value) -> Vec<u64> {
    received
        .as_array()
        .expect("an array")
        .iter()
        .map(|entry| entry["id"].as_u64().expect("id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_event_source_replays_streams_and_resumes_across_a_restart() {
    let redis = RedisServer::start().await;
    let port = free_port();
    let mut first = AppBuilder::new(sse_svc::service())
        .redis(&redis)
        .var("PORT", port)
        .spawn()
        .await;
    let publisher = AppBuilder::new(sse_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    publisher.publish("web", "alice", "one").await;
    publisher
        .publish("web", "alice", "two <script>alert(1)</script>")
        .await;
    let browser = Browser::start().await;
    browser
        .driver
        .goto(first.url("/healthz"))
        .await
        .expect("page loads");

    open_event_source(&browser, "/rooms/web/events?after=0").await;
    browser.wait_for("window.received.length === 2", WAIT).await;
    publisher.publish("web", "bob", "three, live").await;
    let received = browser
        .wait_for("window.received.length === 3 && window.received", WAIT)
        .await;
    assert_eq!(ids(&received), [1, 2, 3]);
    assert_eq!(
        received[1]["message"]["message"],
        "two <script>alert(1)</script>"
    );

    // The instance restarts: the stream ends, the browser reconnects on its
    // own (after `retry: 3000`) with Last-Event-ID and misses nothing.
    first.shut_down().await;
    publisher.publish("web", "carol", "four, while down").await;
    publisher.publish("web", "carol", "five, while down").await;
    let _second = AppBuilder::new(sse_svc::service())
        .redis(&redis)
        .var("PORT", port)
        .spawn()
        .await;

    let received = browser
        .wait_for("window.received.length >= 5 && window.received", WAIT)
        .await;
    assert_eq!(
        ids(&received),
        [1, 2, 3, 4, 5],
        "each message once, in order"
    );
    assert_eq!(
        browser.run("return window.opened;").await,
        2,
        "it reconnected once"
    );
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_event_source_is_told_about_a_gap() {
    let redis = RedisServer::start().await;
    let app = AppBuilder::new(sse_svc::service())
        .redis(&redis)
        .var("HUB_RING_LEN", 3)
        .var("HISTORY_LEN", 5)
        .spawn()
        .await;
    for n in 1..=12 {
        app.publish("web", "alice", &format!("m{n}")).await;
    }
    let browser = Browser::start().await;
    browser
        .driver
        .goto(app.url("/healthz"))
        .await
        .expect("page loads");

    open_event_source(&browser, "/rooms/web/events?after=2").await;

    let received = browser
        .wait_for("window.received.length === 5 && window.received", WAIT)
        .await;
    assert_eq!(ids(&received), [8, 9, 10, 11, 12]);
    assert_eq!(
        browser.run("return window.gaps;").await,
        json!([{"after": 2, "resume_from": 8}])
    );
    browser.quit().await;
}
