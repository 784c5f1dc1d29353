//! Open (or create) an event log for a competition file, record one poll of the chain with a
//! new commitment, and print what the core asks for. Running it again on the same log shows the
//! restart path (`recovered`); a foreign, damaged or other-competition log is refused.
//!
//! `cargo run -p koth-validator --example journal -- competition.toml validator.db`

use std::path::PathBuf;
use std::process::ExitCode;

use koth_core::competition::Competition;
use koth_core::Digest;
use koth_validator::{Event, Journal, Reveal};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [competition, log] = args.as_slice() else {
        eprintln!("usage: journal <competition.toml> <log.db>");
        return ExitCode::FAILURE;
    };
    let bytes = match std::fs::read(competition) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: reading {competition}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let competition = match Competition::from_toml_bytes(&bytes) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut journal, effects) = match Journal::open(&PathBuf::from(log), &competition) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "opened {log}: {} events; start-up effects: {effects:?}",
        journal.log().len()
    );
    let n = journal.state().next_entry;
    let block = journal.state().block + 4;
    let hotkey = format!("5Miner{n}");
    let digest = Digest::of(hotkey.as_bytes());
    let event = Event::Revealed {
        block,
        reveals: vec![Reveal {
            hotkey: hotkey.clone(),
            uid: Some(n as u16),
            payload: format!("v4|s3://models/{hotkey}|{digest}|{hotkey}"),
            commit_block: block - 3,
            reveal_block: block,
            block_hash: format!("0x{block:x}"),
        }],
    };
    match journal.record(event) {
        Ok(effects) => println!("revealed {hotkey}; effects: {effects:?}"),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "log has {} events; queue {} entries; active: {:?}",
        journal.log().len(),
        journal.state().queue.len(),
        journal.state().active.as_ref().map(|a| a.entry)
    );
    ExitCode::SUCCESS
}
