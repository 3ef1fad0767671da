//! The routes of sse-svc, beside the shared ones from `common`.

mod events;

use actix_web::web;
use common::http::method_not_allowed;

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/rooms/{room}/events")
            .route(web::get().to(events::events))
            .default_service(method_not_allowed("GET")),
    );
}
