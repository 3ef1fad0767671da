//! The long-polling transport (docs/API.md, "Long polling").
//!
//! A poll is answered at once from the hub when it has messages after the
//! cursor, or waits on the room's wake-up until one arrives, the timeout
//! passes (`204`) or the service shuts down (`204`, connection closed, so
//! the client polls again elsewhere). There is no per-client task or queue:
//! a held poll is one future, dropped the moment the client goes away.
//!
//! Also serves the seed's `GET /get-messages` and `POST /new-messages` on
//! room `general`, so the seed's React client works unmodified.

pub mod config;
pub mod frame;
pub mod routes;

use common::{Service, Via};

/// The port this service listens on unless `PORT` says otherwise.
pub const DEFAULT_PORT: u16 = 8081;

/// The long-polling transport as a [`Service`] for [`common::Application`].
pub fn service() -> Service {
    Service {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        default_port: DEFAULT_PORT,
        via: Via::LongPoll,
        framer: frame::alone,
        routes: routes::configure,
        env_help: config::ENV_HELP,
        linger: Service::DEFAULT_LINGER,
    }
}
