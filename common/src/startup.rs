//! Building and running a service: the same path for `main` and for tests.
//!
//! [`Application::build`] reads the settings, wires broker -> hub ->
//! publisher -> HTTP server and binds (port 0 picks a free port, reported by
//! [`Application::port`]). Shutdown is an input: a [`CancellationToken`] that
//! `main` cancels on SIGTERM/SIGINT ([`crate::cli::cancel_on_signals`]) and
//! tests cancel directly. It stops the listener and ends every held poll,
//! stream and session, which say goodbye to their clients; in-flight
//! requests get `SHUTDOWN_TIMEOUT_SECS`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, middleware, web};
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, MemoryBroker, RedisBroker, RedisSettings};
use crate::config::{Config, ConfigError, Env};
use crate::error::ApiError;
use crate::evacuation::Evacuation;
use crate::http::{self, AppState};
use crate::hub::{Framer, Hub, HubSettings};
use crate::limits::{ConnectionCaps, PublishLimiter, Rate};
use crate::message::Via;
use crate::metrics::Metrics;
use crate::publisher::Publisher;

/// Descriptors kept free for what is not a client connection: the
/// listener, Redis connections, logs, the runtime's own.
const RESERVED_DESCRIPTORS: u64 = 256;
/// Descriptors one connection holds: its socket (the slow-client cut
/// keeps its number, not a duplicate: see `http::Disconnector`).
const DESCRIPTORS_PER_CONNECTION: u64 = 1;
/// How often the per-address rate limiter forgets quiet addresses.
const LIMITER_CLEANUP_EVERY: Duration = Duration::from_secs(60);
/// Pending connections the kernel queues before the server accepts them;
/// the default 128 drops SYNs when a thousand clients reconnect at once.
const LISTEN_BACKLOG: u32 = 4096;
/// Access log line: client, request line (tokens masked, see
/// [`request_line`]), status, bytes, seconds.
const ACCESS_LOG_FORMAT: &str = r#"%a "%{request}xi" %s %b %T"#;
/// Where actix-web's logger writes the access log (`RUST_LOG=info`, or
/// `actix_web::middleware::logger=info`, turns it on).
const ACCESS_LOG_TARGET: &str = "actix_web::middleware::logger";

/// Mounts routes on one worker's app (or scope).
pub type RouteFn = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// A transport's own routes, with its own settings bound in, mounted beside
/// the shared ones on every worker.
#[derive(Clone)]
pub struct Routes {
    /// Under `/rooms/{room}` ([`http::ROOM_SCOPE`]), beside publish and
    /// history; a route here is the path's tail, e.g. `/events`.
    pub room: RouteFn,
    /// Anywhere else (the seed's aliases).
    pub other: Option<RouteFn>,
}

impl Routes {
    /// Routes under `/rooms/{room}` only.
    pub fn in_room(room: impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static) -> Self {
        Routes {
            room: Arc::new(room),
            other: None,
        }
    }

    /// And routes elsewhere.
    #[must_use]
    pub fn and_elsewhere(
        mut self,
        other: impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static,
    ) -> Self {
        self.other = Some(Arc::new(other));
        self
    }
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("other", &self.other.is_some())
            .finish_non_exhaustive()
    }
}

/// What makes a service a particular transport.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// The binary's name, for logs and `--help`.
    pub name: &'static str,
    pub version: &'static str,
    pub default_port: u16,
    pub via: Via,
    /// How this transport frames a message (serialized once per message).
    pub framer: Framer,
    /// Reads the transport's own variables (a bad one stops the service at
    /// start, like any other) and returns its routes.
    pub routes: fn(&Env<'_>) -> Result<Routes, ConfigError>,
    /// The transport's own variables, for `--help`.
    pub env_help: &'static str,
    /// How long a connection whose request was not read to the end waits,
    /// after its answer, for the client to close first (so closing does
    /// not reset the connection under an answer the client has not read).
    /// Zero: close at once.
    pub linger: Duration,
}

impl Service {
    /// actix-web's own default: a second.
    pub const DEFAULT_LINGER: Duration = Duration::from_secs(1);
}

/// A built, bound service, not yet running.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot set up the broker: {0}")]
    Broker(#[from] crate::broker::BrokerError),
}

