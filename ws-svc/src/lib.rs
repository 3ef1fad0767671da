//! The WebSocket transport (docs/API.md, "WebSocket"), on actix-ws.
//!
//! A connection ([`connection`]) has a writer, the upgrade's response body,
//! which writes what its [`StreamSession`](common::session::StreamSession)
//! hands it (replay from `?after=`, then live, each exactly once; each
//! message's frame built once for every connection), pings every
//! `HEARTBEAT_SECS` and closes with the RFC 6455 code of whatever ended the
//! connection (`wire::close`); and a reader task, which reads and answers
//! the client's frames (`wire::ws`).

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
        // A WebSocket's request is never read to the end (it is the
        // socket), and its client, once closed, waits for the server to end
        // the TCP connection (RFC 6455, 7.1.1): lingering would make every
        // close take a second, and hold connections that long in a
        // reconnect storm.
        linger: std::time::Duration::ZERO,
    }
}
