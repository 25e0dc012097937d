//! `cargo xtask fuzz`: every libFuzzer target of the workspace, each for a bounded time.
//!
//! Fuzz crates live beside the crate they test (`crates/<name>/fuzz`, each its own cargo
//! workspace, built by cargo-fuzz). cargo-fuzz works on the stable toolchain with
//! `--sanitizer none`: coverage-guided fuzzing without AddressSanitizer, which safe Rust does not
//! need for memory errors; panics, hangs (`-timeout`) and memory blow-ups (`-rss_limit_mb`) are
//! still caught. CI runs a short round; longer runs are documented in `docs/testing.md`.

use crate::vm;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

/// Runs every target; returns whether all of them ran without finding a failure.
pub fn run(args: &FuzzArgs) -> Result<bool> {
    let which = Command::new("cargo").args(["fuzz", "--version"]).output();
    if !which.map(|o| o.status.success()).unwrap_or(false) {
        bail!("cargo-fuzz is not installed: cargo install cargo-fuzz --locked");
    }
    let mut ok = true;
    let mut ran = 0;
    for fuzz_dir in fuzz_dirs()? {
        for target in targets(&fuzz_dir)? {
            println!(
                "== fuzz {} / {target}: {} s",
                fuzz_dir.display(),
                args.seconds
            );
            let corpus = fuzz_dir.join("corpus").join(&target);
            fs::create_dir_all(&corpus)?;
            let status = Command::new("cargo")
                .args(["fuzz", "run", "--sanitizer", "none", &target])
                .arg(&corpus)
                .args([
                    "--",
                    &format!("-max_total_time={}", args.seconds),
                    "-timeout=10",
                    "-rss_limit_mb=512",
                    "-print_final_stats=1",
                ])
                .current_dir(&fuzz_dir)
                .status()
                .context("running cargo fuzz")?;
            ran += 1;
            if !status.success() {
                println!(
                    "== fuzz {target} FOUND A FAILURE (see {}/artifacts)",
                    fuzz_dir.display()
                );
                ok = false;
            }
        }
    }
    if ran == 0 {
        bail!("no fuzz targets found under crates/*/fuzz");
    }
    println!(
        "fuzz: {} passed, {} failed",
        if ok { ran } else { 0 },
        if ok { 0 } else { 1 }
    );
    Ok(ok)
}

fn fuzz_dirs() -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(vm::repo_root().join("crates"))? {
        let dir = entry?.path().join("fuzz");
        if dir.join("Cargo.toml").is_file() {
            dirs.push(dir);
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn targets(fuzz_dir: &std::path::Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(fuzz_dir.join("fuzz_targets"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.push(stem.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}
