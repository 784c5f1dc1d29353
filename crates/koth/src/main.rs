//! `koth`: the one binary. Each subcommand group lives in its own module under `cmd/`; this file
//! only parses the command line, sets up logging and turns errors into a message and an exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod devnet;

#[derive(Parser)]
#[command(
    name = "koth",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("KOTH_BUILD_COMMIT"), ")"),
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
    /// Data: tokenizers, ingest to checksummed shards, bundles, deterministic samples, holdout.
    #[command(subcommand)]
    Data(cmd::data::DataCommand),
    /// The embedded chain: init, register, commit, set weights, status, reveals, weights, verify.
    #[command(subcommand)]
    Chain(cmd::chain::ChainCommand),
    /// Keys: sr25519 keys with SS58 addresses in a keystore directory.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Checkpoints by digest: put, get, verify, ls, gc in a local or S3 store.
    #[command(subcommand)]
    Store(cmd::store::StoreCommand),
    /// Duels: run king vs challenger, replay a verdict, decide on differences, simulate the rules.
    #[command(subcommand)]
    Duel(cmd::duel::DuelCommand),
    /// The validator: `run --config validator.toml`, `status`.
    #[command(subcommand)]
    Validator(cmd::validator::ValidatorCommand),
    /// Benchmarks: paired scoring and training throughput on random weights.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// The whole network on one machine: validator, dashboard and miners training for real.
    Devnet(cmd::devnet::DevnetArgs),
    /// The miner: `run` (loop) or `once` (one attempt) with `--config miner.toml`.
    #[command(subcommand)]
    Miner(cmd::miner::MinerCommand),
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
        // Colour only on a terminal: logs redirected to a file (the devnet's, CI's) stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Model(c) => cmd::model::run(c),
        Command::Bench(c) => cmd::bench::run(c),
        Command::Data(c) => cmd::data::run(c),
        Command::Chain(c) => cmd::chain::run(c),
        Command::Keys(c) => cmd::keys::run(c),
        Command::Store(c) => cmd::store::run(c),
        Command::Duel(c) => cmd::duel::run(c),
        Command::Validator(c) => cmd::validator::run(c),
        Command::Miner(c) => cmd::miner::run(c),
        Command::Devnet(c) => cmd::devnet::run(c),
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
