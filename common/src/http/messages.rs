//! `POST /rooms/{room}/messages` and `GET /rooms/{room}/history`.

use std::collections::HashMap;
use std::net::IpAddr;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use wire::HistoryAnswer;

use super::{AppState, Cursor, RoomPath, optional_param};
use crate::error::ApiError;
use crate::message::{PublishBody, RoomName};

/// Messages a history read returns when the client does not say.
const DEFAULT_HISTORY_LIMIT: usize = 50;
/// The most a history read returns; larger asks are capped.
const MAX_HISTORY_LIMIT: usize = 500;

pub(super) async fn publish(
    state: web::Data<AppState>,
    RoomPath(room): RoomPath,
    request: HttpRequest,
    body: web::Json<PublishBody>,
) -> Result<HttpResponse, ApiError> {
    publish_to(&state, &request, room, body.into_inner()).await
}

/// Publishes `body` in `room` for an HTTP client and answers `201` with the
/// stored message, after the per-address rate limit.
pub async fn publish_to(
    state: &AppState,
    request: &HttpRequest,
    room: RoomName,
    body: PublishBody,
) -> Result<HttpResponse, ApiError> {
    if let (Some(limiter), Some(address)) = (
        &state.publish_limiter,
        client_address(request, state.config.trust_x_real_ip),
    ) {
        limiter
            .check(address)
            .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    }
    let message = state.publisher.publish(room, body).await?;
    Ok(HttpResponse::Created().json(message))
}

/// The address a rate limit applies to: the peer, or the `X-Real-IP` a
/// trusted gateway sets (clients cannot forge it through such a gateway,
/// which overwrites it).
fn client_address(request: &HttpRequest, trust_x_real_ip: bool) -> Option<IpAddr> {
    let forwarded = trust_x_real_ip
        .then(|| {
            request
                .headers()
                .get("x-real-ip")?
                .to_str()
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .flatten();
    forwarded.or_else(|| request.peer_addr().map(|peer| peer.ip()))
}

pub(super) async fn history(
    state: web::Data<AppState>,
    RoomPath(room): RoomPath,
    Cursor(after): Cursor,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let limit: usize = optional_param(query.get("limit"), "limit", "a whole number from 1 to 500")?
        .unwrap_or(DEFAULT_HISTORY_LIMIT);
    if limit == 0 {
        return Err(ApiError::BadQuery(
            "limit must be a whole number from 1 to 500, not 0".into(),
        ));
    }
    let limit = limit.min(MAX_HISTORY_LIMIT);
    // As in a poll: a cursor older than history says so with `"gap": true`.
    let (entries, gap) = match after {
        Some(after) => {
            let page = state.hub.read_after(&room, after, limit).await?;
            (page.entries, page.gap.is_some())
        }
        None => (state.hub.latest(&room, limit).await?, false),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .json(HistoryAnswer {
            messages: entries.iter().map(|entry| entry.json()).collect(),
            gap,
        }))
}
