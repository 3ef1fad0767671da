//! ws-svc's own settings: the size of what a WebSocket client sends.
//! (Its publishes count against the client's publish rate, shared with
//! HTTP: `PUBLISH_RATE_PER_SEC`.)

use common::config::{ConfigError, Env};

/// ws-svc's variables, for `--help`.
pub const ENV_HELP: &str = "\
ws-svc:
  WS_MAX_FRAME_BYTES        largest WebSocket message a client may send [default: 65536]";

#[derive(Debug, Clone)]
pub struct WsSettings {
    /// The largest message a client may send, whole or in fragments
    /// (larger: close 1009).
    pub max_frame_bytes: usize,
}

impl WsSettings {
    pub fn from(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(WsSettings {
            max_frame_bytes: env.number(
                "WS_MAX_FRAME_BYTES",
                64 * 1024,
                1024..=16 * 1024 * 1024,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: &str) -> Result<WsSettings, ConfigError> {
        WsSettings::from(&Env::from_fn(|name| {
            (name == "WS_MAX_FRAME_BYTES").then(|| max.to_owned())
        }))
    }

    #[test]
    fn frames_of_64_kib_are_allowed_by_default() {
        assert_eq!(settings("").expect("valid").max_frame_bytes, 65536);
    }

    #[test]
    fn a_frame_limit_below_1_kib_is_refused_naming_the_variable() {
        assert_eq!(
            settings("100").expect_err("too small").var,
            "WS_MAX_FRAME_BYTES"
        );
    }
}
