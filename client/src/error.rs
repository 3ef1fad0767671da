//! Everything that can go wrong, typed: what the server refused (with its
//! error body), what the network did, what the server said that the API
//! does not allow.

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use tokio_tungstenite::tungstenite;
use wire::{ErrorBody, ErrorCode};

/// A failed call of this library. More kinds may come (hence
/// `non_exhaustive`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error status (and, from a server of this
    /// API, an error body).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The request could not be sent or its answer not read: connection
    /// refused or reset, no answer in time. Worth retrying.
    #[error("{base}: {source}")]
    Http {
        base: Url,
        #[source]
        source: reqwest::Error,
    },
    /// A WebSocket could not be opened, or broke.
    #[error("{base}: WebSocket: {source}")]
    WebSocket {
        base: Url,
        #[source]
        source: Box<tungstenite::Error>,
    },
    /// Nothing came from the server within the time allowed.
    #[error("{base}: nothing within {after:?}")]
    Timeout { base: Url, after: Duration },
    /// The server said something the API does not allow (a body that is
    /// not the documented JSON, a frame of no known type).
    #[error("{base}: unexpected answer: {detail}")]
    Protocol { base: Url, detail: String },
    /// The server refused a WebSocket frame of ours with an `error` frame;
    /// the connection stays open.
    #[error("refused: {} ({})", .0.error, .0.detail)]
    Rejected(ErrorBody),
    /// The WebSocket was closed (by the server with this code and reason,
    /// or by us).
    #[error("connection closed ({code}: {reason})")]
    Closed { code: u16, reason: String },
    /// More than this many events arrived while waiting for the answer to a
    /// frame: they are kept for `next_event`, but waiting on would hold an
    /// unbounded number of them.
    #[error("more than {0} events arrived while waiting for an answer")]
    Backlog(usize),
}

impl Error {
    /// The server at `base` said something the API does not allow.
    pub(crate) fn protocol(base: &Url, detail: impl Into<String>) -> Self {
        Error::Protocol {
            base: base.clone(),
            detail: detail.into(),
        }
    }
}

/// An error answer: its status, its body if it had the API's shape, and
/// its `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ApiError {
    pub status: u16,
    /// `None` when the body was not `{"error": ..., "detail": ...}` (e.g.
    /// a proxy's own page).
    pub body: Option<ErrorBody>,
    /// When the server asked to be left alone for a while (`429`, `503`).
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// The API's error code, if the body carried one.
    pub fn code(&self) -> Option<ErrorCode> {
        self.body.as_ref().map(|body| body.error)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(body) = &self.body {
            write!(f, " {}: {}", body.error, body.detail)?;
        }
        Ok(())
    }
}

/// Why a [`Client`](crate::Client) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("a client needs at least one base URL")]
    NoBase,
    #[error("{url:?} is not a base URL (http:// or https://, no query): {reason}")]
    InvalidBase { url: String, reason: String },
    #[error("the {0} contains characters an HTTP header cannot carry")]
    InvalidHeader(&'static str),
    #[error("HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_shows_its_status_code_and_detail() {
        let error = ApiError {
            status: 429,
            body: Some(ErrorBody {
                error: ErrorCode::RateLimited,
                detail: "slow down".into(),
            }),
            retry_after: Some(Duration::from_secs(1)),
        };
        assert_eq!(error.to_string(), "HTTP 429 rate_limited: slow down");
        assert_eq!(error.code(), Some(ErrorCode::RateLimited));
    }

    #[test]
    fn an_api_error_without_a_body_shows_its_status() {
        let error = ApiError {
            status: 502,
            body: None,
            retry_after: None,
        };
        assert_eq!(error.to_string(), "HTTP 502");
        assert_eq!(error.code(), None);
    }
}
