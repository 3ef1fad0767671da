//! `GET /rooms/{room}/events`: one event stream per client.

use std::convert::Infallible;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use bytes::Bytes;
use common::ApiError;
use common::auth::Caller;
use common::http::{AppState, Cursor, RoomPath};
use common::session::{Ending, SessionEvent, StreamSession};
use futures_util::{Stream, StreamExt};

use crate::frame;

pub(super) async fn events(
    state: web::Data<AppState>,
    RoomPath(room): RoomPath,
    caller: Caller,
    Cursor(cursor): Cursor,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let mut response = event_stream_response();
    if state.is_shutting_down() {
        // The browser reconnects (after `retry`), through the load balancer
        // to another instance. An error status would make it give up.
        return Ok(response.streaming(retry_later()));
    }
    let session = match StreamSession::open(&state, &request, &caller, &room, cursor).await {
        Ok(session) => session,
        // Redis is down and this instance does not know the room yet. A 503
        // would make a browser's EventSource give up for good; an empty
        // stream makes it try again in 3 s.
        Err(ApiError::BrokerUnavailable(err)) => {
            log::warn!("event stream for room {room} deferred: {err}");
            return Ok(response.streaming(retry_later()));
        }
        Err(err) => return Err(err),
    };
    Ok(response.streaming(event_stream(session)))
}

/// A stream that only says `retry: 3000` and ends: "come back later".
fn retry_later() -> impl Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::once(async { Ok(frame::RETRY) })
}

fn event_stream_response() -> HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ))
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-transform"),
        ))
        .insert_header(("x-accel-buffering", HeaderValue::from_static("no")))
        // One stream per connection: when it ends, so does the connection,
        // and nothing else can be hit by a slow-client cut meant for it.
        .force_close();
    response
}

/// One client's stream: `retry` first, then an event per session event,
/// until the session ends (the browser then reconnects with
/// `Last-Event-ID`; after `event: expired`, with a fresh token). Dropped,
/// with its session, as soon as actix-web notices the client is gone.
fn event_stream(session: StreamSession) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let opening = futures_util::stream::once(std::future::ready(Ok(frame::RETRY)));
    let events = futures_util::stream::unfold(Some(session), |session| async move {
        let mut session = session?;
        let chunk = match session.next().await {
            SessionEvent::Message(entry) => entry.frame().clone(),
            SessionEvent::Gap(gap) => frame::gap(gap),
            SessionEvent::Heartbeat => frame::KEEPALIVE,
            // The last event: the stream ends after it.
            SessionEvent::End(Ending::TokenExpired) => return Some((Ok(frame::EXPIRED), None)),
            SessionEvent::End(ending) => {
                log::debug!(
                    "ending an event stream at id {}: {ending:?}",
                    session.cursor()
                );
                return None;
            }
        };
        Some((Ok::<_, Infallible>(chunk), Some(session)))
    });
    opening.chain(events)
}
