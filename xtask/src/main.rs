//! `cargo xtask`: the project's developer tasks.
//!
//! * `vm` — boot a Debian kernel under QEMU with the host's root shared over 9p and run a command
//!   in it as root (the real-kernel harness: device-mapper works there);
//! * `test` — the one test command: the host tier, then the device tests in one guest boot;
//! * `dev-pool` — a loopback thin-pool setup on a host that has device-mapper.

mod dev_pool;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "convoy developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Loopback development pool (data.vol + metadata.vol on loop devices).
    DevPool(dev_pool::DevPoolArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::DevPool(args) => dev_pool::run(&args),
    }
}
