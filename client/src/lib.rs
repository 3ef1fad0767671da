//! A Rust client of the chat: publish, read history, and subscribe to a
//! room over HTTP long polling, Server-Sent Events or WebSocket.
//!
//! - [`client`]: the [`Client`] and its builder (bases, credentials,
//!   timeouts, backoff);
//! - [`publish`]: publishing over HTTP, with an idempotency key and safe
//!   retries; [`read`]: history and long polls;
//! - [`sse`], [`ws`]: single connections, for tests of a server and for
//!   programs that manage connections themselves;
//! - [`payload`]: how messages are handed over; [`key`]: idempotency keys;
//!   [`backoff`]: backoff settings; [`transport`]: the three transports;
//!   [`error`]: what can go wrong.
//!
//! The protocol's types come from the [`wire`] crate, re-exported here.

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
pub use crate::transport::{Transport, UnknownTransport};
pub use crate::ws::{Ack, WsConnection, WsEvent};
