//! The routes of longpoll-svc, beside the shared ones from `common`.

mod poll;
mod seed;

use actix_web::web;
use common::Routes;
use common::config::{ConfigError, Env};
use common::http::method_not_allowed;

use crate::config::PollSettings;

pub fn configure(env: &Env<'_>) -> Result<Routes, ConfigError> {
    let settings = web::Data::new(PollSettings::from(env)?);
    let in_room = settings.clone();
    Ok(Routes::in_room(move |config: &mut web::ServiceConfig| {
        config.app_data(in_room.clone()).service(
            web::resource("/poll")
                .route(web::get().to(poll::poll))
                .default_service(method_not_allowed("GET")),
        );
    })
    .and_elsewhere(move |config: &mut web::ServiceConfig| {
        config
            .app_data(settings.clone())
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
    }))
}
