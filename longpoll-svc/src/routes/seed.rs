//! The seed's long-poll API on room `general` (docs/API.md, "The seed's
//! client": the original Express server and React client this chat grew
//! from).
//!
//! `GET /get-messages` answers with the next message as one object. Unlike
//! the seed, it never answers an empty 2xx: the seed's client would render
//! that as a blank message. On timeout it answers `408` with a JSON error,
//! and the client (which retries on any error after 500 ms) polls again.

use std::sync::LazyLock;
use std::time::SystemTime;

use actix_web::{HttpResponse, web};
use common::auth::Caller;
use common::http::{AppState, IdempotencyKeyHeader, publish_to};
use common::message::PublishBody;
use common::publisher::Publish;
use common::{ApiError, RoomName};
use tokio::time::Instant;

use super::poll::{Waited, hold_until, wait_for_messages};
use crate::config::PollSettings;

/// The seed's chat has one room.
static GENERAL: LazyLock<RoomName> =
    LazyLock::new(|| RoomName::parse("general").expect("\"general\" is a valid room name"));

pub(super) async fn get_messages(
    state: web::Data<AppState>,
    settings: web::Data<PollSettings>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.may_read(&GENERAL)?;
    let _permit = state.admit(caller.client())?;
    let mut after = state.hub.last_id(&GENERAL).await?;
    let hold = settings.hold(None);
    let deadline = hold_until(&caller, Instant::now() + hold);
    loop {
        match wait_for_messages(&state, &GENERAL, after, 1, deadline).await? {
            Waited::Messages { page, live } => {
                let Some(entry) = page.entries.first() else {
                    // Only news of a gap (ids lost with Redis' data): the seed
                    // has no way to say that; wait on from where ids resume.
                    after = page.cursor(after);
                    continue;
                };
                state.metrics.record_delivery(entry.ts(), live);
                return Ok(HttpResponse::Ok()
                    .insert_header(("Cache-Control", "no-store"))
                    .json(entry.json()));
            }
            // At the token's expiry, not the hold time: say so, so the
            // client gets a fresh token rather than polling again.
            Waited::TimedOut if caller.expires().is_some_and(|at| at <= SystemTime::now()) => {
                return Err(ApiError::Unauthorized("the token has expired".into()));
            }
            Waited::TimedOut => return Err(ApiError::PollTimeout(hold)),
            Waited::ShuttingDown => return Err(ApiError::ShuttingDown),
        }
    }
}

/// `{"message": "...", "id": <ignored>}` -> `201` with the stored message.
pub(super) async fn new_messages(
    state: web::Data<AppState>,
    caller: Caller,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    body: web::Json<PublishBody>,
) -> Result<HttpResponse, ApiError> {
    let publish = Publish {
        room: GENERAL.clone(),
        body: body.into_inner(),
        key,
    };
    publish_to(&state, &caller, publish).await
}
