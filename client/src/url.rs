//! The URLs of the API's routes, built from a base URL with `Url`'s own
//! path and query encoders (never by pasting strings).
//!
//! A base is `http(s)://host:port`, optionally with a path prefix (a
//! gateway that mounts the API below `/chat`): routes go below it.

use std::time::Duration;

use reqwest::Url;
use wire::RoomName;

use crate::error::BuildError;

/// Checks a base URL: `http` or `https`, with a host, without a query or
/// fragment (the routes' own query goes there).
pub(crate) fn parse_base(raw: &str) -> Result<Url, BuildError> {
    let invalid = |reason: &str| BuildError::InvalidBase {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(raw).map_err(|err| invalid(&err.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(invalid("there is no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a base has no query or fragment"));
    }
    Ok(url)
}

/// `{base}/rooms/{room}/{route}`.
fn room_route(base: &Url, room: &RoomName, route: &str) -> Url {
    let mut url = base.clone();
    // Every base passed `parse_base`, so it is an http(s) URL, which always
    // has path segments.
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .extend(["rooms", room.as_str(), route]);
    }
    url
}

/// `POST` here to publish.
pub(crate) fn messages(base: &Url, room: &RoomName) -> Url {
    room_route(base, room, "messages")
}

pub(crate) fn history(
    base: &Url,
    room: &RoomName,
    after: Option<u64>,
    limit: Option<usize>,
) -> Url {
    let mut url = room_route(base, room, "history");
    {
        let mut query = url.query_pairs_mut();
        if let Some(after) = after {
            query.append_pair("after", &after.to_string());
        }
        if let Some(limit) = limit {
            query.append_pair("limit", &limit.to_string());
        }
    }
    drop_empty_query(url)
}

pub(crate) fn poll(base: &Url, room: &RoomName, after: Option<u64>, timeout: Duration) -> Url {
    let mut url = room_route(base, room, "poll");
    {
        let mut query = url.query_pairs_mut();
        if let Some(after) = after {
            query.append_pair("after", &after.to_string());
        }
        query.append_pair("timeout", &timeout.as_secs_f64().to_string());
    }
    url
}

/// The event stream's URL; `resume` is the query's cursor parameter
/// (`after` or `last_event_id`) if any. The token goes in the query, as a
/// browser's `EventSource` must send it.
pub(crate) fn events(
    base: &Url,
    room: &RoomName,
    resume: Option<(&str, u64)>,
    token: Option<&str>,
) -> Url {
    let mut url = room_route(base, room, "events");
    {
        let mut query = url.query_pairs_mut();
        if let Some((name, id)) = resume {
            query.append_pair(name, &id.to_string());
        }
        if let Some(token) = token {
            query.append_pair("token", token);
        }
    }
    drop_empty_query(url)
}

/// The WebSocket's URL (`ws://`, or `wss://` for an `https://` base).
pub(crate) fn websocket(
    base: &Url,
    room: &RoomName,
    after: Option<u64>,
    token: Option<&str>,
) -> Url {
    let mut url = room_route(base, room, "ws");
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    // http -> ws and https -> wss are changes between special schemes,
    // which `Url` allows.
    let _ = url.set_scheme(scheme);
    {
        let mut query = url.query_pairs_mut();
        if let Some(after) = after {
            query.append_pair("after", &after.to_string());
        }
        if let Some(token) = token {
            query.append_pair("token", token);
        }
    }
    drop_empty_query(url)
}

/// `query_pairs_mut` leaves a bare `?` when nothing was appended.
fn drop_empty_query(mut url: Url) -> Url {
    if url.query() == Some("") {
        url.set_query(None);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(raw: &str) -> Url {
        parse_base(raw).expect("a valid base")
    }

    fn room() -> RoomName {
        RoomName::parse("general").expect("a valid room")
    }

    #[test]
    fn routes_go_below_the_base_with_or_without_a_trailing_slash() {
        for raw in ["http://127.0.0.1:8081", "http://127.0.0.1:8081/"] {
            assert_eq!(
                messages(&base(raw), &room()).as_str(),
                "http://127.0.0.1:8081/rooms/general/messages"
            );
        }
    }

    #[test]
    fn routes_keep_the_base_path_prefix() {
        assert_eq!(
            history(&base("https://chat.example/api/"), &room(), None, None).as_str(),
            "https://chat.example/api/rooms/general/history"
        );
    }

    #[test]
    fn history_takes_after_and_limit() {
        assert_eq!(
            history(&base("http://h"), &room(), Some(41), Some(100)).as_str(),
            "http://h/rooms/general/history?after=41&limit=100"
        );
    }

    #[test]
    fn a_poll_says_its_timeout_in_seconds_and_its_cursor_when_it_has_one() {
        let url = poll(
            &base("http://h"),
            &room(),
            Some(7),
            Duration::from_millis(2500),
        );
        assert_eq!(
            url.as_str(),
            "http://h/rooms/general/poll?after=7&timeout=2.5"
        );
        let url = poll(&base("http://h"), &room(), None, Duration::from_secs(25));
        assert_eq!(url.as_str(), "http://h/rooms/general/poll?timeout=25");
    }

    #[test]
    fn the_token_goes_in_the_query_of_streams_encoded() {
        let url = events(
            &base("http://h"),
            &room(),
            Some(("after", 3)),
            Some("a.b+c/d"),
        );
        assert_eq!(
            url.as_str(),
            "http://h/rooms/general/events?after=3&token=a.b%2Bc%2Fd"
        );
        let url = websocket(&base("http://h"), &room(), None, Some("t"));
        assert_eq!(url.as_str(), "ws://h/rooms/general/ws?token=t");
    }

    #[test]
    fn a_stream_without_parameters_has_no_query() {
        assert_eq!(
            events(&base("http://h"), &room(), None, None).as_str(),
            "http://h/rooms/general/events"
        );
    }

    #[test]
    fn websockets_use_ws_or_wss_by_the_base_scheme() {
        assert_eq!(
            websocket(&base("http://h:1"), &room(), Some(0), None).as_str(),
            "ws://h:1/rooms/general/ws?after=0"
        );
        assert_eq!(
            websocket(&base("https://h"), &room(), None, None).as_str(),
            "wss://h/rooms/general/ws"
        );
    }

    #[test]
    fn a_base_must_be_http_with_a_host_and_no_query() {
        for bad in [
            "ws://h",
            "ftp://h",
            "h:8080",
            "http://h/?x=1",
            "http://h/#f",
            "",
        ] {
            assert!(parse_base(bad).is_err(), "{bad:?}");
        }
    }
}
