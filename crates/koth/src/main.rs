//! `koth`: the one binary. Each subcommand group lives in its own module under `cmd/`; this file
//! only parses the command line, sets up logging and turns errors into a message and an exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "koth",
    version,
    about = "A king-of-the-hill network for training language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Models: create, inspect, score and differentiate Hugging Face checkpoints.
    #[command(subcommand)]
    Model(cmd::model::ModelCommand),
    // New command groups go above this line, one variant each, dispatched in `main` below.
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KOTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Model(c) => cmd::model::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: "loading X: reading Y: cause".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
