//! One connection of a subscription, whatever its transport, read as one
//! sequence: messages, gaps, and finally how it ended.
//!
//! Long polling has no connection: its "link" is a run of polls at one
//! base, each with the cursor the subscription has reached, until one
//! fails or the instance releases it.

use std::collections::VecDeque;

use reqwest::Url;
use wire::{Gap, RoomName};

use super::Disconnect;
use crate::client::Client;
use crate::error::Error;
use crate::payload::Payload;
use crate::read::Poll;
use crate::sse::{Resume, SseConnection, SseEvent};
use crate::transport::Transport;
use crate::ws::{WsConnection, WsEvent};

/// What a link gave.
pub(super) enum Item<M> {
    Message(M),
    Gap(Gap),
    Ended(Disconnect),
}

pub(super) enum Link<M> {
    Poll(Polls<M>),
    Sse(SseConnection),
    Ws(WsConnection),
}

/// Long polls at one base.
pub(super) struct Polls<M> {
    client: Client,
    base: Url,
    room: RoomName,
    /// The rest of the last answer: an answer holds up to a batch of
    /// messages, handed over one at a time.
    batch: VecDeque<M>,
}

impl<M: Payload> Link<M> {
    /// Opens a link at `base` that delivers what follows `cursor`. A first
    /// connect asks with `?after=` (as a page that knows its cursor does);
    /// an SSE reconnect with `Last-Event-ID` (as a browser does).
    pub(super) async fn open(
        transport: Transport,
        client: &Client,
        base: &Url,
        room: &RoomName,
        cursor: u64,
        first: bool,
    ) -> Result<Self, Disconnect> {
        match transport {
            Transport::LongPoll => Ok(Link::Poll(Polls {
                client: client.clone(),
                base: base.clone(),
                room: room.clone(),
                batch: VecDeque::new(),
            })),
            Transport::Sse => {
                let resume = if first {
                    Resume::After(cursor)
                } else {
                    Resume::Header(cursor)
                };
                let mut connection = SseConnection::open(client, base, room, resume)
                    .await
                    .map_err(Disconnect::from)?;
                if connection.status() != 200 {
                    // Reading a refusal gives its error (and body).
                    return Err(match connection.next_as::<M>().await {
                        Err(err) => Disconnect::from(err),
                        Ok(_) => Disconnect::Failed(format!("HTTP {}", connection.status())),
                    });
                }
                Ok(Link::Sse(connection))
            }
            Transport::Ws => WsConnection::connect(client, base, room, Some(cursor))
                .await
                .map(Link::Ws)
                .map_err(Disconnect::from),
        }
    }

    /// The next message or gap, or how the link ended. `cursor` is where
    /// the subscription stands (long polls ask from there).
    pub(super) async fn next(&mut self, cursor: u64) -> Item<M> {
        match self {
            Link::Poll(polls) => polls.next(cursor).await,
            Link::Sse(connection) => loop {
                match connection.next_as().await {
                    Ok(Some(SseEvent::Message(message))) => return Item::Message(message),
                    Ok(Some(SseEvent::Gap(gap))) => return Item::Gap(gap),
                    // Events of a newer server: the stream goes on (or
                    // ends, and says so).
                    Ok(Some(SseEvent::Other { .. })) => {}
                    Ok(None) => return Item::Ended(Disconnect::StreamEnded),
                    Err(err) => return Item::Ended(err.into()),
                }
            },
            Link::Ws(connection) => loop {
                match connection.next_event_as().await {
                    Ok(Some(WsEvent::Message(message))) => return Item::Message(message),
                    Ok(Some(WsEvent::Gap(gap))) => return Item::Gap(gap),
                    Ok(Some(WsEvent::Closed { code, reason })) => {
                        return Item::Ended(Disconnect::Closed { code, reason });
                    }
                    // Answers to frames a subscription never sends.
                    Ok(Some(WsEvent::Ack(_) | WsEvent::Error { .. } | WsEvent::Pong { .. })) => {}
                    Ok(None) => {
                        return Item::Ended(Disconnect::Failed(
                            "the connection ended without a close frame".into(),
                        ));
                    }
                    Err(err) => return Item::Ended(err.into()),
                }
            },
        }
    }
}

impl<M: Payload> Polls<M> {
    async fn next(&mut self, cursor: u64) -> Item<M> {
        loop {
            if let Some(message) = self.batch.pop_front() {
                return Item::Message(message);
            }
            let timeout = self.client.settings().poll_timeout;
            // Boxed, once per poll, for the reason `Driver::next` boxes
            // connecting: a request is a large future.
            let answer =
                Box::pin(
                    self.client
                        .poll_at(&self.base, &self.room, Some(cursor), timeout),
                )
                .await;
            match answer {
                Ok(Poll::Messages {
                    messages,
                    cursor: next,
                    gap,
                }) => {
                    if messages.is_empty() && !gap {
                        // Not an answer the API gives; polling again at
                        // once could spin, so back off as from a failure.
                        return Item::Ended(Disconnect::Failed("an empty poll answer".into()));
                    }
                    let resume_from = messages.first().map_or(next + 1, Payload::id);
                    self.batch.extend(messages);
                    if gap {
                        return Item::Gap(Gap {
                            after: cursor,
                            resume_from,
                        });
                    }
                }
                Ok(Poll::Timeout) => {}
                Ok(Poll::Released) => return Item::Ended(Disconnect::PollReleased),
                Err(err) => return Item::Ended(err.into()),
            }
        }
    }
}

impl From<Error> for Disconnect {
    fn from(err: Error) -> Self {
        match err {
            Error::Api(api) => Disconnect::Status(api),
            Error::Closed { code, reason } => Disconnect::Closed { code, reason },
            err => Disconnect::Failed(err.to_string()),
        }
    }
}
