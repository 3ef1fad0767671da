//! Configuration from environment variables (API.md, "Configuration").
//!
//! Every value is parsed and range-checked once, at start; a bad one stops
//! the service with a [`ConfigError`] that names the variable, so a typo in a
//! deployment fails loudly instead of running with a surprise default.
//! [`Config`] holds what every service uses; a service crate reads its own
//! variables (long-poll hold times, WebSocket limits) with the same [`Env`].

use std::fmt::Display;

use crate::auth::{ApiKey, AuthSettings, TokenKey, Verifier};
use crate::broker::RedisTarget;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

/// A variable that was set to something unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for {var}: {value:?} ({expected})")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub expected: String,
}

/// Looks a variable up by name.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Reads variables through a lookup function, so tests need not touch the
/// process environment. An empty value counts as unset.
pub struct Env<'a> {
    lookup: Lookup<'a>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl<'a> Env<'a> {
    pub fn process() -> Env<'static> {
        Env {
            lookup: Box::new(|name| std::env::var(name).ok()),
        }
    }

    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Env {
            lookup: Box::new(lookup),
        }
    }

    pub fn get(&self, var: &str) -> Option<String> {
        (self.lookup)(var).filter(|value| !value.trim().is_empty())
    }

    /// A number within `range`, or `default` when unset.
    pub fn number<T>(
        &self,
        var: &'static str,
        default: T,
        range: RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        let Some(raw) = self.get(var) else {
            return Ok(default);
        };
        match raw.trim().parse::<T>() {
            Ok(value) if range.contains(&value) => Ok(value),
            _ => Err(ConfigError {
                var,
                value: raw,
                expected: format!("a whole number from {} to {}", range.start(), range.end()),
            }),
        }
    }

    /// A duration in whole seconds within `range`.
    pub fn seconds(
        &self,
        var: &'static str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.number(var, default, range).map(Duration::from_secs)
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    pub fn flag(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        let Some(raw) = self.get(var) else {
            return Ok(default);
        };
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(ConfigError {
                var,
                value: raw,
                expected: "true or false".into(),
            }),
        }
    }
}

/// Which origins may call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `*`: any origin (the default, like the seed's `cors()`).
    Any,
    /// Exact origins such as `https://chat.example.com`.
    List(Vec<String>),
}

impl AllowedOrigins {
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list.iter().any(|allowed| allowed == origin),
        }
    }

    fn parse(raw: &str) -> Result<Self, String> {
        if raw.trim() == "*" {
            return Ok(AllowedOrigins::Any);
        }
        let list = raw
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(|origin| {
                if is_origin(origin) {
                    Ok(origin.to_owned())
                } else {
                    Err(format!(
                        "`*` or comma-separated origins like https://chat.example.com; \
                         {origin:?} is not an origin"
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err("`*` or at least one origin".into());
        }
        Ok(AllowedOrigins::List(list))
    }
}

/// An IP address, or a host name of letters, digits, dots and dashes.
fn is_host(candidate: &str) -> bool {
    candidate.parse::<std::net::IpAddr>().is_ok()
        || (candidate.len() <= 253
            && candidate.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }))
}

/// Checks an env_logger filter (`level`, `target`, `target=level`, comma
/// separated, optionally `/regex` at the end). Returns the first directive
/// whose level is not one.
fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let directives = filter.split('/').next().unwrap_or_default();
    for directive in directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        if let Some((_, level)) = directive.split_once('=') {
            if !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
                return Err(directive.to_owned());
            }
        }
    }
    Ok(())
}

