//! `GET /rooms/{room}/ws?after=`: the WebSocket upgrade.
//!
//! Everything that can be refused is checked before upgrading, so a refusal
//! is a plain HTTP answer with a JSON body, in this order: a bad room (404),
//! no upgrade asked for (426), a foreign `Origin` (403), no valid token
//! (401) or a room the token does not allow (403 `forbidden_room`), a bad
//! cursor (400), too many connections (429 / 503), a broker that cannot
//! tell where the room stands (503), a malformed handshake (400).

use actix_web::FromRequest;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use common::ApiError;
use common::auth::Caller;
use common::config::AllowedOrigins;
use common::http::{AppState, Cursor, RoomPath};
use common::session::StreamSession;

use crate::config::WsSettings;
use crate::connection;

pub(super) async fn upgrade(
    state: web::Data<AppState>,
    settings: web::Data<WsSettings>,
    RoomPath(room): RoomPath,
    request: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if !wants_websocket(&request) {
        return Err(ApiError::UpgradeRequired);
    }
    check_origin(&request, &state.config.allowed_origins)?;
    let caller = Caller::extract(&request).await?;
    let Cursor(after) = Cursor::extract(&request).await?;
    if state.is_shutting_down() {
        return Err(ApiError::ShuttingDown);
    }
    let session = StreamSession::open(&state, &request, &caller, &room, after).await?;
    let (response, actix_session, frames) =
        actix_ws::handle(&request, body).map_err(|err| ApiError::BadHandshake(err.to_string()))?;
    let outgoing = connection::start(state, &settings, caller, room, frames, session);
    // actix-ws' own writer is replaced by ours, which writes frames built
    // once per message. Its body and session are kept, unused, for as long
    // as the connection lives: dropping its body would tell the frame
    // reader (`frames`) that the connection closed.
    let mut replaced = None;
    let response = response.map_body(|_, actix_body| {
        replaced = Some((actix_body, actix_session));
        actix_web::body::BodyStream::new(outgoing)
    });
    let kept = replaced;
    Ok(response
        .map_body(move |_, ours| KeepAlongside {
            body: ours,
            _kept: kept,
        })
        .map_into_boxed_body())
}

/// Whether the request asks for a WebSocket at all (`Upgrade: websocket`);
/// one that does but gets the rest wrong is a bad handshake instead.
fn wants_websocket(request: &HttpRequest) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// Browsers send cookies with WebSocket upgrades and CORS does not apply to
/// them, so a page from any site could open a socket in its visitor's name.
/// Upgrades from an origin outside `ALLOWED_ORIGINS` are refused. A request
/// without `Origin` is not from a browser and is let through.
fn check_origin(request: &HttpRequest, allowed: &AllowedOrigins) -> Result<(), ApiError> {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("<not text>");
    if allowed.allows(origin) {
        Ok(())
    } else {
        Err(ApiError::ForbiddenOrigin(origin.to_owned()))
    }
}

/// A response body that keeps something alive for as long as the body is:
/// here actix-ws' unused writer, whose drop would end the frame reader.
struct KeepAlongside<B, K> {
    body: B,
    _kept: K,
}

impl<B: actix_web::body::MessageBody + Unpin, K: Unpin> actix_web::body::MessageBody
    for KeepAlongside<B, K>
{
    type Error = B::Error;

    fn size(&self) -> actix_web::body::BodySize {
        self.body.size()
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<bytes::Bytes, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}
