//! The WebSocket transport (docs/API.md, "WebSocket"), on actix-ws.
//!
//! One task per connection ([`connection`]) owns the socket: it reads and
//! answers the client's frames (`wire::ws`), writes what its
//! [`StreamSession`](common::session::StreamSession) hands it (replay from
//! `?after=`, then live, each exactly once), pings every `HEARTBEAT_SECS`,
//! and closes with the RFC 6455 code of whatever ended the connection
//! (`wire::close`).

pub mod config;
pub mod connection;
mod fragments;
pub mod frame;
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
        framer: frame::message,
        routes: routes::configure,
        env_help: config::ENV_HELP,
    }
}
