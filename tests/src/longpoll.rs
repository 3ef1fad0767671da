//! A long-poll client that behaves like a real one: it polls with each
//! cursor it is given and keeps every message exactly as received.

use std::time::Duration;

use common::Message;
use serde::Deserialize;

/// One poll's answer.
#[derive(Debug)]
pub enum Poll {
    Messages {
        messages: Vec<Message>,
        cursor: u64,
        gap: bool,
    },
    /// `204`: nothing arrived before the timeout.
    Timeout,
}

/// The body of a `200` poll answer.
#[derive(Debug, Deserialize)]
pub(crate) struct PollBody {
    pub(crate) messages: Vec<Message>,
    pub(crate) cursor: u64,
    #[serde(default)]
    pub(crate) gap: bool,
}

/// Polls `base` (a longpoll-svc URL) in one room.
#[derive(Debug, Clone)]
pub struct LongPoller {
    pub client: reqwest::Client,
    pub base: String,
    pub room: String,
}

impl LongPoller {
    pub fn new(base: &str, room: &str) -> Self {
        LongPoller {
            client: crate::app::http_client(),
            base: base.to_owned(),
            room: room.to_owned(),
        }
    }

    pub fn url(&self, after: Option<u64>, timeout: Duration) -> String {
        let mut url = format!(
            "{}/rooms/{}/poll?timeout={}",
            self.base,
            self.room,
            timeout.as_secs_f64()
        );
        if let Some(after) = after {
            url.push_str(&format!("&after={after}"));
        }
        url
    }

    /// One poll; panics on anything but `200` or `204`.
    pub async fn poll(&self, after: Option<u64>, timeout: Duration) -> Poll {
        let response = self
            .client
            .get(self.url(after, timeout))
            .send()
            .await
            .expect("poll sent");
        match response.status().as_u16() {
            204 => Poll::Timeout,
            200 => {
                let body: PollBody = response.json().await.expect("poll body");
                Poll::Messages {
                    messages: body.messages,
                    cursor: body.cursor,
                    gap: body.gap,
                }
            }
            status => panic!(
                "poll answered {status}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }

    /// Polls from `after`, following cursors, until `count` messages have
    /// arrived; panics if that takes longer than `within`.
    pub async fn collect(&self, mut after: u64, count: usize, within: Duration) -> Vec<Message> {
        let mut received = Vec::with_capacity(count);
        let deadline = tokio::time::Instant::now() + within;
        while received.len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {count} messages within {within:?}",
                received.len()
            );
            if let Poll::Messages {
                messages, cursor, ..
            } = self.poll(Some(after), Duration::from_secs(5)).await
            {
                received.extend(messages);
                after = cursor;
            }
        }
        received
    }
}
