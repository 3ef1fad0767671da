//! Publishing over HTTP: `POST /rooms/{room}/messages`, stored at most once
//! however often it is retried.

use reqwest::Url;
use wire::{Message, PublishBody, RoomName};

use crate::client::Client;
use crate::error::Error;
use crate::http::{network, read_json, refusal};
use crate::key::IdempotencyKey;
use crate::url;

/// The header that carries a publish's idempotency key.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The header that marks an answer as the first publish's, replayed.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The author; the server says `"anonymous"` when there is none (and,
    /// with authentication on, uses the token's name instead).
    pub author: Option<String>,
    pub message: String,
    /// The idempotency key; one is generated when there is none. Give your
    /// own to make retries of your own (e.g. after a restart) safe too.
    pub key: Option<IdempotencyKey>,
}

impl Publish {
    pub fn new(message: impl Into<String>) -> Self {
        Publish {
            author: None,
            message: message.into(),
            key: None,
        }
    }

    pub fn author(mut self, author: impl Into<String>) -> Self {
        self.author = Some(author.into());
        self
    }

    pub fn key(mut self, key: IdempotencyKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The body and the key the publish goes out with: the caller's key, or
    /// a fresh one that every retry then reuses.
    pub(crate) fn into_parts(self) -> (PublishBody, IdempotencyKey) {
        let body = PublishBody {
            author: self.author,
            message: Some(self.message),
        };
        (body, self.key.unwrap_or_else(IdempotencyKey::generate))
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub message: Message,
    /// The key had been used already (by an earlier attempt whose answer
    /// was lost, or by the caller): this is the message stored then, and
    /// nothing new was stored.
    pub replayed: bool,
}

impl Client {
    /// Publishes a message in `room`.
    ///
    /// Sent with an `Idempotency-Key`, and retried with the same key when
    /// the network fails or an instance cannot serve (`502`, `503`, `504`),
    /// at the next base after a backoff, up to the configured attempts: a
    /// message is stored once however many attempts it takes. Other error
    /// statuses come back at once as [`Error::Api`] (`429` is retried after
    /// its `Retry-After` only with
    /// [`ClientBuilder::retry_rate_limited`](crate::ClientBuilder::retry_rate_limited)).
    pub async fn publish(&self, room: &RoomName, publish: Publish) -> Result<Published, Error> {
        let (body, key) = publish.into_parts();
        let body = &body;
        let key = key.as_str();
        self.with_retries(|base| async move {
            let request = self
                .http()
                .post(url::messages(&base, room))
                .timeout(self.settings().request_timeout)
                .header(IDEMPOTENCY_KEY, key)
                .json(body);
            let request = self.with_api_key(self.authorize(request));
            let response = request.send().await.map_err(|err| network(&base, err))?;
            read_published(&base, response).await
        })
        .await
    }
}

/// `201` is a new message; `200` with `Idempotent-Replayed: true` the one
/// stored under the key before.
async fn read_published(base: &Url, response: reqwest::Response) -> Result<Published, Error> {
    let replayed = match response.status().as_u16() {
        201 => false,
        200 => response
            .headers()
            .get(IDEMPOTENT_REPLAYED)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true")),
        _ => return Err(refusal(base, response).await),
    };
    let message = read_json(base, response).await?;
    Ok(Published { message, replayed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_without_a_key_gets_a_fresh_one() {
        let (_, first) = Publish::new("hi").into_parts();
        let (_, second) = Publish::new("hi").into_parts();
        assert_ne!(first, second);
    }

    #[test]
    fn a_publish_keeps_the_callers_key_and_fields() {
        let key = IdempotencyKey::parse("order-17").expect("a valid key");
        let (body, sent) = Publish::new("hi")
            .author("alice")
            .key(key.clone())
            .into_parts();
        assert_eq!(sent, key);
        assert_eq!(
            body,
            PublishBody {
                author: Some("alice".into()),
                message: Some("hi".into()),
            }
        );
    }
}
