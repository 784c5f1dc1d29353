//! Write a tiny synthetic duel world to a directory: a two-source toy bundle, a freshly
//! initialised king, and a challenger trained 30 steps further on the same distribution.
//!
//! cargo run -p koth-duel --example toy_world -- /tmp/toy
//! koth duel run --king /tmp/toy/king --challenger /tmp/toy/challenger \
//!     --bundle /tmp/toy/data/bundle.json --seed-material demo --seq-len 32 --n-max 512 \
//!     --relative-delta 0.001 --out /tmp/toy/verdict.json

use std::path::PathBuf;
use std::process::ExitCode;

use koth_duel::toy;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: toy_world OUT_DIR");
        return ExitCode::FAILURE;
    };
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        if dir.exists() {
            return Err(format!("{} exists; refusing to write into it", dir.display()).into());
        }
        let bundle = toy::write_toy_bundle(&dir.join("data"), 12_000, 1)?;
        let king = toy::toy_model(1)?;
        let challenger = toy::train_further(&king, 30, 8, 32, 1e-2, 2)?;
        king.save(&dir.join("king"))?;
        challenger.save(&dir.join("challenger"))?;
        println!("bundle     {}", bundle.display());
        println!("king       {}", dir.join("king").display());
        println!("challenger {}", dir.join("challenger").display());
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
