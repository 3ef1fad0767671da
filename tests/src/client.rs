//! Clients that behave like real ones, because they are: the `chat-client`
//! library's, on `wire`'s types. The protocol is implemented once, in the
//! library, and every test that receives also exercises the client real
//! programs use.
//!
//! What only tests need is added here: settings for a test's services,
//! and [`Receive`], which reads with a deadline and fails at anything the
//! test did not ask for, where it happens. Clients that break the protocol
//! on purpose, or read slowly, are in [`crate::raw`] and [`crate::slow`].

use std::future::Future;
use std::time::Duration;

use chat_client::{
    ApiError, Client, ClientBuilder, Disconnect, Error, Event, Message, Resume, RoomName,
    SseConnection, SseEvent, Start, Subscription, Transport, Url, WsConnection, WsEvent,
};
use tokio::time::Instant;

/// How long a test client's long polls ask to be held: well within every
/// test's deadlines, so that a poll an instance will never answer (it
/// vanished without closing the connection) is replaced in time.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of the services at `bases` (instances of one service, or a
/// gateway), to be configured further (e.g. with a token).
pub fn client_builder<S: AsRef<str>>(bases: &[S]) -> ClientBuilder {
    let bases = bases.iter().map(|base| base.as_ref().to_owned());
    Client::builder().bases(bases).poll_timeout(POLL_TIMEOUT)
}

/// A client of one instance (or gateway) at `base`.
pub fn client(base: &str) -> Client {
    client_of(&[base])
}

/// A client of several instances: subscriptions move to the next one when
/// theirs goes away, as behind a load balancer.
pub fn client_of<S: AsRef<str>>(bases: &[S]) -> Client {
    client_builder(bases)
        .build()
        .expect("a client of the test's services")
}

/// `name` as a room; panics if it is not a valid room name.
pub fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap_or_else(|err| panic!("{name:?} is not a room name: {err}"))
}

/// The event stream of `room_name` at `client`'s first base; panics unless
/// it is opened (`200`).
pub async fn events(client: &Client, room_name: &str, resume: Resume) -> SseConnection {
    let mut stream = SseConnection::open(client, first_base(client), &room(room_name), resume)
        .await
        .expect("an answer to the event stream request");
    if stream.status() != 200 {
        let refusal = stream.next().await;
        panic!(
            "the event stream was refused with {}: {refusal:?}",
            stream.status()
        );
    }
    stream
}

/// A WebSocket in `room_name` at `client`'s first base, replaying what
/// follows `after` first; panics if the upgrade is refused.
pub async fn websocket(client: &Client, room_name: &str, after: Option<u64>) -> WsConnection {
    WsConnection::connect(client, first_base(client), &room(room_name), after)
        .await
        .expect("the WebSocket upgrade")
}

/// The refusal of a WebSocket upgrade in `room_name` at `client`'s first
/// base: its status and error body. Panics if the upgrade happens, or fails
/// without an answer.
pub async fn websocket_refusal(client: &Client, room_name: &str) -> ApiError {
    match WsConnection::connect(client, first_base(client), &room(room_name), None).await {
        Err(Error::Api(refusal)) => refusal,
        Err(err) => panic!("the upgrade failed without an answer: {err}"),
        Ok(socket) => panic!("the upgrade was not refused: {socket:?}"),
    }
}

/// Long polls of `room_name` at `client`'s bases, following the cursor from
/// `after`, as a subscription (long polling holds no connection).
pub fn polls(client: &Client, room_name: &str, after: u64) -> Subscription {
    client.subscribe(Transport::LongPoll, &room(room_name), Start::After(after))
}

/// How a client of `transport` that has seen `cursor` asks for what
/// follows when it reconnects: a browser's `EventSource` with
/// `Last-Event-ID`, every other client with `?after=`.
pub fn reconnecting_after(transport: Transport, cursor: u64) -> Resume {
    match transport {
        Transport::Sse => Resume::Header(cursor),
        Transport::LongPoll | Transport::Ws => Resume::After(cursor),
    }
}

fn first_base(client: &Client) -> &Url {
    &client.bases()[0]
}

/// Reading what a connection (or a subscription) receives the way a test
/// does: within a deadline, and panicking at anything the test did not ask
/// for (an `ack` nobody waits for, an event of no known name, a message the
/// server sent twice), so a surprise fails where it happens. Its futures
/// are `Send`, so tests can read in tasks of their own.
pub trait Receive: Send {
    /// The next message or gap, or how the connection ended (as
    /// [`Event::Disconnected`]; a subscription's first disconnection counts
    /// as its end). Panics if nothing comes within `within`.
    fn receive(&mut self, within: Duration) -> impl Future<Output = Event> + Send;

    /// The next `count` messages; panics if anything else comes first, or
    /// if they take longer than `within`.
    fn messages(
        &mut self,
        count: usize,
        within: Duration,
    ) -> impl Future<Output = Vec<Message>> + Send {
        async move {
            let deadline = Instant::now() + within;
            let mut messages = Vec::with_capacity(count);
            while messages.len() < count {
                match self.receive(left_until(deadline)).await {
                    Event::Message(message) => messages.push(message),
                    other => panic!(
                        "expected a message after {} of {count}, got {other:?}",
                        messages.len()
                    ),
                }
            }
            messages
        }
    }

