//! `cargo xtask dev-pool`: the loopback development pool. Not implemented yet in this build.

use anyhow::{bail, Result};

/// Arguments after `cargo xtask dev-pool`.
#[derive(Debug, clap::Args)]
pub struct DevPoolArgs {
    /// Detach the loop devices and remove the backing files.
    #[arg(long)]
    pub teardown: bool,
}

/// Runs `cargo xtask dev-pool`.
pub fn run(_args: &DevPoolArgs) -> Result<()> {
    bail!("cargo xtask dev-pool is not implemented yet in this build")
}
