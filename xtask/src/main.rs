//! `cargo xtask`: the project's developer tasks.
//!
//! * `vm` — boot a Debian kernel under QEMU with the host's root shared over 9p and run a command
//!   in it as root (the real-kernel harness: device-mapper works there);
//! * `test` — the one test command: the host tier, then the device tests in one guest boot;
//! * `bench` — every benchmark beside its peer (thin_delta, restic);
//! * `demo` — the main job on an embedded default, in the VM;
//! * `reliability` — the reliability and security suite, with figures (`--full` for the
//!   published ones);
//! * `powercut` — power cuts of the whole guest during writes and backups, then verify;
//! * `fuzz` — every libFuzzer target for a bounded time;
//! * `dev-pool` — a loopback thin-pool setup on a host that has device-mapper;
//! * `prerequisites` — check (and, as root, install) the packages and tools the tasks need;
//! * `docker-plugin` — convoy as a Docker managed plugin (`docker plugin create`).

mod bench;
mod demo;
mod dev_pool;
mod docker_plugin;
mod fuzz;
mod powercut;
mod prereq;
mod reliability;
mod test;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "convoy developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a Debian kernel under QEMU and run a command (or a shell) in it as root.
    Vm(vm::VmArgs),
    /// The one test command: host tier, then every `dm_` device test in one guest boot.
    Test(test::TestArgs),
    /// Every benchmark, each beside a peer measured in the same run.
    Bench(bench::BenchArgs),
    /// The main job on an embedded default, in the VM: a volume, a snapshot, a backup to a local
    /// folder, an incremental backup, both restored and verified.
    Demo,
    /// The demo's steps, run inside the guest by `demo`.
    #[command(hide = true)]
    DemoGuest,
    /// The reliability and security suite: crashes, power cuts, device and store faults, space,
    /// concurrency, hostile input, security; prints and writes the figures.
    Reliability(reliability::RelArgs),
    /// Power cuts of the whole guest (QEMU killed) during writes and backups, each followed
    /// by a boot that verifies nothing acknowledged was lost.
    Powercut(powercut::PowercutArgs),
    /// Every libFuzzer target (the root `fuzz/` crate), each for a bounded time.
    Fuzz(fuzz::FuzzArgs),
    /// Loopback development pool (data.vol + metadata.vol on loop devices).
    DevPool(dev_pool::DevPoolArgs),
    /// Check the Debian packages and tools the demo, the tests or CI need, and install what is
    /// missing (as root; otherwise print the command to run).
    Prerequisites(prereq::PrereqArgs),
    /// Build convoy as a Docker managed plugin (config.json + rootfs from local files) and
    /// `docker plugin create` it.
    DockerPlugin(docker_plugin::DockerPluginArgs),
}

fn main() -> ExitCode {
    forget_package_env();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask` runs under `cargo run`, which sets the xtask package's own variables
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, ...) in its environment. Every cargo this process
/// starts would inherit them, and build scripts that declare `rerun-if-env-changed` on them
/// (ring does, for `CARGO_MANIFEST_DIR` and `CARGO_PKG_*`) would then be re-run and everything
/// above them rebuilt whenever the same tree is next built from a plain shell or from a test:
/// minutes of rebuilding on every switch. Dropped here, once, before any thread starts.
fn forget_package_env() {
    let per_package = |name: &str| {
        ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_EXE_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&name)
    };
    let names: Vec<_> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| per_package(name))
        .collect();
    for name in names {
        std::env::remove_var(name);
    }
}

fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Vm(args) => Ok(exit_code(vm::run(&args)?)),
        Command::Test(args) => Ok(if test::run(&args)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::Bench(args) => Ok(if bench::run(&args)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::Demo => Ok(if demo::run()? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::DemoGuest => Ok(if demo::guest()? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::Reliability(args) => Ok(if reliability::run(&args, None)?.0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::Powercut(args) => Ok(if powercut::main(&args)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::Fuzz(args) => Ok(if fuzz::run(&args)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        Command::DevPool(args) => dev_pool::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Prerequisites(args) => prereq::run(&args).map(|()| ExitCode::SUCCESS),
        Command::DockerPlugin(args) => docker_plugin::run(&args).map(|()| ExitCode::SUCCESS),
    }
}

/// An exit status as the process's own (statuses outside 0..=255 become 1).
fn exit_code(status: i32) -> ExitCode {
    u8::try_from(status).map_or(ExitCode::FAILURE, ExitCode::from)
}
