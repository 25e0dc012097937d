//! `cargo xtask fuzz`: every libFuzzer target of the workspace, for a bounded time.
//!
//! All targets live in one fuzz crate at the repository root (`fuzz/`, its own cargo workspace,
//! built by cargo-fuzz once for all targets). cargo-fuzz works on the stable toolchain with
//! `--sanitizer none`: coverage-guided fuzzing without AddressSanitizer, which safe Rust does not
//! need for memory errors; panics, hangs (`-timeout`) and memory blow-ups (`-rss_limit_mb`) are
//! still caught. Each target runs on its working corpus (`fuzz/corpus/<target>`, not committed)
//! plus the committed seeds (`fuzz/seeds/<target>`: valid examples and every input that once
//! failed). CI does not fuzz: the host tier's `fuzz_seeds` test replays every committed seed
//! through the same target bodies (`fuzz/bodies/`). Runs are documented in `docs/testing.md`.

use crate::vm;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Seconds for the whole round, shared equally by the targets (at least 1 s each); overrides
    /// --seconds. The build comes on top.
    #[arg(long)]
    pub total_seconds: Option<u64>,
    /// Only these targets (default: all of them).
    #[arg(long = "target")]
    pub targets: Vec<String>,
}

/// What libFuzzer reported for one target.
struct Stats {
    execs: Option<u64>,
    per_sec: Option<u64>,
}

/// Runs every target; returns whether all of them ran without finding a failure.
pub fn run(args: &FuzzArgs) -> Result<bool> {
    crate::prereq::ensure(crate::prereq::Level::Fuzz, true)?;
    let fuzz_dir = vm::repo_root().join("fuzz");
    let mut targets = targets(&fuzz_dir)?;
    if targets.is_empty() {
        bail!(
            "no fuzz targets found under {}/fuzz_targets",
            fuzz_dir.display()
        );
    }
    for wanted in &args.targets {
        if !targets.contains(wanted) {
            bail!("no fuzz target {wanted:?}; targets: {}", targets.join(", "));
        }
    }
    if !args.targets.is_empty() {
        targets.retain(|t| args.targets.contains(t));
    }
    let seconds = match args.total_seconds {
        Some(total) => (total / targets.len() as u64).max(1),
        None => args.seconds,
    };
    println!("== fuzz: building {} targets", targets.len());
    let status = Command::new("cargo")
        .args(["fuzz", "build", "--sanitizer", "none"])
        .current_dir(&fuzz_dir)
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed");
    }
    let (mut passed, mut failed) = (0, 0);
    let mut summary = Vec::new();
    for target in &targets {
        println!("== fuzz {target}: {seconds} s");
        let (ok, stats) = run_target(&fuzz_dir, target, seconds)?;
        let execs = stats.execs.map_or("?".to_string(), |n| n.to_string());
        let rate = stats.per_sec.map_or("?".to_string(), |n| n.to_string());
        summary.push(format!(
            "fuzz {target}: {execs} execs in {seconds} s ({rate}/s){}",
            if ok { "" } else { " FAILED" }
        ));
        if ok {
            passed += 1;
        } else {
            println!(
                "== fuzz {target} FOUND A FAILURE (input saved under {}/artifacts/{target})",
                fuzz_dir.display()
            );
            failed += 1;
        }
    }
    for line in summary {
        println!("{line}");
    }
    println!("fuzz: {passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// Runs one target for `seconds`, streaming libFuzzer's output and picking its final stats.
fn run_target(fuzz_dir: &Path, target: &str, seconds: u64) -> Result<(bool, Stats)> {
    let corpus = fuzz_dir.join("corpus").join(target);
    let seeds = fuzz_dir.join("seeds").join(target);
    fs::create_dir_all(&corpus)?;
    let mut cmd = Command::new("cargo");
    cmd.args(["fuzz", "run", "--sanitizer", "none", target])
        .arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    let mut child = cmd
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-timeout=10",
            "-rss_limit_mb=1024",
            "-print_final_stats=1",
        ])
        .current_dir(fuzz_dir)
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo fuzz run")?;
    let mut stats = Stats {
        execs: None,
        per_sec: None,
    };
    let stderr = child.stderr.take().expect("piped stderr");
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        eprintln!("{line}");
        let value = |key: &str| {
            line.strip_prefix(key)
                .and_then(|rest| rest.trim().trim_start_matches(':').trim().parse().ok())
        };
        if let Some(n) = value("stat::number_of_executed_units") {
            stats.execs = Some(n);
        }
        if let Some(n) = value("stat::average_exec_per_sec") {
            stats.per_sec = Some(n);
        }
    }
    let status = child.wait()?;
    Ok((status.success(), stats))
}

fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let dir: PathBuf = fuzz_dir.join("fuzz_targets");
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
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
