//! The chat's wire protocol, in one place: what goes over the network and
//! what is refused before it gets in.
//!
//! Servers, the client library, the tests and the load tester all speak
//! through these types, so the protocol is defined once:
//! - [`message`]: the [`Message`] and the validation of everything a client
//!   sends ([`RoomName`], [`Author`], [`MessageText`], [`PublishBody`]);
//! - [`answer`]: the bodies of poll and history answers, generic over how a
//!   message is held (parsed by clients, pre-serialized by servers so each
//!   message is serialized once);
//! - [`error`]: the error body and the stable error codes;
//! - [`ws`]: every WebSocket frame, both ways;
//! - [`close`]: why a server ends a connection, and whether to reconnect;
//! - [`sse`]: the event names of the event stream;
//! - [`ops`]: the health and readiness bodies.
//!
//! This crate depends on serde only: no runtime, no HTTP stack, no broker.

pub mod answer;
pub mod close;
pub mod error;
pub mod message;
pub mod ops;
pub mod sse;
pub mod ws;

pub use answer::{HistoryAnswer, PollAnswer};
pub use error::{ErrorBody, ErrorCode};
pub use message::{
    Author, Gap, IdempotencyKey, Message, MessageText, PublishBody, RoomName, ValidationError, Via,
};
