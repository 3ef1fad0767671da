//! The bodies of the operations routes, `/healthz` and `/readyz`.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// `200` of `/healthz` (`"ok"`) and of `/readyz` (`"ready"`); a `503` of
/// `/readyz` says `"unavailable"` with [`ErrorCode::NotReady`] and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Status {
    pub fn healthy() -> Self {
        Status::plain("ok")
    }

    pub fn ready() -> Self {
        Status::plain("ready")
    }

    pub fn not_ready(detail: impl Into<String>) -> Self {
        Status {
            status: "unavailable".into(),
            error: Some(ErrorCode::NotReady),
            detail: Some(detail.into()),
        }
    }

    fn plain(status: &str) -> Self {
        Status {
            status: status.into(),
            error: None,
            detail: None,
        }
    }
}
