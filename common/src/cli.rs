//! What every service binary does: parse the command line, set up logging,
//! read the settings, build the service and serve until SIGTERM/SIGINT; or,
//! with `--healthcheck`, ask a running service whether it is ready.

use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, Env};
use crate::startup::{Application, Service, StartError};

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
        .after_help(format!("{}\n{}", crate::config::ENV_HELP, service.env_help));
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    init_logging();
    raise_open_files_limit();
    let env = Env::process();
    if cli.healthcheck {
        return match Config::from(&env, service.default_port) {
            Ok(config) => healthcheck(config.port).await,
            Err(err) => {
                log::error!("{err}");
                ExitCode::from(2)
            }
        };
    }
    let app = match Application::build(&env, service).await {
        Ok(app) => app,
        // A bad setting is the operator's to fix: exit 2, naming it.
        Err(StartError::Config(err)) => {
            log::error!("{err}");
            return ExitCode::from(2);
        }
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

/// Every client holds a socket, and the usual soft limit of 1024 open files
/// would cap an instance at about a thousand clients. Raise it to the hard
/// limit.
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
