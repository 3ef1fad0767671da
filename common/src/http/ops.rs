//! Operations routes: liveness, readiness and metrics.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use wire::ops::Status;

use super::AppState;

/// `200` while the process serves requests at all.
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status::healthy())
}

/// `200` when this instance can take clients: the broker is reachable and
/// the instance is not shutting down. Load balancers route by it.
pub(super) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let not_ready = if state.is_shutting_down() {
        Some("this instance is shutting down")
    } else if !state.hub.broker().is_ready().await {
        Some("the message broker is unreachable")
    } else {
        None
    };
    match not_ready {
        None => HttpResponse::Ok().json(Status::ready()),
        Some(reason) => HttpResponse::ServiceUnavailable()
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .json(Status::not_ready(reason)),
    }
}

/// Prometheus text exposition.
pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
