//! The [`Client`] handle and its builder: where the chat is, who we are,
//! how long to wait and how to back off. Every call goes through it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderValue};

use crate::backoff::Backoff;
use crate::error::BuildError;
use crate::url::parse_base;

/// A client of the chat: cheap to clone (clones share connections and
/// settings), usable from any task.
///
/// It knows one or more base URLs (`http://host:port` of a service or of
/// the gateway). Single requests go to the base that last answered and
/// move to the next one when it fails; each subscription walks the bases
/// on its own.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    bases: Vec<Url>,
    /// The base single requests try first: the last one that answered.
    preferred: AtomicUsize,
    http: reqwest::Client,
    credentials: Credentials,
    settings: Settings,
}

/// What identifies us to the server. Never printed (see `Debug`).
#[derive(Default)]
struct Credentials {
    /// The bearer token as given, for the `?token=` of stream URLs.
    token: Option<String>,
    /// `Bearer <token>`, checked once to be a valid header value.
    authorization: Option<HeaderValue>,
    api_key: Option<HeaderValue>,
}

/// Timeouts, backoff and retry limits.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) poll_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) attempts: u32,
    pub(crate) retry_rate_limited: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            poll_timeout: Duration::from_secs(25),
            // Servers send a keep-alive every 15 s by default (SSE comment,
            // WebSocket ping): four missed in a row is a dead connection.
            idle_timeout: Duration::from_secs(60),
            backoff: Backoff::default(),
            attempts: 8,
            retry_rate_limited: false,
        }
    }
}

impl Client {
    /// A client of one base URL with the default settings.
    pub fn new(base: &str) -> Result<Self, BuildError> {
        Self::builder().base(base).build()
    }

    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The base URLs, in the order given.
    pub fn bases(&self) -> &[Url] {
        &self.inner.bases
    }

    /// The backoff between attempts and reconnects.
    pub fn backoff(&self) -> Backoff {
        self.inner.settings.backoff
    }

    /// How many times a publish or history read is tried in all.
    pub fn attempts(&self) -> u32 {
        self.inner.settings.attempts
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The bearer token, for the query of stream URLs.
    pub(crate) fn token(&self) -> Option<&str> {
        self.inner.credentials.token.as_deref()
    }

    /// The base at `index`, counting round the list.
    pub(crate) fn base(&self, index: usize) -> &Url {
        let bases = &self.inner.bases;
        &bases[index % bases.len()]
    }

    /// The index of the base single requests try first.
    pub(crate) fn preferred(&self) -> usize {
        self.inner.preferred.load(Ordering::Relaxed)
    }

    /// Remembers the base that answered, so the next request starts there.
    pub(crate) fn prefer(&self, index: usize) {
        let index = index % self.inner.bases.len();
        self.inner.preferred.store(index, Ordering::Relaxed);
    }

    /// Adds `Authorization: Bearer` when there is a token.
    pub(crate) fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.inner.credentials.authorization {
            Some(value) => request.header(AUTHORIZATION, value.clone()),
            None => request,
        }
    }

    /// Adds `X-Api-Key` when there is one: it grants publishing only, so
    /// only publishes carry it.
    pub(crate) fn with_api_key(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.inner.credentials.api_key {
            Some(value) => request.header("x-api-key", value.clone()),
            None => request,
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = &self.inner.credentials;
        f.debug_struct("Client")
            .field("bases", &self.inner.bases)
            .field("token", &credentials.token.as_ref().map(|_| "<set>"))
            .field("api_key", &credentials.api_key.as_ref().map(|_| "<set>"))
            .field("settings", &self.inner.settings)
            .finish()
    }
}

/// Builds a [`Client`]: at least one base URL, the rest optional.
#[derive(Default)]
pub struct ClientBuilder {
    bases: Vec<String>,
    token: Option<String>,
    api_key: Option<String>,
    settings: Settings,
}

impl ClientBuilder {
    /// Adds a base URL: `http://host:port` (or `https://`, when the
    /// program's reqwest and tokio-tungstenite have a TLS feature on),
    /// optionally with a path prefix. Several bases are instances to fail
    /// over between, tried in the order given.
    pub fn base(mut self, url: impl Into<String>) -> Self {
        self.bases.push(url.into());
        self
    }

    /// Adds several base URLs.
    pub fn bases<I: IntoIterator<Item = S>, S: Into<String>>(mut self, urls: I) -> Self {
        self.bases.extend(urls.into_iter().map(Into::into));
        self
    }

