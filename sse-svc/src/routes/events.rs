//! `GET /rooms/{room}/events`: one event stream per client.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use common::ApiError;
use common::http::{AppState, Disconnector, RoomPath, optional_param};
use common::hub::{Delivery, Socket, Subscription};
use common::metrics::ConnectionGuard;
use futures_util::Stream;
use tokio::time::{Instant, Interval};

use crate::frame;

pub(super) async fn events(
    state: web::Data<AppState>,
    RoomPath(room): RoomPath,
    request: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let cursor = resume_cursor(&request, &query)?;
    let mut response = event_stream_response();
    if state.is_shutting_down() {
        // The browser reconnects (after `retry`), through the load balancer
        // to another instance. An error status would make it give up.
        return Ok(response.streaming(retry_later()));
    }
    let socket = Disconnector::for_request(&request).map(|socket| Arc::new(socket) as Socket);
    let subscription = match state.hub.subscribe(&room, cursor, socket).await {
        Ok(subscription) => subscription,
        // Redis is down and this instance does not know the room yet. A 503
        // would make a browser's EventSource give up for good; an empty
        // stream makes it try again in 3 s.
        Err(err) if err.is_transient() => {
            log::warn!("event stream for room {room} deferred: {err}");
            return Ok(response.streaming(retry_later()));
        }
        Err(err) => return Err(err.into()),
    };
    let stream = EventStream {
        _connected: state.metrics.connection(),
        heartbeat: heartbeat(&state),
        state,
        subscription,
        opened: false,
    };
    Ok(response.streaming(stream.into_stream()))
}

/// A stream that only says `retry: 3000` and ends: "come back later".
fn retry_later() -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::once(async { Ok(frame::RETRY) })
}

fn event_stream_response() -> actix_web::HttpResponseBuilder {
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

/// Where to resume: the `Last-Event-ID` header (a browser reconnecting), or
/// `?after=` / `?last_event_id=` (a first connect, which cannot set headers).
/// The header wins. `None`: only messages published from now on.
fn resume_cursor(
    request: &HttpRequest,
    query: &HashMap<String, String>,
) -> Result<Option<u64>, ApiError> {
    let header = match request
        .headers()
        .get("last-event-id")
        .map(|value| value.to_str())
    {
        None => None,
        Some(Ok(text)) => Some(text.to_owned()),
        Some(Err(_)) => {
            return Err(ApiError::BadQuery(
                "Last-Event-ID must be a message id".into(),
            ));
        }
    };
    let from_header = optional_param(header.as_ref(), "Last-Event-ID", "a message id (0 or more)")?;
    let from_after = optional_param(query.get("after"), "after", "a message id (0 or more)")?;
    let from_alias = optional_param(
        query.get("last_event_id"),
        "last_event_id",
        "a message id (0 or more)",
    )?;
    Ok(from_header.or(from_after).or(from_alias))
}

fn heartbeat(state: &AppState) -> Interval {
    let every = state.config.heartbeat;
    let mut interval = tokio::time::interval_at(Instant::now() + every, every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// One client's stream. Dropped (with its subscription and its place in the
/// connected-clients gauge) as soon as actix-web notices the client is gone.
struct EventStream {
    state: web::Data<AppState>,
    subscription: Subscription,
    heartbeat: Interval,
    /// Counts the client as connected for as long as the stream lives.
    _connected: ConnectionGuard,
    opened: bool,
}

impl EventStream {
    fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> {
        futures_util::stream::unfold(self, |mut stream| async move {
            let chunk = stream.next_chunk().await?;
            Some((Ok(chunk), stream))
        })
    }

    /// The next bytes to write, or `None` to end the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if !self.opened {
            self.opened = true;
            return Some(frame::RETRY);
        }
        tokio::select! {
            biased;
            () = self.state.shutdown.cancelled() => None,
            delivery = self.subscription.next() => match delivery {
                Ok(Delivery::Message { entry, live }) => {
                    self.state.metrics.record_delivery(entry.ts, live);
                    Some(entry.frame.as_bytes().clone())
                }
                Ok(Delivery::Gap(gap)) => Some(frame::gap(gap)),
                Err(ended) => {
                    log::info!("ending an event stream at id {}: {ended}", self.subscription.cursor());
                    None
                }
            },
            _ = self.heartbeat.tick() => Some(frame::KEEPALIVE),
        }
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("cursor", &self.subscription.cursor())
            .finish_non_exhaustive()
    }
}
