//! A Rust client of the chat: publish, read history, and subscribe to a
//! room over HTTP long polling, Server-Sent Events or WebSocket.
//!
//! The client does what the API asks of a well-behaved client, so a
//! program does not have to:
//! - **every publish is idempotent**: it carries an `Idempotency-Key`, and
//!   is retried with the same key when the network or an instance fails,
//!   so it is stored exactly once;
//! - **a subscription never misses or repeats a message**: it keeps its
//!   cursor, resumes from it on every reconnect (`?after=`,
//!   `Last-Event-ID`), drops anything it already delivered, and passes on
//!   the gaps the server announces;
//! - **failures are ridden out**: reconnects back off with jitter, move to
//!   the next base URL when an instance goes away, and stop only when the
//!   server says to (a WebSocket close code that forbids reconnecting, or a
//!   client error no retry can fix).
//!
//! The protocol's types come from the [`wire`] crate, re-exported here.
//!
//! # Publishing and reading
//!
//! ```no_run
//! use chat_client::{Client, Publish, RoomName};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new("http://127.0.0.1:8081")?;
//! let room = RoomName::parse("general")?;
//!
//! let published = client
//!     .publish(&room, Publish::new("hello").author("alice"))
//!     .await?;
//! println!("stored as {}", published.message.id);
//!
//! let history = client.history(&room, None, Some(20)).await?;
//! for message in history.messages {
//!     println!("{}: {}", message.author, message.message);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Subscribing
//!
//! ```no_run
//! use chat_client::{Client, Event, RoomName, Start, Transport};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Two instances: the subscription moves to the other when one goes away.
//! let client = Client::builder()
//!     .base("http://127.0.0.1:8082")
//!     .base("http://127.0.0.1:9082")
//!     .build()?;
//! let room = RoomName::parse("general")?;
//!
//! let mut subscription = client.subscribe(Transport::Sse, &room, Start::Live);
//! while let Some(event) = subscription.next().await {
//!     match event {
//!         Event::Message(message) => println!("{}: {}", message.author, message.message),
//!         Event::Gap(gap) => println!("messages before {} are gone", gap.resume_from),
//!         Event::Connected { base } => println!("connected to {base}"),
//!         Event::Disconnected { base, reason } => println!("{base}: {reason}"),
//!     }
//! }
//! // The stream ended: the server said not to reconnect.
//! # Ok(())
//! # }
//! ```
//!
//! A [`Subscription`] is also a [`futures_util::Stream`].
//! [`Client::subscribe_as`] hands messages over as [`RawMessage`] (the JSON
//! as it came, for relays) or as any [`Payload`] of your own (a type that
//! borrows only the fields it needs is the cheapest to receive).
//!
//! # Single connections
//!
//! [`SseConnection`] and [`WsConnection`] are one connection each, without
//! reconnecting: for tests of a server, and for programs that manage
//! connections themselves. A WebSocket can publish too:
//!
//! ```no_run
//! use chat_client::{Client, Publish, RoomName, WsConnection};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new("http://127.0.0.1:8083")?;
//! let room = RoomName::parse("general")?;
//! let mut socket = WsConnection::connect(&client, &client.bases()[0], &room, None).await?;
//! let ack = socket.publish(Publish::new("hi")).await?;
//! println!("stored as {}", ack.id);
//! socket.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Authentication and TLS
//!
//! [`ClientBuilder::token`] sends a JWT as `Authorization: Bearer` with HTTP
//! requests and as `?token=` in event stream and WebSocket URLs (where a
//! browser must send it, so servers look for it there).
//! [`ClientBuilder::api_key`] sends an `X-Api-Key` with publishes.
//!
//! This crate turns on no TLS backend. For `https://` bases, enable one in
//! your own program, for both HTTP and WebSocket: e.g. reqwest's `rustls`
//! feature and tokio-tungstenite's `rustls-tls-webpki-roots`.
//!
//! # Modules
//!
//! - [`client`]: the [`Client`] and its builder (bases, credentials,
//!   timeouts, backoff);
//! - [`publish`]: publishing over HTTP; [`read`]: history and long polls;
//! - [`subscription`]: the resilient [`Subscription`];
//! - [`sse`], [`ws`]: single connections;
//! - [`payload`]: how messages are handed over; [`key`]: idempotency keys;
//!   [`backoff`]: backoff settings; [`transport`]: the three transports;
//!   [`error`]: what can go wrong.

pub mod backoff;
pub mod client;
pub mod error;
mod http;
mod idle;
pub mod key;
pub mod payload;
pub mod publish;
pub mod read;
pub mod sse;
pub mod subscription;
pub mod transport;
mod url;
pub mod ws;

pub use reqwest::Url;
pub use wire::{self, ErrorBody, ErrorCode, Gap, Message, RoomName};

pub use crate::backoff::{Backoff, Retry};
pub use crate::client::{Client, ClientBuilder};
pub use crate::error::{ApiError, BuildError, Error};
pub use crate::key::{IdempotencyKey, InvalidKey};
pub use crate::payload::{Payload, RawMessage};
pub use crate::publish::{Publish, Published};
pub use crate::read::{History, Poll};
pub use crate::sse::{Resume, SseConnection, SseEvent};
pub use crate::subscription::{Disconnect, Event, Start, Subscription};
pub use crate::transport::{Transport, UnknownTransport};
pub use crate::ws::{Ack, WsConnection, WsEvent};
