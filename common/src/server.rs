//! Building and running a service: the same path for `main` and for tests.
//!
//! [`Application::build`] wires config -> broker -> hub -> HTTP server and
//! binds (port 0 picks a free port, reported by [`Application::port`]).
//! Shutdown is an input: a [`CancellationToken`] that `main` cancels on
//! SIGTERM/SIGINT ([`cancel_on_signals`]) and tests cancel directly. It stops
//! the listener and ends every held poll, stream and session, which say
//! goodbye to their clients; in-flight requests get `SHUTDOWN_TIMEOUT_SECS`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, middleware, web};
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, MemoryBroker, RedisBroker, RedisSettings};
use crate::config::Config;
use crate::error::ApiError;
use crate::http::{self, AppState};
use crate::hub::{Framer, Hub, HubSettings};
use crate::message::Via;
use crate::metrics::Metrics;
use crate::rate_limit::{AddressLimiter, Rate};

/// How long a room nobody uses stays in an instance's memory.
const ROOM_IDLE: Duration = Duration::from_secs(600);
/// How often the per-address rate limiter forgets quiet addresses.
const LIMITER_CLEANUP_EVERY: Duration = Duration::from_secs(60);
/// Pending connections the kernel queues before the server accepts them;
/// the default 128 drops SYNs when a thousand clients reconnect at once.
const LISTEN_BACKLOG: u32 = 4096;
/// Access log line: client, request line, status, bytes, seconds.
const ACCESS_LOG_FORMAT: &str = r#"%a "%r" %s %b %T"#;

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
    /// The transport's own routes, mounted beside the shared ones.
    pub routes: fn(&mut web::ServiceConfig),
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
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot set up the broker: {0}")]
    Broker(#[from] crate::broker::BrokerError),
}

impl Application {
    /// Must be called within a Tokio runtime, which then runs the hub and
    /// the broker subscription.
    pub async fn build(config: Config, service: Service) -> Result<Self, StartError> {
        let config = Arc::new(config);
        let metrics = Metrics::new(service.via);
        let broker = broker(&config, &metrics)?;
        let hub = Hub::start(
            broker,
            HubSettings {
                ring_len: config.hub_ring_len,
                queue_len: config.client_queue_len,
                slow_client_timeout: config.slow_client_timeout,
                room_idle: ROOM_IDLE,
            },
            service.framer,
            metrics.hub.clone(),
        );
        let shutdown = CancellationToken::new();
        let publish_limiter =
            Rate::new(config.publish_rate_per_sec, config.publish_burst).map(AddressLimiter::new);
        let state = web::Data::new(AppState {
            config: Arc::clone(&config),
            hub,
            metrics,
            via: service.via,
            shutdown: shutdown.clone(),
            publish_limiter,
        });
        spawn_limiter_cleanup(state.clone());

        let app_state = state.clone();
        let body_limit = config.max_body_bytes();
        let origins = config.allowed_origins.clone();
        let address = format!("{}:{}", config.host, config.port);
        // Two missed keep-alives or pings, and then some.
        let unacknowledged_limit = config.heartbeat * 2 + Duration::from_secs(10);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(http::json_config(body_limit))
                .app_data(http::query_config())
                .wrap_fn(count_errors)
                .wrap(http::cors(&origins))
                .wrap(
                    middleware::Logger::new(ACCESS_LOG_FORMAT)
                        .exclude("/healthz")
                        .exclude("/readyz"),
                )
                .configure(http::routes)
                .configure(service.routes)
                .default_service(web::to(http::not_found))
        })
        .on_connect(move |connection, data| {
            http::remember_socket(connection, data, unacknowledged_limit)
        })
        // Without this, a client that closes its end is not noticed while a
        // long poll or stream is held (see ECOSYSTEM.md).
        .h1_allow_half_closed(false)
        .backlog(LISTEN_BACKLOG)
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
    Ok(match &config.redis_url {
        Some(url) => Arc::new(RedisBroker::new(
            RedisSettings {
                url: url.clone(),
                key_prefix: config.redis_prefix.clone(),
                history_len: config.history_len,
            },
            metrics.broker_reconnects.clone(),
        )?),
        None => {
            log::warn!(
                "REDIS_URL is not set: using the in-process broker, which serves this one \
                 process only (other instances will not see its messages)"
            );
            Arc::new(MemoryBroker::new(config.history_len))
        }
    })
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
                    .with_label_values(&[api_error.code()])
                    .inc();
            }
        }
        Ok(response)
    }
}

fn spawn_limiter_cleanup(state: web::Data<AppState>) {
    if state.publish_limiter.is_none() {
        return;
    }
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(LIMITER_CLEANUP_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = shutdown.cancelled() => return,
            }
            if let Some(limiter) = &state.publish_limiter {
                limiter.forget_idle();
            }
        }
    });
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
pub fn cancel_on_signals(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let signal = wait_for_signal().await;
        log::info!("{signal} received: shutting down");
        shutdown.cancel();
    });
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot listen for signals; stop this service with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

/// Logging for a service's `main`: `RUST_LOG` filters, `info` by default.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
}

/// The command line of every service binary. Settings come from the
/// environment, listed in `--help`.
#[derive(Debug, clap::Parser)]
struct Cli {
    /// Ask the service running on this host's PORT whether it is ready; exit
    /// 0 if it is, 1 if not (a container health check without curl).
    #[arg(long)]
    healthcheck: bool,
}

/// Everything a service's `main` does: parse the command line, read the
/// config, log, build, serve until SIGTERM/SIGINT.
pub async fn main(service: Service) -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let command = Cli::command()
        .name(service.name)
        .version(service.version)
        .about(format!(
            "The chat's {} service. Configured by environment variables.",
            service.via
        ))
        .after_help(crate::config::ENV_HELP);
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    init_logging();
    raise_open_files_limit();
    let config = match Config::from_env(service.default_port) {
        Ok(config) => config,
        Err(err) => {
            log::error!("{err}");
            return ExitCode::from(2);
        }
    };
    if cli.healthcheck {
        return healthcheck(config.port).await;
    }
    let app = match Application::build(config, service).await {
        Ok(app) => app,
        Err(err) => {
            log::error!("{}", crate::error::error_chain(&err));
            return ExitCode::FAILURE;
        }
    };
    cancel_on_signals(app.shutdown_token());
    match app.run_until_stopped().await {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            log::error!("server failed: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Every client holds a socket (a streaming one, two descriptors: see
/// `Disconnector`), and the usual soft limit of 1024 open files would cap an
/// instance at a few hundred clients. Raise it to the hard limit.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::debug!("open files limit: {limit}"),
        Err(err) => log::warn!("cannot raise the open files limit: {err}"),
    }
}

/// `GET /readyz` on 127.0.0.1:`port`, by hand: the runtime image has no curl.
async fn healthcheck(port: u16) -> ExitCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head.ends_with(b" 200"))
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
