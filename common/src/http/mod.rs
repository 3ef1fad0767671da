//! HTTP pieces every service shares: state, extractors, the publish and
//! history routes, operations routes, CORS and the connection cutter.
//!
//! A service mounts [`routes`] next to its own transport routes; nothing here
//! is copied into a service crate.

mod connection;
mod cors;
mod extract;
mod messages;
mod ops;

use std::sync::Arc;

use actix_web::web;
use tokio_util::sync::CancellationToken;

pub use self::connection::{Disconnector, remember_socket};
pub use self::cors::cors;
pub use self::extract::{
    Cursor, IdempotencyKeyHeader, RoomPath, json_config, optional_param, query_config,
};
pub use self::messages::{REPLAYED, publish_to};
use crate::client::ClientId;
use crate::config::Config;
use crate::error::ApiError;
use crate::evacuation::Evacuation;
use crate::hub::Hub;
use crate::limits::{ConnectionCaps, ConnectionPermit};
use crate::metrics::Metrics;
use crate::publisher::Publisher;

/// What every handler can reach, shared by all workers (`web::Data`).
#[derive(Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub hub: Hub,
    pub publisher: Publisher,
    pub metrics: Metrics,
    /// Cancelled on SIGTERM/SIGINT: every held poll, stream and session
    /// watches it and says goodbye.
    pub shutdown: CancellationToken,
    /// How many connections this instance, and each client, may hold.
    pub connections: Arc<ConnectionCaps>,
    /// Says when clients must reconnect elsewhere (the broker is lost).
    pub evacuation: Arc<Evacuation>,
}

impl AppState {
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// A place for one more held connection (a stream, a socket, a held
    /// poll) of `client`, or the answer that refuses it.
    pub fn admit(&self, client: &ClientId) -> Result<ConnectionPermit, ApiError> {
        Ok(self.connections.acquire(client)?)
    }
}

/// Where every room's routes live; [`RoomPath`] reads the `{room}`.
pub const ROOM_SCOPE: &str = "/rooms/{room}";

/// The room routes every service serves, under [`ROOM_SCOPE`]: publish and
/// history.
pub fn room_routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/messages")
                .route(web::post().to(messages::publish))
                .default_service(method_not_allowed("POST")),
        )
        .service(
            web::resource("/history")
                .route(web::get().to(messages::history))
                .default_service(method_not_allowed("GET")),
        );
}

/// The operations routes every service serves.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/healthz")
                .route(web::get().to(ops::healthz))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/readyz")
                .route(web::get().to(ops::readyz))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/metrics")
                .route(web::get().to(ops::metrics))
                .default_service(method_not_allowed("GET")),
        );
}

/// A route answering 405 with an `Allow` header, for a resource's other
/// methods.
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move || async move {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed { allow })
    })
}

/// The answer for any path no route matches.
pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
