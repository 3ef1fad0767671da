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
    browser.run_with(OPEN_EVENT_SOURCE, json!(path)).await;
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
    let browser = Browser::start_on(&first.url("/healthz")).await;

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
    let browser = Browser::start_on(&app.url("/healthz")).await;

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

/// Opens a WebSocket from the page and records every frame it receives in
/// `window.wsFrames` and how it closed in `window.wsClosed`.
const OPEN_WEBSOCKET: &str = r#"
    window.wsFrames = []; window.wsClosed = null; window.wsOpened = false;
    const socket = new WebSocket(location.origin.replace('http', 'ws') + arguments[0]);
    socket.onopen = () => { window.wsOpened = true; };
    socket.onmessage = (event) => window.wsFrames.push(JSON.parse(event.data));
    socket.onclose = (event) => { window.wsClosed = { code: event.code, reason: event.reason }; };
    window.ws = socket;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_websocket_replays_publishes_and_is_told_to_reconnect_on_shutdown() {
    let redis = RedisServer::start().await;
    let mut app = AppBuilder::new(ws_svc::service())
        .redis(&redis)
        .spawn()
        .await;
    app.publish("web", "alice", "one").await;
    app.publish("web", "alice", "two").await;
    let browser = Browser::start_on(&app.url("/healthz")).await;

    browser
        .run_with(OPEN_WEBSOCKET, json!("/rooms/web/ws?after=0"))
        .await;
    browser.wait_for("window.wsOpened", WAIT).await;
    browser
        .run(r#"window.ws.send(JSON.stringify({type: 'publish', ref: 'b1', author: 'chromium', message: 'from a browser 🙂'}));"#)
        .await;
    let frames = browser
        .wait_for("window.wsFrames.length >= 4 && window.wsFrames", WAIT)
        .await;
    let frames = frames.as_array().expect("frames");
    let messages: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| &f["data"])
        .collect();
    let ack = frames.iter().find(|f| f["type"] == "ack").expect("an ack");
    assert_eq!(
        messages
            .iter()
            .map(|m| m["id"].as_u64().unwrap_or(0))
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(ack["ref"], "b1");
    assert_eq!(ack["id"], messages[2]["id"]);
    assert_eq!(messages[2]["message"], "from a browser 🙂");
    assert_eq!(messages[2]["via"], "ws");

    browser
        .run(r#"window.ws.send(JSON.stringify({type: 'ping'}));"#)
        .await;
    browser
        .wait_for("window.wsFrames.some((f) => f.type === 'pong')", WAIT)
        .await;

    app.shut_down().await;
    let closed = browser.wait_for("window.wsClosed", WAIT).await;
    assert_eq!(closed["code"], 1012, "{closed}");
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_a_foreign_origin_cannot_open_a_websocket() {
    let redis = RedisServer::start().await;
    let app = AppBuilder::new(ws_svc::service())
        .redis(&redis)
        .var("ALLOWED_ORIGINS", "https://chat.example")
        .spawn()
        .await;
    // The page's origin (http://127.0.0.1:<port>) is not in the list.
    let browser = Browser::start_on(&app.url("/healthz")).await;

    browser
        .run_with(OPEN_WEBSOCKET, json!("/rooms/web/ws"))
        .await;

    let closed = browser.wait_for("window.wsClosed", WAIT).await;
    assert_eq!(closed["code"], 1006, "the upgrade was refused: {closed}");
    assert_eq!(browser.run("return window.wsOpened;").await, false);
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_connects_with_a_token_in_the_url_and_is_refused_without_a_good_one() {
    use chat_tests::token::{SECRET, Token};
    let redis = RedisServer::start().await;
    let sse = AppBuilder::new(sse_svc::service())
        .redis(&redis)
        .var("JWT_SECRET", SECRET)
        .spawn()
        .await;
    let ws = AppBuilder::new(ws_svc::service())
        .redis(&redis)
        .var("JWT_SECRET", SECRET)
        .spawn()
        .await;
    let token = Token::for_user("u-1")
        .name("Chromium")
        .rooms(&["web"])
        .hs256();
    let expired = Token::for_user("u-1").expires_in(-5).hs256();
    let browser = Browser::start_on(&sse.url("/healthz")).await;

    // EventSource and WebSocket cannot set headers: the token rides in the URL.
    browser
        .run_with(
            r#"
            const [sseUrl, wsUrl, token, expired] = arguments[0];
            window.events = []; window.frames = []; window.refused = {};
            const source = new EventSource(`${sseUrl}/rooms/web/events?after=0&token=${token}`);
            source.addEventListener('message', (e) => window.events.push(JSON.parse(e.data)));
            const socket = new WebSocket(`${wsUrl}/rooms/web/ws?token=${token}`);
            socket.onmessage = (e) => window.frames.push(JSON.parse(e.data));
            socket.onopen = () => socket.send(JSON.stringify(
                {type: 'publish', ref: 'p', author: 'someone else', message: 'hello with a token'}));
            const badSource = new EventSource(`${sseUrl}/rooms/web/events?token=${expired}`);
            badSource.onerror = () => { window.refused.sse = badSource.readyState; };
            const badSocket = new WebSocket(`${wsUrl}/rooms/web/ws?token=${expired}`);
            badSocket.onclose = (e) => { window.refused.ws = e.code; };
            "#,
            json!([
                sse.base,
                ws.base.replacen("http", "ws", 1),
                token,
                expired
            ]),
        )
        .await;

    let events = browser
        .wait_for("window.events.length >= 1 && window.events", WAIT)
        .await;
    assert_eq!(events[0]["message"], "hello with a token");
    assert_eq!(
        events[0]["author"], "Chromium",
        "the token's name, not the frame's"
    );
    let frames = browser
        .wait_for(
            // The ack and the message come in either order.
            "window.frames.some((f) => f.type === 'ack') \
             && window.frames.some((f) => f.type === 'message') && window.frames",
            WAIT,
        )
        .await;
    assert!(
        frames
            .as_array()
            .expect("frames")
            .iter()
            .any(|f| f["type"] == "message" && f["data"]["author"] == "Chromium")
    );
    let refused = browser
        .wait_for(
            "window.refused.sse !== undefined && window.refused.ws !== undefined && window.refused",
            WAIT,
        )
        .await;
    assert_eq!(
        refused["sse"], 2,
        "the EventSource gave up (CLOSED): {refused}"
    );
    assert_eq!(refused["ws"], 1006, "the upgrade was refused: {refused}");
    browser.quit().await;
}
