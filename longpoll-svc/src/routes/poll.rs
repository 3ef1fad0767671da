//! `GET /rooms/{room}/poll?after=&timeout=`.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::http::header::{self, ContentType, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder, http::StatusCode, web};
use common::auth::Caller;
use common::http::{AppState, Cursor, RoomPath, optional_param};
use common::hub::Page;
use common::session::instant_of;
use common::{ApiError, RoomName};
use tokio::time::Instant;
use wire::PollAnswer;

use crate::config::{POLL_BATCH, PollSettings};
use crate::frame;

pub(super) async fn poll(
    state: web::Data<AppState>,
    settings: web::Data<PollSettings>,
    RoomPath(room): RoomPath,
    caller: Caller,
    Cursor(after): Cursor,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    caller.may_read(&room)?;
    let timeout = optional_param::<f64>(query.get("timeout"), "timeout", "a number of seconds")?
        .map(|secs| {
            Duration::try_from_secs_f64(secs).map_err(|_| {
                ApiError::BadQuery(format!(
                    "timeout must be a number of seconds (0 or more), not {secs}"
                ))
            })
        })
        .transpose()?;
    let _permit = state.admit(caller.client())?;
    // Without a cursor: only what is published from now on.
    let after = match after {
        Some(after) => after,
        None => state.hub.last_id(&room).await?,
    };
    let deadline = hold_until(&caller, Instant::now() + settings.hold(timeout));
    match wait_for_messages(&state, &room, after, POLL_BATCH, deadline).await? {
        Waited::Messages { page, live } => {
            for entry in &page.entries {
                state.metrics.record_delivery(entry.ts(), live);
            }
            let mut answer = no_store(StatusCode::OK);
            Ok(match frame::ready_answer(&page) {
                Some(entry) => answer
                    .content_type(ContentType::json())
                    .body(entry.frame().clone()),
                None => answer.json(PollAnswer {
                    messages: page.json(),
                    cursor: page.cursor(after),
                    gap: page.gap.is_some(),
                }),
            })
        }
        Waited::TimedOut => Ok(no_store(StatusCode::NO_CONTENT).finish()),
        // The client polls again at once; `Connection: close` sends it to
        // another instance instead of this stopping one.
        Waited::ShuttingDown => Ok(no_store(StatusCode::NO_CONTENT).force_close().finish()),
    }
}

/// `deadline`, or the caller's token expiry if sooner: a held poll outlives
/// no token (it is answered `204` then, and the next poll needs a fresh
/// token).
pub(super) fn hold_until(caller: &Caller, deadline: Instant) -> Instant {
    caller
        .expires()
        .map_or(deadline, |expiry| deadline.min(instant_of(expiry)))
}

fn no_store(status: StatusCode) -> HttpResponseBuilder {
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    response
}

/// How a wait for messages ended.
#[derive(Debug)]
pub(super) enum Waited {
    /// `live`: the messages arrived while the client was waiting (their
    /// latency is the system's), as opposed to being there already.
    Messages {
        page: Page,
        live: bool,
    },
    TimedOut,
    ShuttingDown,
}

/// Messages after `after` (or news of a gap) as soon as there are any, until
/// `deadline`.
/// Dropping the future (the client left) drops the wait and nothing else.
pub(super) async fn wait_for_messages(
    state: &AppState,
    room: &RoomName,
    after: u64,
    limit: usize,
    deadline: Instant,
) -> Result<Waited, ApiError> {
    let mut live = false;
    // Sent elsewhere (this instance lost the broker) as on shutdown: the
    // client polls again, through the load balancer, on another instance.
    let evacuate = state.evacuation.token();
    if evacuate.is_cancelled() {
        // Not a held poll to release: a new one, on an instance without its
        // broker. A 503 with Retry-After sends it elsewhere, and paces a
        // client that comes back here.
        return Err(common::broker::BrokerError::Lost.into());
    }
    loop {
        if state.is_shutting_down() || evacuate.is_cancelled() {
            return Ok(Waited::ShuttingDown);
        }
        let page = state.hub.read_after(room, after, limit).await?;
        if !page.is_empty() {
            return Ok(Waited::Messages { page, live });
        }
        tokio::select! {
            () = state.hub.wait_beyond(room, after) => live = true,
            () = tokio::time::sleep_until(deadline) => return Ok(Waited::TimedOut),
            () = state.shutdown.cancelled() => return Ok(Waited::ShuttingDown),
            () = evacuate.cancelled() => return Ok(Waited::ShuttingDown),
        }
    }
}
