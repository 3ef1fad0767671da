//! The event stream's vocabulary (docs/API.md, "Server-Sent Events").
//!
//! A stream starts with `retry: 3000`; each message is an event named
//! [`MESSAGE`] whose `id:` is the message id and whose `data:` is the
//! [`Message`](crate::Message) JSON; a lost stretch of ids is an event named
//! [`GAP`] whose data is a [`Gap`](crate::Gap); comments keep the
//! connection alive.

/// A message: `data` is the Message JSON, `id` its id.
pub const MESSAGE: &str = "message";
/// Ids were lost: `data` is `{"after": n, "resume_from": m}`, and `id` is
/// `m - 1`, so a browser reconnecting right after does not hear it twice.
pub const GAP: &str = "gap";
/// The token the stream was opened with expired; `data` is `{}` and the
/// stream ends. Reconnect with a fresh token and the cursor.
pub const EXPIRED: &str = "expired";
/// How long a browser waits before reconnecting, sent first on every stream.
pub const RETRY_MILLIS: u32 = 3000;