/// `REDIS_URL` (one Redis) or `REDIS_CLUSTER_URLS` (a cluster's seed
/// nodes), never both; each URL must parse, and a password in it never
/// appears in an error.
fn redis_target(env: &Env<'_>) -> Result<Option<RedisTarget>, ConfigError> {
    let check = |var: &'static str, url: &str| {
        redis::Client::open(url)
            .map(|_| ())
            .map_err(|err| ConfigError {
                var,
                value: without_password(url),
                expected: format!("a redis:// or unix:// URL: {}", err.category()),
            })
    };
    match (env.get("REDIS_URL"), env.get("REDIS_CLUSTER_URLS")) {
        (Some(_), Some(nodes)) => Err(ConfigError {
            var: "REDIS_CLUSTER_URLS",
            value: nodes
                .split(',')
                .map(|node| without_password(node.trim()))
                .collect::<Vec<_>>()
                .join(","),
            expected: "unset while REDIS_URL is set: one Redis or one cluster".into(),
        }),
        (Some(url), None) => {
            check("REDIS_URL", &url)?;
            Ok(Some(RedisTarget::Single(url)))
        }
        (None, Some(nodes)) => {
            let nodes: Vec<String> = nodes
                .split(',')
                .map(str::trim)
                .filter(|node| !node.is_empty())
                .map(str::to_owned)
                .collect();
            if nodes.is_empty() {
                return Err(ConfigError {
                    var: "REDIS_CLUSTER_URLS",
                    value: String::new(),
                    expected: "comma-separated redis://host:port seed nodes".into(),
                });
            }
            for node in &nodes {
                check("REDIS_CLUSTER_URLS", node)?;
            }
            Ok(Some(RedisTarget::Cluster(nodes)))
        }
        (None, None) => Ok(None),
    }
}

/// A secret shorter than this is weak for HS256 (RFC 7518 asks for at least
/// the hash's 256 bits); it is used, with a warning.
const STRONG_SECRET_BYTES: usize = 32;

/// `JWT_SECRET` or `JWT_PUBLIC_KEY_FILE` (one key, so one algorithm),
/// `JWT_ISSUER`, `JWT_AUDIENCE`, `PUBLISH_API_KEY`. A key's value never
/// appears in an error.
fn auth_settings(env: &Env<'_>) -> Result<AuthSettings, ConfigError> {
    let key = match (env.get("JWT_SECRET"), env.get("JWT_PUBLIC_KEY_FILE")) {
        (Some(_), Some(file)) => {
            return Err(ConfigError {
                var: "JWT_PUBLIC_KEY_FILE",
                value: file,
                expected: "unset while JWT_SECRET is set: one key, so one algorithm".into(),
            });
        }
        (Some(secret), None) => {
            let key = TokenKey::secret(secret.as_bytes()).map_err(|expected| ConfigError {
                var: "JWT_SECRET",
                value: "<hidden>".into(),
                expected,
            })?;
            if secret.len() < STRONG_SECRET_BYTES {
                log::warn!(
                    "JWT_SECRET is shorter than {STRONG_SECRET_BYTES} bytes: tokens signed with \
                     it are easier to forge"
                );
            }
            Some(key)
        }
        (None, Some(file)) => {
            let invalid = |expected: String| ConfigError {
                var: "JWT_PUBLIC_KEY_FILE",
                value: file.clone(),
                expected,
            };
            let pem = std::fs::read(&file)
                .map_err(|err| invalid(format!("a readable PEM file: {err}")))?;
            Some(TokenKey::public_pem(&pem).map_err(invalid)?)
        }
        (None, None) => None,
    };
    let issuer = env.get("JWT_ISSUER");
    let audience = env.get("JWT_AUDIENCE");
    if key.is_none() {
        for (var, value) in [("JWT_ISSUER", &issuer), ("JWT_AUDIENCE", &audience)] {
            if let Some(value) = value {
                return Err(ConfigError {
                    var,
                    value: value.clone(),
                    expected: "unset, or JWT_SECRET / JWT_PUBLIC_KEY_FILE set to turn auth on"
                        .into(),
                });
            }
        }
    }
    let api_key = env.get("PUBLISH_API_KEY");
    if key.is_none() && api_key.is_some() {
        log::warn!(
            "PUBLISH_API_KEY is set but auth is off (no JWT_SECRET or JWT_PUBLIC_KEY_FILE): \
             anyone may publish anyway, and the key is not checked"
        );
    }
    Ok(AuthSettings {
        verifier: key.map(|key| Verifier::new(key, issuer.as_deref(), audience.as_deref())),
        api_key: api_key.map(|key| ApiKey::new(&key)),
    })
}

/// A URL with its password (if any) replaced by `***`, for messages and
/// logs: `redis://:secret@host` -> `redis://:***@host`.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
        None => url.to_owned(),
    }
}

/// `scheme://host[:port]` with no path, as browsers send in `Origin`.
fn is_origin(candidate: &str) -> bool {
    let Some((scheme, rest)) = candidate.split_once("://") else {
        return false;
    };
    let host = rest.rsplit_once(':').map_or(rest, |(host, port)| {
        if port.parse::<u16>().is_ok() {
            host
        } else {
            ""
        }
    });
    matches!(scheme, "http" | "https") && !host.is_empty() && !rest.contains(['/', '?', '#', ' '])
}

