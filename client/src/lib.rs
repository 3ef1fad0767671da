//! A Rust client of the chat: publish, read history, and subscribe to a
//! room over HTTP long polling, Server-Sent Events or WebSocket.
//!
//! This first part is the client's vocabulary, which needs no network:
//! - [`transport`]: the three transports;
//! - [`key`]: idempotency keys, which make a publish safe to retry;
//! - [`backoff`]: how long to wait before trying again;
//! - [`payload`]: how a received message is handed over.
//!
//! The protocol's types come from the [`wire`] crate, re-exported here.

pub mod backoff;
pub mod key;
pub mod payload;
pub mod transport;

pub use wire::{self, ErrorBody, ErrorCode, Gap, Message, RoomName};

pub use crate::backoff::{Backoff, Retry};
pub use crate::key::{IdempotencyKey, InvalidKey};
pub use crate::payload::{Payload, RawMessage};
pub use crate::transport::{Transport, UnknownTransport};