    /// The messages until the connection ends, and why it ended; panics on
    /// a gap, or if it has not ended within `within`.
    fn until_end(
        &mut self,
        within: Duration,
    ) -> impl Future<Output = (Vec<Message>, Disconnect)> + Send {
        async move {
            let deadline = Instant::now() + within;
            let mut messages = Vec::new();
            loop {
                match self.receive(left_until(deadline)).await {
                    Event::Message(message) => messages.push(message),
                    Event::Disconnected { reason, .. } => return (messages, reason),
                    other => panic!(
                        "expected messages and then the end, got {other:?} after {} messages",
                        messages.len()
                    ),
                }
            }
        }
    }
}

impl Receive for SseConnection {
    async fn receive(&mut self, within: Duration) -> Event {
        match within_or_panic(within, self.next()).await {
            Ok(Some(SseEvent::Message(message))) => Event::Message(message),
            Ok(Some(SseEvent::Gap(gap))) => Event::Gap(gap),
            Ok(Some(SseEvent::Other { event, data })) => {
                panic!("an event of no known name, {event:?}: {data}")
            }
            Ok(None) => ended(self.base(), Disconnect::StreamEnded),
            Err(err) => ended(self.base(), err.into()),
        }
    }
}

impl Receive for WsConnection {
    async fn receive(&mut self, within: Duration) -> Event {
        match within_or_panic(within, self.next_event()).await {
            Ok(Some(WsEvent::Message(message))) => Event::Message(message),
            Ok(Some(WsEvent::Gap(gap))) => Event::Gap(gap),
            Ok(Some(WsEvent::Closed { code, reason })) => {
                ended(self.base(), Disconnect::Closed { code, reason })
            }
            Ok(Some(answer)) => panic!("an answer to a frame nobody waits for: {answer:?}"),
            Ok(None) => ended(
                self.base(),
                Disconnect::Failed("the connection ended without a close frame".into()),
            ),
            Err(err) => ended(self.base(), err.into()),
        }
    }
}

impl Receive for Subscription {
    async fn receive(&mut self, within: Duration) -> Event {
        let deadline = Instant::now() + within;
        loop {
            let event = within_or_panic(left_until(deadline), self.next())
                .await
                .expect("the subscription has not stopped");
            assert_eq!(
                self.duplicates_dropped(),
                0,
                "the server sent a message the subscription had delivered"
            );
            if !matches!(event, Event::Connected { .. }) {
                return event;
            }
        }
    }
}

/// One client of any transport, for the scenarios every transport must
/// pass: an event stream, a WebSocket, or, for long polling, polls that
/// follow the cursor (a [`Subscription`], long polling holding no
/// connection of its own).
#[derive(Debug)]
pub enum Connection {
    LongPoll(Subscription),
    Sse(SseConnection),
    Ws(WsConnection),
}

impl Connection {
    /// Opens `room_name` at `client`'s first base, from where `resume`
    /// says. A WebSocket and long polls resume with `?after=` only.
    pub async fn open(
        transport: Transport,
        client: &Client,
        room_name: &str,
        resume: Resume,
    ) -> Self {
        let after = || match resume {
            Resume::Live => None,
            Resume::After(id) => Some(id),
            Resume::Header(_) | Resume::LastEventIdParam(_) => {
                panic!("{transport} resumes with ?after= only, not {resume:?}")
            }
        };
        match transport {
            Transport::Sse => Connection::Sse(events(client, room_name, resume).await),
            Transport::Ws => Connection::Ws(websocket(client, room_name, after()).await),
            Transport::LongPoll => {
                let start = after().map_or(Start::Live, Start::After);
                let mut polls = client.subscribe(transport, &room(room_name), start);
                // A subscription does nothing until asked: its first event
                // is where a live start learns where the room is, which
                // must be now, as for a stream opened now.
                let first = within_or_panic(Duration::from_secs(5), polls.next()).await;
                assert!(
                    matches!(first, Some(Event::Connected { .. })),
                    "long polls started with {first:?}"
                );
                Connection::LongPoll(polls)
            }
        }
    }

    /// Leaves as the transport's clients do: a WebSocket says goodbye with
    /// a close frame, the others just go.
    pub async fn close(self) {
        if let Connection::Ws(socket) = self {
            // A close that fails finds the connection gone already.
            let _ = socket.close().await;
        }
    }
}

impl Receive for Connection {
    async fn receive(&mut self, within: Duration) -> Event {
        match self {
            Connection::LongPoll(polls) => polls.receive(within).await,
            Connection::Sse(stream) => stream.receive(within).await,
            Connection::Ws(socket) => socket.receive(within).await,
        }
    }
}

fn ended(base: &Url, reason: Disconnect) -> Event {
    Event::Disconnected {
        base: base.clone(),
        reason,
    }
}

/// What is left of the time until `deadline` (at least a moment, so a
/// deadline just passed still gives what has already arrived).
fn left_until(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

async fn within_or_panic<F: Future>(within: Duration, future: F) -> F::Output {
    tokio::time::timeout(within, future)
        .await
        .unwrap_or_else(|_| panic!("nothing received within {within:?}"))
}
