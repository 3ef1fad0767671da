//! Plumbing shared by the plain HTTP calls: trying again safely, and
//! reading answers into typed results or typed errors.
//!
//! Only requests that are safe to repeat are retried: reads, and publishes,
//! which always carry an idempotency key. They are retried when the failure
//! says nothing about the request itself: the network (connection refused
//! or cut, no answer in time), or an instance or gateway that cannot serve
//! right now (`502`, `503`, `504`). Each retry goes to the next base, after
//! a backoff. Any other error status is the answer, returned at once.

use std::future::Future;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Response, Url};
use serde::de::DeserializeOwned;
use wire::ErrorBody;

use crate::backoff::Retry;
use crate::client::Client;
use crate::error::{ApiError, Error};

/// The most of an error body that is read: the API's are a line of JSON;
/// anything longer is not one of them and is not kept.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What a failed attempt means for the next one.
enum Verdict {
    /// Try again (at the next base), waiting at least `retry_after`.
    Retry { retry_after: Option<Duration> },
    /// Try again at the same base once its `Retry-After` has passed: the
    /// limit is on us, wherever we go.
    RetrySameBase { retry_after: Option<Duration> },
    /// The error is the answer.
    Final,
}

impl Client {
    /// Sends a GET (with the bearer token, if any) that must be answered
    /// within `timeout`; the answer, whatever its status.
    pub(crate) async fn get(
        &self,
        base: &Url,
        url: Url,
        timeout: Duration,
    ) -> Result<Response, Error> {
        let request = self.http().get(url).timeout(timeout);
        self.authorize(request)
            .send()
            .await
            .map_err(|err| network(base, err))
    }

    /// Runs `attempt` against one base after another until it succeeds, it
    /// fails in a way retrying cannot fix, or the attempts run out (the
    /// last error is returned).
    pub(crate) async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(Url) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let settings = self.settings();
        let mut retry = Retry::new(settings.backoff);
        let mut index = self.preferred();
        let mut tried = 1;
        loop {
            let error = match attempt(self.base(index).clone()).await {
                Ok(answer) => {
                    self.prefer(index);
                    return Ok(answer);
                }
                Err(error) => error,
            };
            let retry_after = match self.verdict(&error) {
                Verdict::Final => return Err(error),
                _ if tried >= settings.attempts => return Err(error),
                Verdict::Retry { retry_after } => {
                    index += 1;
                    retry_after
                }
                Verdict::RetrySameBase { retry_after } => retry_after,
            };
            tokio::time::sleep(retry.next_delay(retry_after)).await;
            tried += 1;
        }
    }

    fn verdict(&self, error: &Error) -> Verdict {
        match error {
            // A request that could not be built or an answer that could not
            // be decoded would fail the same way again.
            Error::Http { source, .. } if source.is_builder() || source.is_decode() => {
                Verdict::Final
            }
            Error::Http { .. } | Error::Timeout { .. } => Verdict::Retry { retry_after: None },
            Error::Api(api) => match api.status {
                502..=504 => Verdict::Retry {
                    retry_after: api.retry_after,
                },
                429 if self.settings().retry_rate_limited => Verdict::RetrySameBase {
                    retry_after: api.retry_after,
                },
                _ => Verdict::Final,
            },
            _ => Verdict::Final,
        }
    }
}

/// The `Error` for a request to `base` that got no (whole) answer.
pub(crate) fn network(base: &Url, source: reqwest::Error) -> Error {
    Error::Http {
        base: base.clone(),
        source,
    }
}

/// Reads an error answer: its status, `Retry-After`, and body if it is the
/// API's error JSON.
pub(crate) async fn read_error(mut response: Response) -> ApiError {
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let mut body = Vec::new();
    // A body that breaks off or runs long is simply not an error body.
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > MAX_ERROR_BODY {
            body.clear();
            break;
        }
        body.extend_from_slice(&chunk);
    }
    ApiError {
        status,
        body: parse_error_body(&body),
        retry_after,
    }
}

/// The API's error body, if `body` is one.
pub(crate) fn parse_error_body(body: &[u8]) -> Option<ErrorBody> {
    serde_json::from_slice(body).ok()
}

/// `Retry-After` in seconds (the API never sends the HTTP-date form).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

/// Reads a success answer's JSON body.
pub(crate) async fn read_json<T: DeserializeOwned>(
    base: &Url,
    response: Response,
) -> Result<T, Error> {
    let body = response
        .bytes()
        .await
        .map_err(|source| network(base, source))?;
    serde_json::from_slice(&body).map_err(|err| Error::protocol(base, err.to_string()))
}

/// The error for an answer whose status is not one the request expects: an
/// error status with its body, or a success the API does not use here.
pub(crate) async fn refusal(base: &Url, response: Response) -> Error {
    let status = response.status();
    if status.is_success() {
        Error::protocol(base, format!("unexpected status {}", status.as_u16()))
    } else {
        read_error(response).await.into()
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use wire::ErrorCode;

    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_date_or_missing_retry_after_is_none() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn an_error_body_is_read_when_it_has_the_api_shape() {
        let body = parse_error_body(br#"{"error":"rate_limited","detail":"slow down"}"#);
        assert_eq!(body.map(|b| b.error), Some(ErrorCode::RateLimited));
        assert_eq!(parse_error_body(b"<html>Bad Gateway</html>"), None);
    }
}
