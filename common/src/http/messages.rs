//! `POST /rooms/{room}/messages` and `GET /rooms/{room}/history`.

use std::collections::HashMap;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use wire::HistoryAnswer;

use super::{AppState, Cursor, IdempotencyKeyHeader, RoomPath, optional_param};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::message::PublishBody;
use crate::publisher::Publish;

/// Messages a history read returns when the client does not say.
const DEFAULT_HISTORY_LIMIT: usize = 50;
/// The most a history read returns; larger asks are capped.
const MAX_HISTORY_LIMIT: usize = 500;

pub(super) async fn publish(
    state: web::Data<AppState>,
    RoomPath(room): RoomPath,
    caller: Caller,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    body: web::Json<PublishBody>,
) -> Result<HttpResponse, ApiError> {
    let publish = Publish {
        room,
        body: body.into_inner(),
        key,
    };
    publish_to(&state, &caller, publish).await
}

/// Publishes for an HTTP client and answers `201` with the stored message,
/// or `200` with `Idempotent-Replayed: true` and the message stored the
/// first time its idempotency key was used.
pub async fn publish_to(
    state: &AppState,
    caller: &Caller,
    publish: Publish,
) -> Result<HttpResponse, ApiError> {
    let published = state.publisher.publish(caller, publish).await?;
    Ok(if published.replayed {
        HttpResponse::Ok()
            .insert_header((REPLAYED, HeaderValue::from_static("true")))
            .json(published.message)
    } else {
        HttpResponse::Created().json(published.message)
    })
}

/// Says that a publish answer is the first use's, not a new message.
pub const REPLAYED: &str = "idempotent-replayed";

pub(super) async fn history(
    state: web::Data<AppState>,
    RoomPath(room): RoomPath,
    caller: Caller,
    Cursor(after): Cursor,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    caller.may_read(&room)?;
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
