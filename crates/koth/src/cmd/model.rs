//! `koth model …`

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ModelCommand {}

pub fn run(c: ModelCommand) -> Result<()> {
    match c {}
}
