//! The routes of longpoll-svc, beside the shared ones from `common`.

mod poll;
mod seed;

use actix_web::web;
use common::http::method_not_allowed;

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/rooms/{room}/poll")
                .route(web::get().to(poll::poll))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/get-messages")
                .route(web::get().to(seed::get_messages))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/new-messages")
                .route(web::post().to(seed::new_messages))
                .default_service(method_not_allowed("POST")),
        );
}
