//! The one place that turns every failure into an HTTP answer.
//!
//! Every error answer is a [`wire::ErrorBody`], `{"error": "<code>",
//! "detail": "<human text>"}`, with the status the contract names
//! (docs/API.md, "Errors"). Codes are stable; details are for humans and
//! may change. A 500 tells the client nothing of the cause, which is logged.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use wire::{ErrorBody, ErrorCode};

use crate::broker::BrokerError;
use crate::limits::TooManyConnections;
use crate::message::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("request body is not valid JSON for this request: {0}")]
    BadJson(String),
    #[error("{0}")]
    BadQuery(String),
    #[error("no such route")]
    NotFound,
    /// No token, or one that is malformed, forged or expired; the text
    /// says which, never quoting the token.
    #[error("{0}")]
    Unauthorized(String),
    /// The token does not allow this room (or only reading it).
    #[error("the token does not allow this in room {0}")]
    ForbiddenRoom(crate::message::RoomName),
    /// A WebSocket upgrade from a page whose origin is not allowed.
    #[error("origin {0} is not allowed (ALLOWED_ORIGINS)")]
    ForbiddenOrigin(String),
    /// A plain request to a WebSocket route.
    #[error("this route speaks WebSocket: send an upgrade request")]
    UpgradeRequired,
    /// A WebSocket upgrade request that is not valid (RFC 6455, 4.2.1).
    #[error("invalid WebSocket handshake: {0}")]
    BadHandshake(String),
    #[error("method not allowed here; allowed: {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("too many messages; retry in {} s", retry_after.as_secs_f64().ceil())]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    TooManyConnections(#[from] TooManyConnections),
    #[error("the message broker is unavailable; retry shortly")]
    BrokerUnavailable(#[source] BrokerError),
    #[error("this instance is shutting down; retry (another instance will answer)")]
    ShuttingDown,
    #[error("no message arrived within {} s; poll again", .0.as_secs())]
    PollTimeout(Duration),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// The stable, machine-readable code of the error body.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Invalid(invalid) => invalid.code(),
            ApiError::BadJson(_) => ErrorCode::InvalidJson,
            ApiError::BadQuery(_) => ErrorCode::InvalidQuery,
            ApiError::NotFound => ErrorCode::NotFound,
            ApiError::ForbiddenOrigin(_) => ErrorCode::ForbiddenOrigin,
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::ForbiddenRoom(_) => ErrorCode::ForbiddenRoom,
            ApiError::UpgradeRequired => ErrorCode::UpgradeRequired,
            ApiError::BadHandshake(_) => ErrorCode::InvalidHandshake,
            ApiError::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            ApiError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::TooManyConnections(_) => ErrorCode::TooManyConnections,
            ApiError::BrokerUnavailable(_) => ErrorCode::BrokerUnavailable,
            ApiError::ShuttingDown => ErrorCode::ShuttingDown,
            ApiError::PollTimeout(_) => ErrorCode::Timeout,
            ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// The body of this error's answer (or of a WebSocket `error` frame).
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code(),
            detail: self.to_string(),
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(err: BrokerError) -> Self {
        if err.is_transient() {
            ApiError::BrokerUnavailable(err)
        } else {
            ApiError::Internal(Box::new(err))
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Invalid(ValidationError::Room) | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Invalid(_)
            | ApiError::BadJson(_)
            | ApiError::BadQuery(_)
            | ApiError::BadHandshake(_) => StatusCode::BAD_REQUEST,
            ApiError::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            ApiError::ForbiddenOrigin(_) | ApiError::ForbiddenRoom(_) => StatusCode::FORBIDDEN,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. }
            | ApiError::TooManyConnections(TooManyConnections::Client(_)) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::TooManyConnections(TooManyConnections::Instance(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::BrokerUnavailable(_) | ApiError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::PollTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponseBuilder::new(self.status_code());
        match self {
            ApiError::MethodNotAllowed { allow } => {
                response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
            }
            ApiError::RateLimited { retry_after } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                response.insert_header((header::RETRY_AFTER, secs));
            }
            ApiError::BrokerUnavailable(_) | ApiError::TooManyConnections(_) => {
                response.insert_header((header::RETRY_AFTER, 1));
            }
            ApiError::Unauthorized(_) => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"chat\""),
                ));
            }
            ApiError::UpgradeRequired => {
                response.insert_header((header::UPGRADE, HeaderValue::from_static("websocket")));
            }
            ApiError::ShuttingDown => {
                response.insert_header((header::RETRY_AFTER, 0));
                response.force_close();
            }
            ApiError::Internal(err) => log::error!("internal error: {}", error_chain(err.as_ref())),
            _ => {}
        }
        if let ApiError::BrokerUnavailable(err) = self {
            log::warn!("answering 503: {err}");
        }
        response
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .json(self.body())
    }
}

/// An error and all its causes on one line, for the log.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;

    use super::*;

    async fn body_of(err: ApiError) -> (StatusCode, serde_json::Value) {
        let response = err.error_response();
        let status = response.status();
        let bytes = to_bytes(response.into_body()).await.expect("body");
        (status, serde_json::from_slice(&bytes).expect("JSON body"))
    }

    #[tokio::test]
    async fn a_bad_room_is_404_with_a_json_body() {
        let (status, body) = body_of(ApiError::Invalid(ValidationError::Room)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "invalid_room");
        assert!(body["detail"].as_str().is_some_and(|d| d.contains("1-64")));
    }

    #[tokio::test]
    async fn internal_errors_do_not_leak_their_cause() {
        let (status, body) = body_of(ApiError::Internal("secret database path".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["detail"], "internal error");
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let response = ApiError::MethodNotAllowed { allow: "GET" }.error_response();
        assert_eq!(
            response.headers().get(header::ALLOW).map(|v| v.as_bytes()),
            Some(&b"GET"[..])
        );
    }

    #[test]
    fn rate_limited_says_when_to_retry_in_whole_seconds() {
        let response = ApiError::RateLimited {
            retry_after: Duration::from_millis(1200),
        }
        .error_response();
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
    }
}
