//! One module per subcommand group. Each exposes a clap `…Command` enum and `run`.

pub mod bench;
pub mod chain;
pub mod data;
pub mod devnet;
pub mod duel;
pub mod keys;
pub mod miner;
pub mod model;
pub mod store;
pub mod validator;
