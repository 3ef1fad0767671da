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
pub mod routes;

use common::hub::Framed;
use common::{Service, Via};
use serde_json::value::RawValue;

/// The port this service listens on unless `PORT` says otherwise.
pub const DEFAULT_PORT: u16 = 8081;

/// The long-polling transport as a [`Service`] for [`common::Application`].
pub fn service() -> Service {
    Service {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        default_port: DEFAULT_PORT,
        via: Via::LongPoll,
        framer: json_frame,
        routes: routes::configure,
        env_help: config::ENV_HELP,
        linger: Service::DEFAULT_LINGER,
    }
}

/// Poll answers carry messages as JSON values, so a message is framed as
/// its bare JSON.
fn json_frame(_: u64, json: &RawValue) -> Framed {
    Framed {
        frame: json.get().as_bytes().to_vec(),
        json_at: 0,
    }
}
