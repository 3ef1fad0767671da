//! CORS from `ALLOWED_ORIGINS`, on every route, error answers included.

use actix_cors::Cors;
use actix_web::http::{Method, header};

use crate::config::AllowedOrigins;

/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: usize = 3600;

pub fn cors(origins: &AllowedOrigins) -> Cors {
    let cors = Cors::default()
        .allowed_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_any_header()
        .expose_headers([
            header::RETRY_AFTER,
            header::ALLOW,
            header::WWW_AUTHENTICATE,
            header::HeaderName::from_static(super::REPLAYED),
        ])
        .max_age(PREFLIGHT_MAX_AGE_SECS);
    // A request from another origin is still served (the browser keeps the
    // answer from the page); only the CORS headers are left out.
    match origins {
        AllowedOrigins::Any => cors.allow_any_origin().send_wildcard(),
        AllowedOrigins::List(list) => list
            .iter()
            .fold(cors, |cors, origin| cors.allowed_origin(origin)),
    }
}
