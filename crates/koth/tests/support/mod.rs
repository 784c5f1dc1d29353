//! What the `koth` CLI tests share: the binary under test, a free loopback port, the
//! repository root. A test that needs the binary with a particular environment (no AWS
//! variables, a quieter log) wraps [`koth`].

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `koth` binary built for these tests.
pub fn koth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_koth"))
}

/// A loopback port nothing listens on at the moment of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `[train]` table of the CLI tests' miners (40 CPU steps of the mini model from the
/// genesis king) with learning rate `lr` decaying to `min_lr`.
pub fn train(lr: &str, min_lr: &str) -> String {
    format!(
        r#"device = "cpu"
dtype = "f32"
min_lr = {min_lr}
lr = {lr}
warmup_steps = 4
steps = 40
batch_size = 8
grad_accum = 1
seq_len = 64
clip = 1.0
weight_decay = 0.1
checkpoint_every = 20"#
    )
}
