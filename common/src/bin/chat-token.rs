//! chat-token: mints a token for development and tests, signed the way the
//! services verify it (like Centrifugo's `gentoken`).
//!
//! ```text
//! JWT_SECRET=... chat-token --sub alice --rooms 'general,team-*' --ttl 1h
//! chat-token --sub alice --private-key-file key.pem --read news
//! ```
//!
//! In production a backend mints tokens with its own JWT library; this
//! command is for trying the API by hand.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use common::auth::Claims;
use common::auth::token::{now_secs, sign};
use jsonwebtoken::Algorithm;

/// Mint a token for the chat's services (printed on standard output).
#[derive(Debug, Parser)]
#[command(name = "chat-token", version)]
struct Cli {
    /// The user id (`sub`), 1-64 characters.
    #[arg(long)]
    sub: String,
    /// The display name its messages carry [default: the user id].
    #[arg(long)]
    name: Option<String>,
    /// Rooms it may read and publish in: comma-separated names, prefixes
    /// ending in `*`, or `*` [default: with --read unset, every room].
    #[arg(long, value_delimiter = ',')]
    rooms: Option<Vec<String>>,
    /// Rooms it may only read, as --rooms.
    #[arg(long, value_delimiter = ',')]
    read: Option<Vec<String>>,
    /// How long it is valid: `90s`, `15m`, `1h`, `7d` (or seconds).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// The issuer (`iss`), if the services check one (JWT_ISSUER).
    #[arg(long)]
    iss: Option<String>,
    /// The audience (`aud`), if the services check one (JWT_AUDIENCE).
    #[arg(long)]
    aud: Option<String>,
    /// The HS256 secret [default: the JWT_SECRET environment variable].
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// A PEM private key: signs RS256 (RSA) or ES256 (EC P-256) instead.
    #[arg(long, conflicts_with = "secret")]
    private_key_file: Option<std::path::PathBuf>,
}

fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not like 90s, 15m, 1h or 7d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?} is not like 90s, 15m, 1h or 7d")),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let claims = Claims {
        sub: cli.sub,
        exp: Some(now_secs() + cli.ttl.as_secs()),
        nbf: None,
        name: cli.name,
        rooms: cli.rooms,
        read: cli.read,
        iss: cli.iss,
        aud: cli.aud.as_deref().map(Into::into),
    };
    let signed = match (&cli.secret, &cli.private_key_file) {
        (_, Some(path)) => match std::fs::read(path) {
            Ok(pem) => sign(&claims, Algorithm::RS256, &pem)
                .or_else(|_| sign(&claims, Algorithm::ES256, &pem)),
            Err(err) => Err(format!("cannot read {}: {err}", path.display())),
        },
        (Some(secret), None) => sign(&claims, Algorithm::HS256, secret.as_bytes()),
        (None, None) => Err("set JWT_SECRET (or --secret), or give --private-key-file".into()),
    };
    match signed {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("chat-token: {err}");
            ExitCode::from(2)
        }
    }
}
