//! Operations routes: liveness, readiness and metrics.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// `200` while the process serves requests at all.
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `200` when this instance can take clients: the broker is reachable and
/// the instance is not shutting down. Load balancers route by it.
pub(super) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (status, reason) = if state.is_shutting_down() {
        (false, "this instance is shutting down")
    } else if !state.hub.broker().is_ready().await {
        (false, "the message broker is unreachable")
    } else {
        (true, "")
    };
    if status {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .json(json!({"status": "unavailable", "error": "not_ready", "detail": reason}))
    }
}

/// Prometheus text exposition.
pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
