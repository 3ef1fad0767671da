//! Reading over plain HTTP: a room's history, and one long poll.

use std::time::Duration;

use reqwest::Url;
use reqwest::header::CONNECTION;
use wire::{HistoryAnswer, Message, PollAnswer, RoomName};

use crate::client::Client;
use crate::error::Error;
use crate::http::{read_json, refusal};
use crate::payload::Payload;
use crate::url;

/// A history read: messages oldest first, and whether some before them
/// (after the requested cursor) are gone for good.
pub type History<M = Message> = HistoryAnswer<M>;

/// The answer to one long poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll<M = Message> {
    /// `200`: messages after the cursor (at most a batch).
    Messages {
        messages: Vec<M>,
        /// Where to poll from next.
        cursor: u64,
        /// Some messages after the requested cursor are gone for good;
        /// `messages` starts after them.
        gap: bool,
    },
    /// `204`: nothing arrived within the timeout; poll again with the
    /// same cursor.
    Timeout,
    /// `204` with `Connection: close`: the instance is stopping and let
    /// the poll go; poll again (through a load balancer, or at another
    /// base) with the same cursor.
    Released,
}

impl Client {
    /// `GET /rooms/{room}/history`: the latest `limit` messages (the
    /// server's default is 50, its maximum 500), or those after `after`.
    /// Retried like a publish when the network or an instance fails.
    pub async fn history(
        &self,
        room: &RoomName,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<History, Error> {
        self.with_retries(|base| async move { self.history_at(&base, room, after, limit).await })
            .await
    }

    /// One history read at `base`.
    pub(crate) async fn history_at<M: Payload>(
        &self,
        base: &Url,
        room: &RoomName,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<History<M>, Error> {
        let url = url::history(base, room, after, limit);
        let response = self.get(base, url, self.settings().request_timeout).await?;
        match response.status().as_u16() {
            200 => read_json(base, response).await,
            _ => Err(refusal(base, response).await),
        }
    }

    /// One long poll (`GET /rooms/{room}/poll`) at the preferred base: held
    /// by the server until a message after `after` exists, or `timeout`
    /// (which the server caps). Without `after`, it waits for messages
    /// published after it arrived. Not retried: a failure is for the caller
    /// to see (a [`Subscription`](crate::Subscription) does all of this).
    pub async fn poll(
        &self,
        room: &RoomName,
        after: Option<u64>,
        timeout: Duration,
    ) -> Result<Poll, Error> {
        self.poll_at(self.base(self.preferred()), room, after, timeout)
            .await
    }

    /// One long poll at `base`.
    pub(crate) async fn poll_at<M: Payload>(
        &self,
        base: &Url,
        room: &RoomName,
        after: Option<u64>,
        timeout: Duration,
    ) -> Result<Poll<M>, Error> {
        let url = url::poll(base, room, after, timeout);
        let response = self
            .get(base, url, timeout + self.settings().request_timeout)
            .await?;
        match response.status().as_u16() {
            200 => {
                let answer: PollAnswer<M> = read_json(base, response).await?;
                Ok(Poll::Messages {
                    messages: answer.messages,
                    cursor: answer.cursor,
                    gap: answer.gap,
                })
            }
            204 if closes(&response) => Ok(Poll::Released),
            204 => Ok(Poll::Timeout),
            _ => Err(refusal(base, response).await),
        }
    }
}

/// Whether the server closes the connection after this answer.
fn closes(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get_all(CONNECTION)
        .iter()
        .any(|value| value.as_bytes().eq_ignore_ascii_case(b"close"))
}