/// The variables every service reads, for `--help` (each service adds its
/// own).
pub const ENV_HELP: &str = "\
Environment variables (an empty value counts as unset):
  HOST                      address to listen on [default: 0.0.0.0]
  PORT                      port to listen on; 0 picks a free one [default: the service's]
  REDIS_URL                 redis://host:port/db; unset: in-process broker, one instance only
  REDIS_CLUSTER_URLS        redis://host:port,... seed nodes of a Redis Cluster (Redis >= 7); excludes REDIS_URL
  REDIS_KEY_PREFIX          prefix of every Redis key and channel [default: chat]
  HISTORY_LEN               messages kept per room in Redis, at least [default: 1000]
  HUB_RING_LEN              recent messages kept per room in memory [default: 256]
  HEARTBEAT_SECS            SSE keep-alive / WebSocket ping interval [default: 15]
  MAX_MESSAGE_CHARS         longest message text, in characters [default: 4096]
  ALLOWED_ORIGINS           `*` or comma-separated origins for CORS and WebSocket [default: *]
  CLIENT_QUEUE_LEN          messages a streaming client may lag before it is slow [default: 256]
  SLOW_CLIENT_TIMEOUT_SECS  how long a slow client that takes nothing is kept [default: 10]
  SHUTDOWN_TIMEOUT_SECS     grace for in-flight requests on SIGTERM [default: 3]
  BROKER_LOSS_GRACE_SECS    how long Redis may be unreachable before clients are sent elsewhere [default: 10]
  PUBLISH_RATE_PER_SEC      publishes per second per client, HTTP and WebSocket together; 0 = off [default: 20]
  PUBLISH_BURST             publishes a client may make at once [default: 40]
  MAX_CONNECTIONS           streams, sockets and held polls per instance; 0 = no cap [default: 20000]
  MAX_CONNECTIONS_PER_CLIENT  of those, per client; 0 = no cap [default: 100]
  TRUST_X_REAL_IP           know clients by the gateway's X-Real-IP header [default: false]
  ROOM_IDLE_SECS            how long a room nobody here uses stays in memory [default: 300]
  HUB_MEMORY_MB             memory all rooms' recent messages may take [default: 256]
  ROOM_TTL_SECS             how long a room's Redis keys live after its last message [default: 604800]
  IDEMPOTENCY_WINDOW_SECS   how long an Idempotency-Key is remembered [default: 300]
  JWT_SECRET                turns auth on: HS256 tokens signed with this secret [default: unset, auth off]
  JWT_PUBLIC_KEY_FILE       turns auth on: RS256/ES256 tokens, this PEM public key [default: unset]
  JWT_ISSUER                with auth on, tokens must carry this `iss` [default: unchecked]
  JWT_AUDIENCE              with auth on, tokens must carry this `aud` [default: unchecked]
  PUBLISH_API_KEY           with auth on, backends publish with `X-Api-Key: <this>` [default: unset]
  RUST_LOG                  log filter, e.g. info or common=debug [default: info]";

/// Settings every service shares.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    /// 0 binds a free port (tests); the bound port is reported by the server.
    pub port: u16,
    /// One Redis or a Redis Cluster; `None`: the in-process broker, which
    /// serves this one process only.
    pub redis: Option<RedisTarget>,
    /// Prefix of every Redis key and channel, so deployments (and tests) can
    /// share one Redis without seeing each other.
    pub redis_prefix: String,
    /// Messages kept per room in the shared history (at least this many).
    pub history_len: usize,
    /// Recent messages kept per room in each instance's memory, to answer
    /// polls and replays without a Redis round trip.
    pub hub_ring_len: usize,
    /// Interval of SSE keep-alive comments and WebSocket pings.
    pub heartbeat: Duration,
    pub max_message_chars: usize,
    pub allowed_origins: AllowedOrigins,
    /// Messages a streaming client may have waiting before it counts as slow.
    pub client_queue_len: usize,
    /// How long a slow client that cannot take any data is given before its
    /// connection is cut.
    pub slow_client_timeout: Duration,
    /// How long in-flight requests get to finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// How long the broker may be unreachable before this instance tells
    /// its clients to reconnect (elsewhere).
    pub broker_loss_grace: Duration,
    /// Publishes per second per client, over HTTP and WebSocket together;
    /// 0 turns the limit off.
    pub publish_rate_per_sec: u32,
    /// Publishes a client may make at once before the rate applies.
    pub publish_burst: u32,
    /// Connections (streams, sockets, held polls) this instance holds at
    /// most; 0: no cap.
    pub max_connections: usize,
    /// Connections one client holds at most; 0: no cap.
    pub max_connections_per_client: usize,
    /// Know clients by the `X-Real-IP` header a trusted gateway sets,
    /// instead of the peer address (which is the gateway's).
    pub trust_x_real_ip: bool,
    /// How long a room no client of this instance uses stays in memory.
    pub room_idle: Duration,
    /// Bytes all rooms' recent messages may take in this instance.
    pub hub_memory_bytes: usize,
    /// How long a room's Redis keys live after its last message.
    pub room_ttl: Duration,
    /// How long an idempotency key is remembered after its first use.
    pub idempotency_window: Duration,
    /// Token verification (off unless a key is configured) and the
    /// backends' publish key.
    pub auth: AuthSettings,
}

