//! [`Caller`]: who is asking and what they may do, extracted on every room
//! route before anything else happens.

use std::future::{Ready, ready};
use std::time::SystemTime;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};

use super::claims::Grant;
use crate::client::ClientId;
use crate::error::ApiError;
use crate::http::AppState;
use crate::message::{Author, RoomName};

/// Who is asking, after authentication.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client the per-client budgets apply to: the token's subject, or
    /// the address.
    client: ClientId,
    access: Access,
}

/// What a caller may do.
#[derive(Debug, Clone)]
pub enum Access {
    /// Auth is off: anyone may read and publish, as any author.
    Open,
    /// A verified token, with its rooms and its author.
    User(Grant),
    /// A backend with the publish API key: publishes in any room, as any
    /// author, and is not rate limited; it reads with a token like anyone.
    Backend,
}

impl Caller {
    /// A caller with open access (auth off), for `client`.
    pub fn open(client: ClientId) -> Self {
        Caller {
            client,
            access: Access::Open,
        }
    }

    pub fn client(&self) -> &ClientId {
        &self.client
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    /// `Ok` if the caller may read `room`.
    pub fn may_read(&self, room: &RoomName) -> Result<(), ApiError> {
        match &self.access {
            Access::Open => Ok(()),
            Access::User(grant) if grant.may_read(room) => Ok(()),
            Access::User(_) => Err(ApiError::ForbiddenRoom(room.clone())),
            Access::Backend => Err(ApiError::Unauthorized(
                "the API key only publishes; reading needs a token".into(),
            )),
        }
    }

    /// `Ok` with the author its messages must carry (`None`: the body's), if
    /// the caller may publish in `room`.
    pub fn may_publish(&self, room: &RoomName) -> Result<Option<&Author>, ApiError> {
        match &self.access {
            Access::Open | Access::Backend => Ok(None),
            Access::User(grant) if grant.may_publish(room) => Ok(Some(&grant.author)),
            Access::User(_) => Err(ApiError::ForbiddenRoom(room.clone())),
        }
    }

    /// Whether its publishes count against a publish rate.
    pub fn is_rate_limited(&self) -> bool {
        !matches!(self.access, Access::Backend)
    }

    /// When its token expires: a connection it holds ends then.
    pub fn expires(&self) -> Option<SystemTime> {
        match &self.access {
            Access::User(grant) => grant.expires,
            Access::Open | Access::Backend => None,
        }
    }

    fn from_request(request: &HttpRequest) -> Result<Self, ApiError> {
        let state = request
            .app_data::<web::Data<AppState>>()
            .ok_or_else(|| ApiError::Internal("no application state".into()))?;
        let address = ClientId::of_request(request, state.config.trust_x_real_ip);
        let auth = &state.config.auth;
        let Some(verifier) = &auth.verifier else {
            return Ok(Caller::open(address));
        };
        if let Some(token) = bearer_token(request)? {
            let grant = verifier
                .verify(&token)
                .map_err(|refused| ApiError::Unauthorized(refused.to_string()))?;
            return Ok(Caller {
                client: ClientId::User(grant.subject.clone()),
                access: Access::User(grant),
            });
        }
        match (request.headers().get("x-api-key"), &auth.api_key) {
            (Some(presented), Some(key)) if key.matches(presented.as_bytes()) => Ok(Caller {
                client: address,
                access: Access::Backend,
            }),
            (Some(_), _) => Err(ApiError::Unauthorized("the X-Api-Key is not valid".into())),
            (None, _) => Err(ApiError::Unauthorized(
                "a token is required: Authorization: Bearer <token>, or ?token=<token>".into(),
            )),
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Caller::from_request(request))
    }
}

/// The token of `Authorization: Bearer <token>`, or else of `?token=`.
/// Another kind of `Authorization` is refused rather than ignored; an
/// empty token counts as none.
fn bearer_token(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    if let Some(header) = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
    {
        let header = header.to_str().unwrap_or_default();
        return match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Ok(Some(token.trim().to_owned()).filter(|token| !token.is_empty()))
            }
            _ => Err(ApiError::Unauthorized(
                "Authorization must be `Bearer <token>`".into(),
            )),
        };
    }
    let query =
        web::Query::<std::collections::HashMap<String, String>>::from_query(request.query_string())
            .map_err(|err| ApiError::BadQuery(err.to_string()))?;
    Ok(query
        .get("token")
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty()))
}