    /// A JWT: sent as `Authorization: Bearer` on HTTP requests and as
    /// `?token=` on event stream and WebSocket URLs (where browsers cannot
    /// set headers, so servers read it there).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// An `X-Api-Key`, sent with publishes: a backend's key to publish in
    /// any room, as any author.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The longest a publish or history request may take, per attempt
    /// (default 10 s). A long poll gets this on top of its hold time.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// The longest connecting may take: TCP (and TLS), or a WebSocket's
    /// connect and upgrade together (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// How long a subscription's long polls ask to be held (default 25 s,
    /// the server's default; the server caps it).
    pub fn poll_timeout(mut self, timeout: Duration) -> Self {
        self.settings.poll_timeout = timeout;
        self
    }

    /// How long an open event stream or WebSocket may stay silent before
    /// it counts as dead (default 60 s; noticed within twice this). Servers
    /// send keep-alives every `HEARTBEAT_SECS` (15 s by default), so only a
    /// dead connection is this quiet.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.idle_timeout = timeout;
        self
    }

    /// The waits between attempts (publishes, history reads) and between
    /// reconnects (subscriptions).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// How many times a publish or history read is tried in all (default
    /// 8, at least 1). With the default backoff, 8 attempts wait 6 to 11 s
    /// in all before giving up: long enough for an instance to restart.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.settings.attempts = attempts.max(1);
        self
    }

    /// Whether a publish refused with `429` is tried again after the
    /// server's `Retry-After` (default: no, the error is returned, since
    /// the caller usually knows better whether to slow down or drop it).
    pub fn retry_rate_limited(mut self, retry: bool) -> Self {
        self.settings.retry_rate_limited = retry;
        self
    }

    pub fn build(self) -> Result<Client, BuildError> {
        if self.bases.is_empty() {
            return Err(BuildError::NoBase);
        }
        let bases = self
            .bases
            .iter()
            .map(|raw| parse_base(raw))
            .collect::<Result<Vec<_>, _>>()?;
        let authorization = self
            .token
            .as_ref()
            .map(|token| header_value(&format!("Bearer {token}"), "token"))
            .transpose()?;
        let api_key = self
            .api_key
            .as_deref()
            .map(|key| header_value(key, "API key"))
            .transpose()?;
        let settings = self.settings;
        // Requests get their own timeouts, and streams their idle watch:
        // no read timeout here, which would set a timer for every chunk.
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(BuildError::Http)?;
        Ok(Client {
            inner: Arc::new(Inner {
                bases,
                preferred: AtomicUsize::new(0),
                http,
                credentials: Credentials {
                    token: self.token,
                    authorization,
                    api_key,
                },
                settings,
            }),
        })
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("bases", &self.bases)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("settings", &self.settings)
            .finish()
    }
}

/// A credential as a header value, marked sensitive so that HTTP stacks
/// that print headers leave it out.
fn header_value(raw: &str, what: &'static str) -> Result<HeaderValue, BuildError> {
    let mut value = HeaderValue::from_str(raw).map_err(|_| BuildError::InvalidHeader(what))?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_needs_a_base() {
        assert!(matches!(Client::builder().build(), Err(BuildError::NoBase)));
    }

    #[test]
    fn every_base_is_checked() {
        let built = Client::builder()
            .base("http://127.0.0.1:8081")
            .base("ws://127.0.0.1:8083")
            .build();
        assert!(matches!(built, Err(BuildError::InvalidBase { .. })));
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused() {
        let built = Client::builder()
            .base("http://h")
            .token("line\nbreak")
            .build();
        assert!(matches!(built, Err(BuildError::InvalidHeader("token"))));
    }

    #[test]
    fn debug_output_never_shows_credentials() {
        let client = Client::builder()
            .base("http://h")
            .token("secret-token")
            .api_key("secret-key")
            .build()
            .expect("a client");
        let shown = format!("{client:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<set>"), "{shown}");
    }

    #[test]
    fn bases_are_walked_round_and_the_preferred_one_remembered() {
        let client = Client::builder()
            .bases(["http://a", "http://b"])
            .build()
            .expect("a client");
        assert_eq!(client.base(3).host_str(), Some("b"));
        client.prefer(3);
        assert_eq!(client.preferred(), 1);
    }
}