impl Config {
    pub fn from(env: &Env<'_>, default_port: u16) -> Result<Self, ConfigError> {
        let allowed_origins = match env.get("ALLOWED_ORIGINS") {
            None => AllowedOrigins::Any,
            Some(raw) => AllowedOrigins::parse(&raw).map_err(|expected| ConfigError {
                var: "ALLOWED_ORIGINS",
                value: raw,
                expected,
            })?,
        };
        let redis_prefix = env.get("REDIS_KEY_PREFIX").unwrap_or_else(|| "chat".into());
        let prefix_char = |c: char| c.is_ascii_alphanumeric() || "_-:.".contains(c);
        if redis_prefix.len() > 64 || !redis_prefix.chars().all(prefix_char) {
            return Err(ConfigError {
                var: "REDIS_KEY_PREFIX",
                value: redis_prefix,
                expected: "1-64 characters of A-Z, a-z, 0-9, '_', '-', ':' or '.'".into(),
            });
        }
        let redis = redis_target(env)?;
        let publish_rate_per_sec = env.number("PUBLISH_RATE_PER_SEC", 20, 0..=1_000_000)?;
        let host = env.get("HOST").unwrap_or_else(|| "0.0.0.0".into());
        if !is_host(&host) {
            return Err(ConfigError {
                var: "HOST",
                value: host,
                expected: "an IP address or a host name".into(),
            });
        }
        if let Some(filter) = env.get("RUST_LOG") {
            if let Err(directive) = check_log_filter(&filter) {
                return Err(ConfigError {
                    var: "RUST_LOG",
                    value: filter,
                    expected: format!(
                        "directives like `info` or `common=debug,actix_web=warn`; {directive:?} \
                         names no level (off, error, warn, info, debug, trace)"
                    ),
                });
            }
        }
        Ok(Config {
            host,
            port: env.number("PORT", default_port, 0..=u16::MAX)?,
            redis,
            redis_prefix,
            history_len: env.number("HISTORY_LEN", 1000, 1..=10_000_000)?,
            hub_ring_len: env.number("HUB_RING_LEN", 256, 1..=1_000_000)?,
            heartbeat: env.seconds("HEARTBEAT_SECS", 15, 1..=3600)?,
            max_message_chars: env.number("MAX_MESSAGE_CHARS", 4096, 1..=1_000_000)?,
            allowed_origins,
            client_queue_len: env.number("CLIENT_QUEUE_LEN", 256, 1..=1_000_000)?,
            slow_client_timeout: env.seconds("SLOW_CLIENT_TIMEOUT_SECS", 10, 1..=3600)?,
            shutdown_timeout: env.seconds("SHUTDOWN_TIMEOUT_SECS", 3, 1..=600)?,
            broker_loss_grace: env.seconds("BROKER_LOSS_GRACE_SECS", 10, 1..=3600)?,
            publish_rate_per_sec,
            publish_burst: env.number(
                "PUBLISH_BURST",
                publish_rate_per_sec.max(1) * 2,
                1..=1_000_000,
            )?,
            max_connections: env.number("MAX_CONNECTIONS", 20_000, 0..=10_000_000)?,
            max_connections_per_client: env.number(
                "MAX_CONNECTIONS_PER_CLIENT",
                100,
                0..=10_000_000,
            )?,
            trust_x_real_ip: env.flag("TRUST_X_REAL_IP", false)?,
            room_idle: env.seconds("ROOM_IDLE_SECS", 300, 1..=86_400)?,
            hub_memory_bytes: env.number("HUB_MEMORY_MB", 256usize, 1..=1_048_576)? << 20,
            room_ttl: env.seconds("ROOM_TTL_SECS", 7 * 86_400, 1..=10 * 365 * 86_400)?,
            idempotency_window: env.seconds("IDEMPOTENCY_WINDOW_SECS", 300, 1..=86_400)?,
            auth: auth_settings(env)?,
        })
    }

