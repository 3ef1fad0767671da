//! Parsing requests at the edge: the room in the path, the resume cursor,
//! query parameters and JSON bodies, each failure turned into the
//! contract's error answer.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::str::FromStr;

use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use crate::error::ApiError;
use crate::message::{IdempotencyKey, RoomName};

/// The `{room}` segment of the path, validated: a bad name is a 404.
#[derive(Debug, Clone)]
pub struct RoomPath(pub RoomName);

impl FromRequest for RoomPath {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let room = request.match_info().get("room").ok_or(ApiError::NotFound);
        ready(room.and_then(|raw| Ok(RoomPath(RoomName::parse(raw)?))))
    }
}

/// Where a client resumes: the `Last-Event-ID` header (a browser's
/// `EventSource` reconnecting), or `?after=` / `?last_event_id=` (a first
/// connect, which cannot set headers). The header wins, then `after`.
/// `None`: the client gave no cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub Option<u64>);

/// What every form of the cursor must be.
const CURSOR_EXPECTED: &str = "a message id (0 or more)";

impl Cursor {
    fn parse(request: &HttpRequest) -> Result<Self, ApiError> {
        let header = match request.headers().get("last-event-id") {
            None => None,
            Some(value) => Some(value.to_str().map(str::to_owned).map_err(|_| {
                ApiError::BadQuery(format!("Last-Event-ID must be {CURSOR_EXPECTED}"))
            })?),
        };
        let query = web::Query::<HashMap<String, String>>::from_query(request.query_string())
            .map_err(|err| ApiError::BadQuery(err.to_string()))?;
        let from_header = optional_param(header.as_ref(), "Last-Event-ID", CURSOR_EXPECTED)?;
        let from_after = optional_param(query.get("after"), "after", CURSOR_EXPECTED)?;
        let from_alias =
            optional_param(query.get("last_event_id"), "last_event_id", CURSOR_EXPECTED)?;
        Ok(Cursor(from_header.or(from_after).or(from_alias)))
    }
}

impl FromRequest for Cursor {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Cursor::parse(request))
    }
}

/// The `Idempotency-Key` header, if the request has one; a malformed one
/// is a 400.
#[derive(Debug, Clone)]
pub struct IdempotencyKeyHeader(pub Option<IdempotencyKey>);

impl FromRequest for IdempotencyKeyHeader {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let key = match request.headers().get("idempotency-key") {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .map_err(|_| crate::message::ValidationError::IdempotencyKey)
                .and_then(IdempotencyKey::parse)
                .map(Some)
                .map_err(ApiError::from),
        };
        ready(key.map(IdempotencyKeyHeader))
    }
}

/// A query parameter parsed as `T`, or `None` when absent or empty.
pub fn optional_param<T: FromStr>(
    raw: Option<&String>,
    name: &str,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    match raw
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
    {
        None => Ok(None),
        Some(value) => value
            .parse()
            .map(Some)
            .map_err(|_| ApiError::BadQuery(format!("{name} must be {expected}, not {value:?}"))),
    }
}

/// JSON bodies: size limit, `Content-Type` check and error shapes.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _request| {
            let api_error = match err {
                JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
                JsonPayloadError::OverflowKnownLength { limit, .. }
                | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit },
                JsonPayloadError::Deserialize(err) => ApiError::BadJson(err.to_string()),
                other => ApiError::BadJson(other.to_string()),
            };
            api_error.into()
        })
}

/// Query strings that do not parse at all (e.g. broken percent-encoding).
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _request| {
        ApiError::BadQuery(err.to_string()).into()
    })
}
