//! The routes of sse-svc, beside the shared ones from `common`.

mod events;

use actix_web::web;
use common::Routes;
use common::config::{ConfigError, Env};
use common::http::method_not_allowed;

/// sse-svc has no settings of its own beyond the shared ones.
pub fn configure(_: &Env<'_>) -> Result<Routes, ConfigError> {
    Ok(Routes::in_room(|config: &mut web::ServiceConfig| {
        config.service(
            web::resource("/events")
                .route(web::get().to(events::events))
                .default_service(method_not_allowed("GET")),
        );
    }))
}
