//! loadtest: see the crate docs in `lib.rs` and the README, "Benchmarks".

use std::process::ExitCode;

use clap::Parser;
use loadtest::{Cli, fresh_room, idle, run, target};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let url = target(&cli);
    let room = cli.room.clone().unwrap_or_else(fresh_room);
    let outcome = if cli.idle.is_some() {
        idle::run(&cli, &url, &room)
            .await
            .map(|report| (show(&cli, &report, report.to_string()), report.complete()))
    } else {
        run(&cli, &url, &room)
            .await
            .map(|report| (show(&cli, &report, report.to_string()), report.complete()))
    };
    match outcome {
        Ok(((), true)) => ExitCode::SUCCESS,
        Ok(((), false)) => ExitCode::from(1),
        Err(err) => {
            eprintln!("loadtest: {err}");
            ExitCode::from(2)
        }
    }
}

/// Prints a report as JSON or text.
fn show(cli: &Cli, report: &impl serde::Serialize, text: String) {
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        print!("{text}");
    }
}
