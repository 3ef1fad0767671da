//! Connection churn: connections a client ends are gone at once, so a
//! reconnect storm frees what it held right away.

use std::time::{Duration, Instant};

use chat_tests::{AppBuilder, Backend};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_the_client_closes_is_gone_within_milliseconds() {
    let (_redis, app) = AppBuilder::new(ws_svc::service())
        .spawn_on(Backend::Memory)
        .await;
    let url = format!("{}/rooms/churn/ws", app.base.replacen("http", "ws", 1));
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let (mut socket, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("upgraded");
        let started = Instant::now();
        socket
            .send(Frame::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            })))
            .await
            .expect("close sent");
        // The server answers the close, then ends the TCP connection: the
        // stream ends (RFC 6455, 7.1.1: the server closes first).
        let mut answered = None;
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("the server ends the connection")
        {
            if let Ok(Frame::Close(frame)) = frame {
                answered = frame.map(|frame| u16::from(frame.code));
            }
        }
        assert_eq!(answered, Some(1000), "the close is answered with its code");
        slowest = slowest.max(started.elapsed());
    }
    eprintln!("the slowest of 10 closes took {slowest:?}");
    assert!(
        slowest < Duration::from_millis(250),
        "a close took {slowest:?} (it took about a second before)"
    );
    // And nothing is left held.
    chat_tests::eventually(Duration::from_secs(2), "no connection held", || async {
        (app.metric("chat_connected_clients").await == 0.0).then_some(())
    })
    .await;
}
