//! `cargo xtask bench`: every benchmark, each side by side with a peer in the same run.
//!
//! The drivers live next to the code they measure, as release-built examples:
//! * `delta` — convoy-thinmeta's delta vs Debian's `thin_delta` (host);
//! * `backup` — convoy-backupstore (plain and encrypted store) vs `restic` on one image (host);
//! * `s3` — the same against `restic` on one S3 server (moto_server), through a proxy that
//!   counts requests, without and with 20 ms added per request; deletes at 10 and 100 backups;
//! * `snapshot` — snapshot latency of a mounted volume under a writer (VM, real kernel);
//! * `lifecycle` — convoy-core's snapshot (against the earlier `sync -f` + snapshot sequence),
//!   clone, revert and online expand latencies (VM, real kernel).
//!
//! Each driver prints its table and ratios; results go to `docs/benchmarks.md` with the command.

use crate::vm::{self, shell_quote, GuestRun, Mode};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Arguments of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which benchmarks to run (default: all).
    #[arg(value_enum)]
    pub only: Vec<Bench>,
}

/// The benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bench {
    /// Metadata delta vs thin_delta.
    Delta,
    /// Backup/restore vs restic.
    Backup,
    /// Backup/restore/delete vs restic on the same S3 server, requests counted, +20 ms.
    S3,
    /// Snapshot latency under a writer, in the VM.
    Snapshot,
    /// Snapshot, clone, revert and expand latency of convoy-core, in the VM.
    Lifecycle,
    /// One file out of a block backup: browsing it vs restoring it whole, in the VM.
    Browse,
    /// Instant restore: first read and fill vs a plain restore, in the VM.
    Instant,
}

struct Driver {
    bench: Bench,
    package: &'static str,
    example: &'static str,
    in_vm: bool,
}

const DRIVERS: &[Driver] = &[
    Driver {
        bench: Bench::Delta,
        package: "convoy-thinmeta",
        example: "bench_delta",
        in_vm: false,
    },
    Driver {
        bench: Bench::Backup,
        package: "convoy-backupstore",
        example: "bench_restic",
        in_vm: false,
    },
    Driver {
        bench: Bench::S3,
        package: "convoy-backupstore",
        example: "bench_s3",
        in_vm: false,
    },
    Driver {
        bench: Bench::Snapshot,
        package: "convoy-thinpool",
        example: "bench_snapshot",
        in_vm: true,
    },
    Driver {
        bench: Bench::Lifecycle,
        package: "convoy-core",
        example: "bench_lifecycle",
        in_vm: true,
    },
    Driver {
        bench: Bench::Browse,
        package: "convoy-core",
        example: "bench_browse",
        in_vm: true,
    },
    Driver {
        bench: Bench::Instant,
        package: "convoy-core",
        example: "bench_instant",
        in_vm: true,
    },
];

/// Runs `cargo xtask bench`; returns whether every benchmark ran to completion.
pub fn run(args: &BenchArgs) -> Result<bool> {
    crate::prereq::ensure(crate::prereq::Level::Bench, true)?;
    let mut ok = true;
    for driver in DRIVERS {
        if !args.only.is_empty() && !args.only.contains(&driver.bench) {
            continue;
        }
        println!(
            "== bench {:?}: {} --example {}",
            driver.bench, driver.package, driver.example
        );
        let binary = build_example(driver.package, driver.example)?;
        let status = if driver.in_vm {
            let guest = GuestRun {
                script_body: format!(
                    "{}exec {}\n",
                    vm::SCRATCH_TMP_SCRIPT,
                    shell_quote(&binary.to_string_lossy())
                ),
                disk_sizes: vec![vm::SCRATCH_DISK_BYTES],
                disk_files: Vec::new(),
                timeout: Duration::from_secs(3600),
                memory_mib: 2048,
                mode: Mode::Batch,
                verbose: false,
            };
            vm::boot(&guest, &mut |line| println!("{line}"))?.exit_status
        } else {
            Command::new(&binary)
                .current_dir(vm::repo_root())
                .status()
                .with_context(|| format!("running {}", binary.display()))?
                .code()
                .unwrap_or(1)
        };
        if status != 0 {
            println!("== bench {:?} FAILED (exit status {status})", driver.bench);
            ok = false;
        }
    }
    Ok(ok)
}

/// Builds one example in release mode and returns its executable.
fn build_example(package: &str, example: &str) -> Result<PathBuf> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", package, "--example", example])
        .args(["--message-format=json-render-diagnostics"])
        .current_dir(vm::repo_root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!("building {package} --example {example} failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == example)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo built no executable for {package} --example {example}"))
}
