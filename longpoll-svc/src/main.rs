//! longpoll-svc: see the crate docs in `lib.rs` and the README.

use std::process::ExitCode;

// One thread for the broker subscription and the hub; HTTP has actix-web's
// workers (ARCHITECTURE.md, "Threads, and what crosses them").
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    common::cli::main(longpoll_svc::service()).await
}
