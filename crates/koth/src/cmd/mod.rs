//! One module per subcommand group. Each exposes a clap `…Command` enum and `run`.

pub mod model;
