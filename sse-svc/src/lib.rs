//! The Server-Sent Events transport (docs/API.md, "Server-Sent Events").
//!
//! One streaming response per client, fed by a [`StreamSession`] (replay
//! from the cursor, then live, each message exactly once). A stream starts
//! with `retry: 3000`, carries each message as an `id:` / `event: message`
//! / `data:` block built once per message and shared by all streams, and a
//! `: keepalive` comment every `HEARTBEAT_SECS`. It ends, and the browser
//! reconnects with `Last-Event-ID`, when the service shuts down or the
//! client fell further behind than history reaches.
//!
//! [`StreamSession`]: common::session::StreamSession

pub mod frame;
pub mod routes;

use common::{Service, Via};

/// The port this service listens on unless `PORT` says otherwise.
pub const DEFAULT_PORT: u16 = 8082;

/// The SSE transport as a [`Service`] for [`common::Application`].
pub fn service() -> Service {
    Service {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        default_port: DEFAULT_PORT,
        via: Via::Sse,
        framer: frame::message,
        routes: routes::configure,
        env_help: "",
        linger: Service::DEFAULT_LINGER,
    }
}
