//! Build the devnet-mini network (see `koth_miner::devkit`) in an empty directory, with a
//! `validator.toml` and one `miner-N.toml` per miner, for trying the miner by hand:
//!
//!   cargo run -p koth-miner --example mini-net -- DIR [PORT] [MINERS]

use std::path::PathBuf;

use koth_miner::devkit::{mini_network, MiniOptions};

const TRAIN: &str = r#"device = "cpu"
dtype = "f32"
lr = 3e-3
min_lr = 3e-4
warmup_steps = 10
steps = 200
batch_size = 8
grad_accum = 1
seq_len = 64
clip = 1.0
weight_decay = 0.1
checkpoint_every = 50"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: mini-net DIR [PORT] [MINERS]")?);
    let port: u16 = match args.next() {
        Some(p) => p.parse().map_err(|e| format!("PORT {p:?}: {e}"))?,
        None => 8080,
    };
    let miners: usize = match args.next() {
        Some(m) => m.parse().map_err(|e| format!("MINERS {m:?}: {e}"))?,
        None => 2,
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let net = mini_network(
        &dir,
        &MiniOptions {
            miners,
            ..MiniOptions::default()
        },
    )?;
    let v = koth_validator::devkit::write_validator_config(
        &net.root,
        "validator",
        &format!("127.0.0.1:{port}"),
        &net.store_url,
        100,
    )?;
    println!("validator config: {}", v.display());
    let feed = format!("http://127.0.0.1:{port}");
    for i in 0..miners {
        let p = net.write_miner_config(i, Some(&feed), 128, i as u64 + 1, TRAIN)?;
        println!("miner config: {}", p.display());
    }
    println!("genesis king: {}", net.king);
    Ok(())
}