impl Application {
    /// Reads the settings from `env` and builds the service. Must be called
    /// within a Tokio runtime, which then runs the hub and the broker
    /// subscription.
    pub async fn build(env: &Env<'_>, service: Service) -> Result<Self, StartError> {
        let config = Arc::new(Config::from(env, service.default_port)?);
        let routes = (service.routes)(env)?;
        let metrics = Metrics::new(service.via);
        let broker = broker(&config, &metrics)?;
        let shutdown = CancellationToken::new();
        let evacuation = Evacuation::start(
            broker.connectivity(),
            config.broker_loss_grace,
            shutdown.clone(),
        );
        let hub = Hub::start(
            broker,
            HubSettings {
                ring_len: config.hub_ring_len,
                queue_len: config.client_queue_len,
                slow_client_timeout: config.slow_client_timeout,
                room_idle: config.room_idle,
                memory_budget: config.hub_memory_bytes,
            },
            service.framer,
            metrics.hub.clone(),
        );
        let publisher = Publisher::new(
            hub.clone(),
            service.via,
            config.max_message_chars,
            Rate::new(config.publish_rate_per_sec, config.publish_burst)
                .map(|rate| Arc::new(PublishLimiter::new(rate))),
            metrics.published.clone(),
        );
        let connections = ConnectionCaps::new(
            max_connections(config.max_connections),
            config.max_connections_per_client,
            metrics.connected.clone(),
        );
        let state = web::Data::new(AppState {
            config: Arc::clone(&config),
            hub,
            publisher,
            metrics,
            shutdown: shutdown.clone(),
            connections,
            evacuation,
        });
        spawn_limiter_cleanup(state.clone());

        let app_state = state.clone();
        let body_limit = config.max_body_bytes();
        let origins = config.allowed_origins.clone();
        let address = format!("{}:{}", config.host, config.port);
        // Two missed keep-alives or pings, and then some.
        let unacknowledged_limit = config.heartbeat * 2 + Duration::from_secs(10);
        let access_log = log::log_enabled!(target: ACCESS_LOG_TARGET, log::Level::Info);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(http::json_config(body_limit))
                .app_data(http::query_config())
                .wrap_fn(count_errors)
                .wrap(http::cors(&origins))
                // Off when its lines would be filtered out anyway: the
                // logger renders each request's fields as the request
                // comes in, and wraps every response body, whatever the
                // log level.
                .wrap(middleware::Condition::new(
                    access_log,
                    middleware::Logger::new(ACCESS_LOG_FORMAT)
                        .log_target(ACCESS_LOG_TARGET)
                        .custom_request_replace("request", request_line)
                        .exclude("/healthz")
                        .exclude("/readyz"),
                ))
                .configure(http::routes)
                // One scope for every room route: matching a path with a
                // `{room}` in it runs a regex, so a request runs one (the
                // scope's), not one per room route tried before its own.
                .service(
                    web::scope(http::ROOM_SCOPE)
                        .configure(http::room_routes)
                        .configure(|config| (routes.room)(config)),
                )
                .configure(|config| {
                    if let Some(other) = &routes.other {
                        other(config);
                    }
                })
                .default_service(web::to(http::not_found))
        })
        .on_connect(move |connection, data| {
            http::remember_socket(connection, data, unacknowledged_limit)
        })
        // Without this, a client that closes its end is not noticed while a
        // long poll or stream is held: actix-web keeps a half-closed
        // connection's request running.
        .h1_allow_half_closed(false)
        .backlog(LISTEN_BACKLOG)
        .client_disconnect_timeout(service.linger)
        .shutdown_timeout(config.shutdown_timeout.as_secs())
        .shutdown_signal(shutdown.clone().cancelled_owned())
        .bind(&address)
        .map_err(|source| StartError::Bind {
            address: address.clone(),
            source,
        })?;
        let port = server
            .addrs()
            .first()
            .map_or(config.port, |bound| bound.port());
        log::info!(
            "{} service listening on {}:{port}",
            service.via,
            config.host
        );
        Ok(Application {
            port,
            server: server.run(),
            state,
        })
    }

    /// The port actually bound (useful with `PORT=0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancelling it shuts the service down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// The shared state, for tests that look inside.
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until shut down.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

fn broker(config: &Config, metrics: &Metrics) -> Result<Arc<dyn Broker>, StartError> {
    Ok(match &config.redis {
        Some(target) => Arc::new(RedisBroker::new(
            RedisSettings {
                target: target.clone(),
                key_prefix: config.redis_prefix.clone(),
                retention: config.retention(),
            },
            metrics.broker.clone(),
        )?),
        None => {
            log::warn!(
                "neither REDIS_URL nor REDIS_CLUSTER_URLS is set: using the in-process \
                 broker, which serves this one process only (other instances will not see its \
                 messages)"
            );
            Arc::new(MemoryBroker::new(config.retention()))
        }
    })
}

/// The request line for the access log, with the value of a `token` query
/// parameter replaced by `***`: browsers send their token in the URL, and
/// a token in a log is a stolen session waiting to happen.
fn request_line(request: &actix_web::dev::ServiceRequest) -> String {
    let query = request.query_string();
    let query = if query.is_empty() {
        String::new()
    } else {
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name == "token" => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        format!("?{}", masked.join("&"))
    };
    format!(
        "{} {}{query} {:?}",
        request.method(),
        request.path(),
        request.version()
    )
}

/// Counts error answers by code for `/metrics`.
fn count_errors<S>(
    request: actix_web::dev::ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<actix_web::dev::ServiceResponse, actix_web::Error>> + use<S>
where
    S: actix_web::dev::Service<
            actix_web::dev::ServiceRequest,
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
        >,
{
    let state = request.app_data::<web::Data<AppState>>().cloned();
    let response = service.call(request);
    async move {
        let response = response.await?;
        if let (Some(state), Some(err)) = (state, response.response().error()) {
            if let Some(api_error) = err.as_error::<ApiError>() {
                state
                    .metrics
                    .errors
                    .with_label_values(&[api_error.code().as_str()])
                    .inc();
            }
        }
        Ok(response)
    }
}

fn spawn_limiter_cleanup(state: web::Data<AppState>) {
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(LIMITER_CLEANUP_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = shutdown.cancelled() => return,
            }
            state.publisher.forget_idle_clients();
        }
    });
}

/// The instance's connection cap: the configured one, lowered to what the
/// process' open-files limit can hold (each connection takes a socket, and
/// a streaming one a second descriptor for its slow-client cut), so that
/// running out of descriptors refuses connections with a clear answer
/// instead of failing in odd places. `0` (no cap) stays no cap.
fn max_connections(configured: usize) -> usize {
    if configured == 0 {
        return 0;
    }
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return configured;
    };
    let fits =
        usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS) / DESCRIPTORS_PER_CONNECTION)
            .unwrap_or(usize::MAX)
            .max(1);
    if fits < configured {
        log::warn!(
            "MAX_CONNECTIONS is {configured}, but the open-files limit ({soft}) holds {fits} \
             connections: capping at {fits} (raise `ulimit -n` to hold more)"
        );
    }
    configured.min(fits)
}
