//! The routes of ws-svc, beside the shared ones from `common`.

mod upgrade;

use actix_web::web;
use common::http::method_not_allowed;

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/rooms/{room}/ws")
            .route(web::get().to(upgrade::upgrade))
            .default_service(method_not_allowed("GET")),
    );
}
