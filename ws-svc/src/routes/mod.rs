//! The routes of ws-svc, beside the shared ones from `common`.

mod upgrade;

use actix_web::web;
use common::Routes;
use common::config::{ConfigError, Env};
use common::http::method_not_allowed;

use crate::config::WsSettings;

pub fn configure(env: &Env<'_>) -> Result<Routes, ConfigError> {
    let settings = web::Data::new(WsSettings::from(env)?);
    Ok(Routes::in_room(move |config: &mut web::ServiceConfig| {
        config.app_data(settings.clone()).service(
            web::resource("/ws")
                .route(web::get().to(upgrade::upgrade))
                .default_service(method_not_allowed("GET")),
        );
    }))
}
