//! An instance cut off from Redis while the others are fine (a partition):
//! it stops saying it is ready at once, and after `BROKER_LOSS_GRACE_SECS`
//! sends its clients elsewhere, where they resume and miss nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chat_client::{Client, Event, Message, RoomName, Start, Transport};
use chat_tests::process::ServiceProcess;
use chat_tests::{RedisServer, eventually};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

const WITHIN: Duration = Duration::from_secs(20);

/// A TCP proxy to Redis that the test can cut: every connection through it
/// is dropped, and new ones refused, until it is mended.
struct Link {
    port: u16,
    cut: Arc<AtomicBool>,
    /// Connections being forwarded now.
    open: Arc<AtomicUsize>,
}

impl Link {
    async fn to(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let watched = Arc::clone(&cut);
        let counted = Arc::clone(&open);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                // Counted before the check, so a cut that sees no
                // connection open also sees none that is about to be.
                let open = Open::count(&counted);
                if watched.load(Ordering::SeqCst) {
                    continue;
                }
                let watched = Arc::clone(&watched);
                tokio::spawn(async move {
                    let _open = open;
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let forward = async {
                        tokio::select! {
                            _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
                            _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
                        }
                    };
                    let severed = async {
                        while !watched.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    // Either way the connection ends: both halves drop.
                    tokio::select! {
                        () = forward => {}
                        () = severed => {}
                    }
                });
            }
        });
        Link { port, cut, open }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Cuts the link, and returns once no connection goes through it: from
    /// then on the instance behind it hears nothing from Redis.
    async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        eventually(
            Duration::from_secs(5),
            "every link connection gone",
            || async { (self.open.load(Ordering::SeqCst) == 0).then_some(()) },
        )
        .await;
    }

    fn mend(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// One connection through the link, counted while it lives (its socket
/// halves drop before it does).
struct Open(Arc<AtomicUsize>);

impl Open {
    fn count(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        Open(Arc::clone(open))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn ready(service: &ServiceProcess) -> u16 {
    reqwest::get(service.url("/readyz"))
        .await
        .map_or(0, |response| response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_redis_sends_its_clients_elsewhere_and_they_miss_nothing() {
    let redis = RedisServer::start().await;
    let link = Link::to(redis.port()).await;
    let grace = [("BROKER_LOSS_GRACE_SECS", "2".to_owned())];
    for transport in Transport::ALL {
        let binary = format!("{}-svc", transport.as_str());
        let cut_off = ServiceProcess::start(
            &binary,
            None,
            &[grace[0].clone(), ("REDIS_URL", link.url())],
        )
        .await;
        let healthy = ServiceProcess::start(&binary, Some(&redis), &grace).await;
        let room = RoomName::parse(&format!("partition-{}", transport.as_str())).expect("a room");

        // A client on the instance about to be cut off, which knows the
        // other one too (as a load balancer would send it there).
        let client = Client::builder()
            .bases([cut_off.base.clone(), healthy.base.clone()])
            .build()
            .expect("a client");
        let mut subscription = client.subscribe(transport, &room, Start::After(0));
        let publisher = reqwest::Client::new();
        let publish = |text: String| {
            let request = publisher
                .post(healthy.url(&format!("/rooms/{room}/messages")))
                .json(&json!({ "message": text }));
            async move {
                let response = request.send().await.expect("sent");
                assert_eq!(response.status(), 201);
                response.json::<Message>().await.expect("a message")
            }
        };
        let sent_before = publish("before".into()).await;
        // Connected to the instance about to be cut off, and live.
        let mut received = Vec::new();
        while received.is_empty() {
            match tokio::time::timeout(WITHIN, subscription.next()).await {
                Ok(Some(Event::Message(message))) => received.push(message),
                Ok(Some(Event::Connected { base })) => {
                    assert_eq!(base.as_str().trim_end_matches('/'), cut_off.base);
                }
                other => panic!("{transport}: before the cut: {other:?}"),
            }
        }
        let mut sent = vec![sent_before];

        let cut_at = std::time::Instant::now();
        link.cut().await;
        eventually(Duration::from_secs(5), "/readyz to say 503", || async {
            (ready(&cut_off).await == 503).then_some(())
        })
        .await;
        for n in 0..5 {
            sent.push(publish(format!("during-{n}")).await);
        }

        // The client is sent to the healthy instance and gets everything.
        let mut moved = false;
        let deadline = tokio::time::Instant::now() + WITHIN;
        while received.len() < sent.len() {
            let event = tokio::time::timeout_at(deadline, subscription.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{transport}: {} of {} messages, moved: {moved}",
                        received.len(),
                        sent.len()
                    )
                })
                .expect("the subscription goes on");
            match event {
                Event::Message(message) => received.push(message),
                Event::Disconnected { base, reason } => {
                    let left = base.as_str().trim_end_matches('/') == cut_off.base;
                    if left && !moved {
                        assert!(
                            cut_at.elapsed() >= Duration::from_secs(2),
                            "{transport}: sent away after the grace, not {:?} ({reason:?})",
                            cut_at.elapsed()
                        );
                    }
                    moved |= left;
                }
                Event::Gap(gap) => panic!("{transport}: nothing was lost, yet a gap {gap:?}"),
                Event::Connected { .. } => {}
            }
        }
        assert!(moved, "{transport}: the cut-off instance let its client go");
        assert_eq!(received, sent, "{transport}: every message once, in order");
        assert_eq!(subscription.duplicates_dropped(), 0);

        // Mended, the instance is ready again and takes clients.
        link.mend();
        eventually(Duration::from_secs(10), "/readyz back to 200", || async {
            (ready(&cut_off).await == 200).then_some(())
        })
        .await;
    }
}
