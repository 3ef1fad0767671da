//! The WebSocket transport (API.md, "WebSocket"), on actix-ws.
//!
//! One task per connection ([`connection`]) owns the socket: it reads and
//! answers the client's frames ([`protocol`]), writes messages from a hub
//! subscription (replay from `?after=`, then live, each exactly once), pings
//! every `HEARTBEAT_SECS`, and closes with the RFC 6455 code of whatever
//! ended the connection (`common::close`).

pub mod connection;
mod fragments;
pub mod protocol;
pub mod routes;

use common::{Service, Via};

/// The port this service listens on unless `PORT` says otherwise.
pub const DEFAULT_PORT: u16 = 8083;

/// The WebSocket transport as a [`Service`] for [`common::Application`].
pub fn service() -> Service {
    Service {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        default_port: DEFAULT_PORT,
        via: Via::Ws,
        framer: protocol::message_frame,
        routes: routes::configure,
    }
}
