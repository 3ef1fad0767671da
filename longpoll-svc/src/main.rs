//! longpoll-svc: see the crate docs in `lib.rs` and the README.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    common::cli::main(longpoll_svc::service()).await
}
