//! loadtest: see the crate docs in `lib.rs` and the README, "Benchmarks".

use std::process::ExitCode;

use clap::Parser;
use loadtest::{Cli, fresh_room, run, target};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let url = target(&cli);
    let room = cli.room.clone().unwrap_or_else(fresh_room);
    match run(&cli, &url, &room).await {
        Ok(report) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{report}");
            }
            if report.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("loadtest: {err}");
            ExitCode::from(2)
        }
    }
}
