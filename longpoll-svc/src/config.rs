//! longpoll-svc's own settings: how long a poll may be held.

use std::time::Duration;

use common::config::{ConfigError, Env};

/// The most messages one poll answers with; the client polls again with the
/// cursor it is given for more.
pub const POLL_BATCH: usize = 100;
/// A poll's hold time when the client does not ask for one.
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(25);

/// longpoll-svc's variables, for `--help`.
pub const ENV_HELP: &str = "\
longpoll-svc:
  LONGPOLL_TIMEOUT_SECS     longest a poll is held, 1-60; caps ?timeout= [default: 30]";

#[derive(Debug, Clone)]
pub struct PollSettings {
    /// The longest a poll may be held; also caps what a client may ask for.
    pub longest_hold: Duration,
}

impl PollSettings {
    pub fn from(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(PollSettings {
            // At most a minute: proxies (the gateway's read timeout is 75 s)
            // give up on a request held longer.
            longest_hold: env.seconds("LONGPOLL_TIMEOUT_SECS", 30, 1..=60)?,
        })
    }

    /// The hold time of a poll that asked for `requested` (or nothing).
    pub fn hold(&self, requested: Option<Duration>) -> Duration {
        requested
            .unwrap_or(DEFAULT_POLL_TIMEOUT)
            .min(self.longest_hold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(longest: &str) -> Result<PollSettings, ConfigError> {
        PollSettings::from(&Env::from_fn(|name| {
            (name == "LONGPOLL_TIMEOUT_SECS").then(|| longest.to_owned())
        }))
    }

    #[test]
    fn a_poll_is_held_25_s_by_default_and_at_most_30() {
        let settings = settings("").expect("defaults are valid");
        assert_eq!(settings.hold(None), Duration::from_secs(25));
        assert_eq!(
            settings.hold(Some(Duration::from_secs(60))),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn the_hold_time_is_capped_by_config() {
        let settings = settings("10").expect("valid");
        assert_eq!(settings.hold(None), Duration::from_secs(10));
        assert_eq!(
            settings.hold(Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn a_negative_hold_is_refused_naming_the_variable() {
        assert_eq!(
            settings("-5").expect_err("negative").var,
            "LONGPOLL_TIMEOUT_SECS"
        );
    }
}
