//! ws-svc's own settings: the size and rate limits of what a WebSocket
//! client sends.

use common::config::{ConfigError, Env};
use common::rate_limit::Rate;

/// ws-svc's variables, for `--help`.
pub const ENV_HELP: &str = "\
ws-svc:
  WS_MAX_FRAME_BYTES        largest WebSocket message a client may send [default: 65536]
  WS_PUBLISH_RATE_PER_SEC   WebSocket publishes per second per connection; 0 = off [default: 200]
  WS_PUBLISH_BURST          WebSocket publishes allowed at once [default: 1000]";

#[derive(Debug, Clone)]
pub struct WsSettings {
    /// The largest message a client may send, whole or in fragments
    /// (larger: close 1009).
    pub max_frame_bytes: usize,
    /// Publishes per connection; `None` when off.
    pub publish_rate: Option<Rate>,
}

impl WsSettings {
    pub fn from(env: &Env<'_>) -> Result<Self, ConfigError> {
        let per_sec = env.number("WS_PUBLISH_RATE_PER_SEC", 200, 0..=1_000_000)?;
        let burst = env.number("WS_PUBLISH_BURST", 1000, 1..=1_000_000)?;
        Ok(WsSettings {
            max_frame_bytes: env.number(
                "WS_MAX_FRAME_BYTES",
                64 * 1024,
                1024..=16 * 1024 * 1024,
            )?,
            publish_rate: Rate::new(per_sec, burst),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<WsSettings, ConfigError> {
        let vars: HashMap<&str, &str> = vars.iter().copied().collect();
        WsSettings::from(&Env::from_fn(|name| {
            vars.get(name).map(|v| (*v).to_owned())
        }))
    }

    #[test]
    fn defaults_allow_64_kib_frames_and_200_publishes_a_second() {
        let settings = settings(&[]).expect("defaults are valid");
        assert_eq!(settings.max_frame_bytes, 65536);
        assert_eq!(settings.publish_rate, Rate::new(200, 1000));
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off() {
        let settings = settings(&[("WS_PUBLISH_RATE_PER_SEC", "0")]).expect("valid");
        assert_eq!(settings.publish_rate, None);
    }

    #[test]
    fn a_frame_limit_below_1_kib_is_refused_naming_the_variable() {
        assert_eq!(
            settings(&[("WS_MAX_FRAME_BYTES", "100")])
                .expect_err("too small")
                .var,
            "WS_MAX_FRAME_BYTES"
        );
    }
}
