//! One Server-Sent Events connection (`GET /rooms/{room}/events`), opened
//! the way a browser's `EventSource` opens it, and read event by event. It
//! does not reconnect: a [`Subscription`](crate::Subscription) does that.
//!
//! The HTTP status and headers are kept, so tests and tools can check
//! what the server answered; a refusal's error body is read on the first
//! [`SseConnection::next`].
//!
//! - `parser`: the `text/event-stream` format.

mod parser;

use std::fmt;

use reqwest::header::{ACCEPT, HeaderMap};
use reqwest::{Response, Url};
use wire::{Gap, Message, RoomName, sse};

use self::parser::{Dispatched, EventParser};
use crate::client::Client;
use crate::error::Error;
use crate::http::{network, read_error};
use crate::idle::Idle;
use crate::payload::Payload;
use crate::url;

/// Where an event stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Only messages published from now on.
    Live,
    /// `Last-Event-ID: n`: how a browser reconnects.
    Header(u64),
    /// `?after=n`: a first connect that knows where it is.
    After(u64),
    /// `?last_event_id=n`, the query's other spelling.
    LastEventIdParam(u64),
}

/// An event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseEvent<M = Message> {
    Message(M),
    Gap(Gap),
    /// An event this version does not know (e.g. a newer server's
    /// `expired`), as it came.
    Other {
        event: String,
        data: String,
    },
}

/// What is left to read of the answer.
enum Body {
    /// A `200`: the stream.
    Events {
        response: Response,
        parser: EventParser,
        idle: Idle,
    },
    /// Any other status: its body, until the first `next` reads it.
    Refused(Response),
    /// Ended, broken, or the refusal already read.
    Done,
}

/// One open event stream.
pub struct SseConnection {
    base: Url,
    status: u16,
    headers: HeaderMap,
    body: Body,
    last_event_id: Option<u64>,
}

impl SseConnection {
    /// Sends the request and waits for the answer's head (at most the
    /// client's request timeout). Any HTTP answer is `Ok`, whatever its
    /// status; `Err` means there was none.
    pub async fn open(
        client: &Client,
        base: &Url,
        room: &RoomName,
        resume: Resume,
    ) -> Result<Self, Error> {
        let query = match resume {
            Resume::After(id) => Some(("after", id)),
            Resume::LastEventIdParam(id) => Some(("last_event_id", id)),
            Resume::Live | Resume::Header(_) => None,
        };
        let mut request = client
            .http()
            .get(url::events(base, room, query, client.token()))
            .header(ACCEPT, "text/event-stream");
        if let Resume::Header(id) = resume {
            request = request.header("last-event-id", id);
        }
        let timeout = client.settings().request_timeout;
        let response = tokio::time::timeout(timeout, request.send())
            .await
            .map_err(|_| Error::Timeout {
                base: base.clone(),
                after: timeout,
            })?
            // The URL may carry the token: keep it out of the error.
            .map_err(|err| network(base, err.without_url()))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = if status == 200 {
            Body::Events {
                response,
                parser: EventParser::default(),
                idle: Idle::new(client.settings().idle_timeout),
            }
        } else {
            Body::Refused(response)
        };
        Ok(SseConnection {
            base: base.clone(),
            status,
            headers,
            body,
            last_event_id: None,
        })
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The id of the last event that carried one, as a browser keeps it
    /// for its `Last-Event-ID`.
    pub fn last_event_id(&self) -> Option<u64> {
        self.last_event_id
    }

    /// The next event, with messages parsed into [`Message`]s.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, Error> {
        self.next_as().await
    }

    /// The next event: `Ok(None)` once the server has ended the stream;
    /// `Err(Error::Api)` for a refusal (status other than `200`), then
    /// `Ok(None)`; `Err` when the connection broke or an event is not what
    /// the API says.
    pub async fn next_as<M: Payload>(&mut self) -> Result<Option<SseEvent<M>>, Error> {
        let (response, parser, idle) = match &mut self.body {
            Body::Events {
                response,
                parser,
                idle,
            } => (response, parser, idle),
            Body::Done => return Ok(None),
            Body::Refused(_) => {
                let Body::Refused(response) = std::mem::replace(&mut self.body, Body::Done) else {
                    return Ok(None);
                };
                return Err(read_error(response).await.into());
            }
        };
        let failure = loop {
            match parser.next_event() {
                Ok(Some(event)) => {
                    return understand(event, &mut self.last_event_id, &self.base).map(Some);
                }
                Ok(None) => {}
                Err(too_long) => break Error::protocol(&self.base, too_long.to_string()),
            }
            let Some(chunk) = idle.watch(response.chunk()).await else {
                break Error::Timeout {
                    base: self.base.clone(),
                    after: idle.period(),
                };
            };
            match chunk {
                Ok(Some(chunk)) => parser.feed(&chunk),
                // What follows the last blank line is not an event.
                Ok(None) => {
                    self.body = Body::Done;
                    return Ok(None);
                }
                // The URL may carry the token: keep it out of the error.
                Err(err) => break network(&self.base, err.without_url()),
            }
        };
        self.body = Body::Done;
        Err(failure)
    }
}

/// An event as the API means it; `last_event_id` follows the ids as a
/// browser's does.
fn understand<M: Payload>(
    event: Dispatched<'_>,
    last_event_id: &mut Option<u64>,
    base: &Url,
) -> Result<SseEvent<M>, Error> {
    if let Ok(id) = event.id.parse() {
        *last_event_id = Some(id);
    }
    let parsed = match event.event {
        sse::MESSAGE => serde_json::from_str(event.data).map(SseEvent::Message),
        sse::GAP => serde_json::from_str(event.data).map(SseEvent::Gap),
        other => {
            return Ok(SseEvent::Other {
                event: other.to_owned(),
                data: event.data.to_owned(),
            });
        }
    };
    parsed.map_err(|err| Error::protocol(base, format!("{} event: {err}", event.event)))
}

impl fmt::Debug for SseConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseConnection")
            .field("base", &self.base.as_str())
            .field("status", &self.status)
            .field("last_event_id", &self.last_event_id)
            .finish_non_exhaustive()
    }
}