    /// How long what the broker stores lives.
    pub fn retention(&self) -> crate::broker::Retention {
        crate::broker::Retention {
            history_len: self.history_len,
            room_ttl: self.room_ttl,
            idempotency_window: self.idempotency_window,
        }
    }

    /// The largest request body worth reading: the longest valid message,
    /// even if every character needed a six-byte JSON escape, plus room for
    /// the author and the punctuation.
    pub fn max_body_bytes(&self) -> usize {
        self.max_message_chars
            .saturating_mul(6)
            .saturating_add(4096)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from(&Env::from_fn(|name| vars.get(name).cloned()), 8081)
    }

    fn rejected_var(vars: &[(&str, &str)]) -> &'static str {
        match config(vars) {
            Err(err) => err.var,
            Ok(_) => panic!("{vars:?} should be rejected"),
        }
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = config(&[]).expect("defaults are valid");
        assert_eq!(config.port, 8081);
        assert_eq!(config.redis, None);
        assert_eq!(config.history_len, 1000);
        assert_eq!(config.heartbeat, Duration::from_secs(15));
        assert_eq!(config.max_message_chars, 4096);
        assert_eq!(config.allowed_origins, AllowedOrigins::Any);
    }

    #[test]
    fn a_non_number_is_rejected_naming_the_variable() {
        let err = config(&[("PORT", "eighty")]).expect_err("PORT must be a number");
        assert_eq!(err.var, "PORT");
        assert!(err.to_string().contains("PORT"), "{err}");
        assert!(err.to_string().contains("eighty"), "{err}");
    }

    #[test]
    fn out_of_range_numbers_are_rejected() {
        assert_eq!(rejected_var(&[("PORT", "65536")]), "PORT");
        assert_eq!(rejected_var(&[("HISTORY_LEN", "0")]), "HISTORY_LEN");
        assert_eq!(rejected_var(&[("HEARTBEAT_SECS", "0")]), "HEARTBEAT_SECS");
        assert_eq!(
            rejected_var(&[("MAX_MESSAGE_CHARS", "0")]),
            "MAX_MESSAGE_CHARS"
        );
        assert_eq!(rejected_var(&[("HUB_RING_LEN", "1.5")]), "HUB_RING_LEN");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let config = config(&[("PORT", ""), ("REDIS_URL", " ")]).expect("valid");
        assert_eq!(config.port, 8081);
        assert_eq!(config.redis, None);
    }

    #[test]
    fn a_redis_password_never_appears_in_an_error() {
        let err =
            config(&[("REDIS_URL", "http://:hunter2@localhost")]).expect_err("not a redis URL");
        assert_eq!(err.var, "REDIS_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(
            without_password("redis://user:hunter2@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(without_password("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn auth_is_off_by_default_and_on_with_a_secret() {
        assert!(!config(&[]).expect("valid").auth.is_on());
        assert!(
            config(&[("JWT_SECRET", "a secret that is long enough, really")])
                .expect("valid")
                .auth
                .is_on()
        );
    }

    #[test]
    fn two_keys_or_claims_checks_without_a_key_are_refused() {
        assert_eq!(
            rejected_var(&[("JWT_SECRET", "s"), ("JWT_PUBLIC_KEY_FILE", "/k.pem")]),
            "JWT_PUBLIC_KEY_FILE"
        );
        assert_eq!(rejected_var(&[("JWT_ISSUER", "me")]), "JWT_ISSUER");
        assert_eq!(
            rejected_var(&[("JWT_PUBLIC_KEY_FILE", "/no/such/key.pem")]),
            "JWT_PUBLIC_KEY_FILE"
        );
    }

    #[test]
    fn a_secret_never_appears_in_an_error() {
        let err = config(&[
            ("JWT_SECRET", "hunter2-hunter2"),
            ("JWT_PUBLIC_KEY_FILE", "/k"),
        ])
        .expect_err("two keys");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn limits_are_on_by_default() {
        let config = config(&[]).expect("valid");
        assert_eq!(
            (config.publish_rate_per_sec, config.publish_burst),
            (20, 40)
        );
        assert_eq!(
            (config.max_connections, config.max_connections_per_client),
            (20_000, 100)
        );
        assert_eq!(config.hub_memory_bytes, 256 << 20);
        assert_eq!(config.room_idle, Duration::from_secs(300));
        assert_eq!(config.room_ttl, Duration::from_secs(604_800));
        assert_eq!(config.idempotency_window, Duration::from_secs(300));
    }

    #[test]
    fn redis_url_must_parse() {
        assert_eq!(
            rejected_var(&[("REDIS_URL", "http://localhost")]),
            "REDIS_URL"
        );
        let config = config(&[("REDIS_URL", "redis://127.0.0.1:6379/0")]).expect("valid");
        assert_eq!(
            config.redis,
            Some(RedisTarget::Single("redis://127.0.0.1:6379/0".into()))
        );
    }

    #[test]
    fn a_cluster_is_its_seed_nodes_and_excludes_redis_url() {
        let cluster = config(&[(
            "REDIS_CLUSTER_URLS",
            "redis://10.0.0.1:7000, redis://10.0.0.2:7000",
        )])
        .expect("valid");
        assert_eq!(
            cluster.redis,
            Some(RedisTarget::Cluster(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://10.0.0.2:7000".into()
            ]))
        );
        assert_eq!(
            rejected_var(&[
                ("REDIS_URL", "redis://a:6379"),
                ("REDIS_CLUSTER_URLS", "redis://b:7000")
            ]),
            "REDIS_CLUSTER_URLS"
        );
        assert_eq!(
            rejected_var(&[("REDIS_CLUSTER_URLS", "redis://ok:7000,http://bad")]),
            "REDIS_CLUSTER_URLS"
        );
        let both = config(&[
            ("REDIS_URL", "redis://a:6379"),
            (
                "REDIS_CLUSTER_URLS",
                "redis://a:7000,redis://:s3cret@b:7001",
            ),
        ])
        .expect_err("both set");
        assert!(!both.to_string().contains("s3cret"), "{both}");
    }

    #[test]
    fn allowed_origins_takes_a_list() {
        let config = config(&[(
            "ALLOWED_ORIGINS",
            "https://a.example, http://localhost:8080",
        )])
        .expect("valid");
        let origins = config.allowed_origins;
        assert!(origins.allows("https://a.example"));
        assert!(origins.allows("http://localhost:8080"));
        assert!(!origins.allows("https://evil.example"));
    }

    #[test]
    fn allowed_origins_rejects_non_origins() {
        for bad in [
            "example.com",
            "https://a.example/path",
            "ftp://a",
            "https://",
            ",",
        ] {
            assert_eq!(
                rejected_var(&[("ALLOWED_ORIGINS", bad)]),
                "ALLOWED_ORIGINS",
                "{bad}"
            );
        }
    }

    #[test]
    fn key_prefix_rejects_spaces() {
        assert_eq!(
            rejected_var(&[("REDIS_KEY_PREFIX", "my chat")]),
            "REDIS_KEY_PREFIX"
        );
    }

    #[test]
    fn host_must_be_an_address_or_a_name() {
        for good in ["0.0.0.0", "::", "127.0.0.1", "localhost", "chat-1.internal"] {
            assert_eq!(config(&[("HOST", good)]).expect(good).host, good);
        }
        for bad in ["not a host", "a..b", "host:80", "exa_mple"] {
            assert_eq!(rejected_var(&[("HOST", bad)]), "HOST", "{bad}");
        }
    }

    #[test]
    fn rust_log_levels_must_be_levels() {
        for good in [
            "info",
            "common=debug,actix_web=warn",
            "debug,common",
            "info/foo.*bar",
        ] {
            assert!(config(&[("RUST_LOG", good)]).is_ok(), "{good}");
        }
        assert_eq!(rejected_var(&[("RUST_LOG", "common=loud")]), "RUST_LOG");
    }

    #[test]
    fn flags_accept_true_and_false_only() {
        assert!(
            config(&[("TRUST_X_REAL_IP", "yes")])
                .expect("valid")
                .trust_x_real_ip
        );
        assert_eq!(
            rejected_var(&[("TRUST_X_REAL_IP", "maybe")]),
            "TRUST_X_REAL_IP"
        );
    }
}
