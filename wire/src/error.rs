//! The error body every failed request gets, and its stable codes.
//!
//! `{"error": "<code>", "detail": "<human text>"}`: the code is for
//! programs and never changes meaning; the detail is for people and may
//! change. WebSocket `error` frames carry the same codes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Every error code of the API (docs/API.md, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body (or a WebSocket frame) is not JSON of the right shape.
    InvalidJson,
    /// 400: `message` missing, blank, too long, or with control characters.
    InvalidMessage,
    /// 400: `author` blank, too long, or with control characters.
    InvalidAuthor,
    /// 400: a bad query parameter or `Last-Event-ID`.
    InvalidQuery,
    /// 400: an `Idempotency-Key` (or WebSocket `key`) of the wrong shape.
    InvalidIdempotencyKey,
    /// 400: a malformed WebSocket upgrade.
    InvalidHandshake,
    /// WebSocket: a frame whose `type` is missing or unknown.
    UnknownType,
    /// 401: no token, or one that is malformed, forged or expired (with
    /// `WWW-Authenticate: Bearer`).
    Unauthorized,
    /// 403: the token does not allow this room (or only reading it, for a
    /// publish).
    ForbiddenRoom,
    /// 403: a WebSocket upgrade from an origin outside `ALLOWED_ORIGINS`.
    ForbiddenOrigin,
    /// 404: the room name is not 1-64 characters of `[A-Za-z0-9_-]`.
    InvalidRoom,
    /// 404: no such route.
    NotFound,
    /// 405: wrong method; the `Allow` header names the right ones.
    MethodNotAllowed,
    /// 408: `/get-messages` only: nothing arrived within the poll timeout.
    Timeout,
    /// 413: the body is larger than any valid request.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 426: a plain request to a WebSocket route.
    UpgradeRequired,
    /// 429: over the publish rate; `Retry-After` says when to retry.
    RateLimited,
    /// 429: this client holds too many connections; 503: this instance
    /// is full (with `Retry-After`).
    TooManyConnections,
    /// 503: the broker cannot take or serve messages right now.
    BrokerUnavailable,
    /// 503: the instance is stopping; retry (elsewhere).
    ShuttingDown,
    /// 503: `/readyz` of an instance that cannot take clients.
    NotReady,
    /// 503: the gateway reaches no instance of the service.
    ServiceUnavailable,
    /// 400: the gateway could not read the request.
    BadRequest,
    /// 500: a bug; the cause is logged, not shown.
    InternalError,
    /// A code this version does not know (from a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::InvalidAuthor => "invalid_author",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::InvalidIdempotencyKey => "invalid_idempotency_key",
            ErrorCode::InvalidHandshake => "invalid_handshake",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::ForbiddenRoom => "forbidden_room",
            ErrorCode::ForbiddenOrigin => "forbidden_origin",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::UpgradeRequired => "upgrade_required",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::BrokerUnavailable => "broker_unavailable",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorCode,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_on_the_wire_and_in_as_str() {
        for code in [
            ErrorCode::InvalidJson,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::BrokerUnavailable,
            ErrorCode::InternalError,
        ] {
            assert_eq!(
                serde_json::to_string(&code).expect("serializable"),
                format!("\"{}\"", code.as_str())
            );
        }
    }

    #[test]
    fn an_error_body_has_exactly_error_and_detail() {
        let body = ErrorBody {
            error: ErrorCode::RateLimited,
            detail: "slow down".into(),
        };
        assert_eq!(
            serde_json::to_string(&body).expect("serializable"),
            r#"{"error":"rate_limited","detail":"slow down"}"#
        );
    }

    #[test]
    fn a_code_from_a_newer_server_reads_as_unknown() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"error":"brand_new","detail":"?"}"#).expect("readable");
        assert_eq!(body.error, ErrorCode::Unknown);
    }
}
