//! `cargo xtask reliability`: the reliability and security suite (issue 8), with figures.
//!
//! The suite is a set of ignored tests in the `convoy-e2e` package (`tests/tests/rel_*.rs`),
//! selected by their own name:
//!
//! * `rel_host_*` run on the host (as root): store faults, hostile input, security;
//! * `rel_docker_*` run on the host against a real `dockerd`;
//! * `rel_vm_*` run inside **one** guest boot on a real dm-thin kernel: crash consistency, device
//!   faults, space exhaustion, concurrency, deleted-data checks;
//! * the power cuts are driven from here (`powercut`): the guest is killed mid-work and booted
//!   again on the same disk images.
//!
//! Every scenario prints one `@@REL {json}` line with what it did (trials, faults injected,
//! hostile inputs, checks passed, data lost). This task collects them into a table, writes
//! `target/reliability/report-<scale>.{json,md}`, and fails if a test failed, any data was lost,
//! or a suite reported nothing. `--full` runs the counts behind `docs/reliability.md`; the default
//! quick scale is what CI (and `cargo xtask test`) runs.

use crate::test::{self, Counts};
use crate::vm::{self, shell_quote, GuestRun, Mode};
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `cargo xtask reliability`.
#[derive(Debug, Clone, clap::Args)]
pub struct RelArgs {
    /// Run at full scale (the published figures) instead of the quick CI scale.
    #[arg(long)]
    pub full: bool,
    /// Seed of every random choice (kill points, sizes, names, fault timing).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Kill the suite's guest after this many seconds.
    #[arg(long, default_value_t = 5400)]
    pub timeout: u64,
    /// Leave out the power cuts.
    #[arg(long)]
    pub no_powercut: bool,
    /// Only the parts named (host, docker, vm, powercut); repeatable. Default: all.
    #[arg(long = "only", value_name = "PART")]
    pub only: Vec<String>,
    /// Only tests whose name contains this.
    #[arg(value_name = "FILTER")]
    pub filter: Option<String>,
}

impl RelArgs {
    /// The quick run `cargo xtask test` ends with.
    pub fn quick() -> Self {
        RelArgs {
            full: false,
            seed: 1,
            timeout: 1800,
            no_powercut: false,
            only: Vec::new(),
            filter: None,
        }
    }

    fn scale(&self) -> &'static str {
        if self.full {
            "full"
        } else {
            "quick"
        }
    }

    fn wants(&self, part: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|p| p == part))
            && !(part == "powercut" && self.no_powercut)
    }
}

/// The suites a complete run must report on.
const SUITES: &[&str] = &[
    "crash",
    "powercut",
    "device-faults",
    "store-faults",
    "space",
    "concurrency",
    "hostile-input",
    "security",
];

/// Marker of a figure line.
const FIGURE_MARK: &str = "@@REL ";

/// What the suite saw: test counts and figure lines.
#[derive(Default)]
pub struct Outcome {
    /// Tests passed and failed over every part.
    pub counts: Counts,
    /// Every figure line's JSON.
    figures: Vec<Value>,
    /// Parts that failed to run or had a failing test, with why.
    failures: Vec<String>,
}

impl Outcome {
    fn line(&mut self, line: &str) {
        println!("{line}");
        self.counts.observe(line);
        if let Some(json) = line
            .find(FIGURE_MARK)
            .map(|i| &line[i + FIGURE_MARK.len()..])
        {
            match serde_json::from_str::<Value>(json) {
                Ok(v) => self.figures.push(v),
                Err(e) => self
                    .failures
                    .push(format!("unreadable figure line ({e}): {json}")),
            }
        }
    }
}

/// Runs `cargo xtask reliability`; `built` reuses the test binaries `cargo xtask test` built.
pub fn run(args: &RelArgs, built: Option<&[(PathBuf, PathBuf)]>) -> Result<(bool, Counts)> {
    let started = Instant::now();
    let owned;
    let built = match built {
        Some(b) => b,
        None => {
            println!("== building the binaries and the suite's test binaries");
            owned = test::build_test_binaries(Some("convoy-e2e"))?;
            &owned
        }
    };
    let mut out = Outcome::default();
    let filter = args.filter.as_deref();
    println!(
        "== reliability suite, {} scale, seed {}",
        args.scale(),
        args.seed
    );
    if args.wants("host") {
        host_part(args, built, "rel_host_", "host", &mut out)?;
    }
    if args.wants("docker") {
        let required = std::env::var("CONVOY_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
        if test::have_dockerd() {
            host_part(args, built, "rel_docker_", "docker", &mut out)?;
        } else if required {
            out.failures
                .push("dockerd is not installed (apt-get install docker.io)".into());
        } else {
            println!("reliability: docker part skipped, not passed: dockerd is not installed");
        }
    }
    if args.wants("vm") {
        vm_part(args, built, filter, &mut out)?;
    }
    if args.wants("powercut") && filter.is_none_or(|f| "powercut".contains(f)) {
        println!("== power cuts: the guest is killed mid-work, then booted again on its disks");
        let trials = if args.full {
            crate::powercut::FULL_TRIALS
        } else {
            crate::powercut::QUICK_TRIALS
        };
        let ok = crate::powercut::run(built, trials, args.seed, &mut |line| out.line(line))?;
        if !ok {
            out.failures
                .push("power cuts: a boot failed or an invariant was violated".into());
        }
    }
    let complete = args.only.is_empty() && filter.is_none() && !args.no_powercut;
    let ok = report(args, &mut out, complete, started.elapsed())?;
    Ok((ok, out.counts))
}

/// Runs the ignored tests named `prefix...` of every built binary, on the host.
fn host_part(
    args: &RelArgs,
    built: &[(PathBuf, PathBuf)],
    prefix: &str,
    part: &str,
    out: &mut Outcome,
) -> Result<()> {
    let binaries = test::select_ignored(built, prefix, args.filter.as_deref())?;
    let filter = args.filter.clone().unwrap_or_else(|| prefix.to_string());
    for binary in binaries {
        println!("== {part}: {} ({} tests)", binary.name(), binary.tests);
        let mut child = Command::new(&binary.path)
            .args([
                "--ignored",
                &filter,
                "--nocapture",
                "--test-threads=1",
                "--color",
                "never",
            ])
            .env("CONVOY_REL_SCALE", args.scale())
            .env("CONVOY_REL_SEED", args.seed.to_string())
            .current_dir(&binary.package_dir)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", binary.path.display()))?;
        for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
            out.line(&line?);
        }
        let status = child.wait()?;
        if !status.success() {
            out.failures
                .push(format!("{part}: {} failed ({status})", binary.name()));
        }
    }
    Ok(())
}

/// Runs every `rel_vm_` test in one guest boot.
fn vm_part(
    args: &RelArgs,
    built: &[(PathBuf, PathBuf)],
    filter: Option<&str>,
    out: &mut Outcome,
) -> Result<()> {
    let binaries = test::select_ignored(built, "rel_vm_", filter)?;
    let total: usize = binaries.iter().map(|b| b.tests).sum();
    if total == 0 {
        if filter.is_none() {
            out.failures.push("no rel_vm_ test found".into());
        }
        return Ok(());
    }
    println!(
        "== vm: {total} tests in {} binaries, one guest boot",
        binaries.len()
    );
    let mut script = String::new();
    script.push_str("echo \"guest kernel: $(uname -r)\"\n");
    script.push_str(vm::SCRATCH_TMP_SCRIPT);
    let _ = writeln!(
        script,
        "export CONVOY_VM_SPARE_DISK={} CONVOY_REL_SCALE={} CONVOY_REL_SEED={}\nrc=0",
        test::SPARE_DISK,
        args.scale(),
        args.seed
    );
    let filter = shell_quote(filter.unwrap_or("rel_vm_"));
    for binary in &binaries {
        let _ = writeln!(
            script,
            "echo '== vm: {name}'\n(cd {dir} && {bin} --ignored {filter} --nocapture --test-threads=1 --color never) || rc=1",
            name = binary.name(),
            dir = shell_quote(&binary.package_dir.to_string_lossy()),
            bin = shell_quote(&binary.path.to_string_lossy()),
        );
    }
    script.push_str("exit $rc\n");
    let run = GuestRun {
        script_body: script,
        disk_sizes: vec![vm::SCRATCH_DISK_BYTES, test::SPARE_DISK_BYTES],
        disk_files: Vec::new(),
        timeout: Duration::from_secs(args.timeout),
        memory_mib: 2048,
        mode: Mode::Batch,
        verbose: false,
    };
    let started = Instant::now();
    let outcome = vm::boot(&run, &mut |line| out.line(line))?;
    println!(
        "== vm part finished in {:.1} s (guest exit status {})",
        started.elapsed().as_secs_f64(),
        outcome.exit_status
    );
    if outcome.exit_status != 0 {
        out.failures
            .push(format!("vm: guest exit status {}", outcome.exit_status));
    }
    Ok(())
}

/// Totals of one suite.
#[derive(Default)]
struct Totals {
    scenarios: u64,
    trials: u64,
    faults: u64,
    inputs: u64,
    checks: u64,
    lost: u64,
}

fn number(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Prints the table, writes the report files; returns whether the run passed.
fn report(args: &RelArgs, out: &mut Outcome, complete: bool, took: Duration) -> Result<bool> {
    let mut by_suite: BTreeMap<String, Totals> = BTreeMap::new();
    for f in &out.figures {
        let t = by_suite
            .entry(f["suite"].as_str().unwrap_or("?").to_string())
            .or_default();
        t.scenarios += 1;
        t.trials += number(f, "trials");
        t.faults += number(f, "faults");
        t.inputs += number(f, "inputs");
        t.checks += number(f, "checks");
        t.lost += number(f, "lost");
    }
    if complete {
        for suite in SUITES {
            if !by_suite.contains_key(*suite) {
                out.failures
                    .push(format!("suite {suite} reported no figure"));
            }
        }
    }
    let lost: u64 = by_suite.values().map(|t| t.lost).sum();
    if lost > 0 {
        out.failures.push(format!("{lost} data lost"));
    }
    if out.counts.failed > 0 {
        out.failures
            .push(format!("{} tests failed", out.counts.failed));
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "| suite | scenarios | trials | faults injected | hostile inputs | checks passed | data lost |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for (suite, t) in &by_suite {
        let _ = writeln!(
            md,
            "| {suite} | {} | {} | {} | {} | {} | {} |",
            t.scenarios, t.trials, t.faults, t.inputs, t.checks, t.lost
        );
    }
    let _ = writeln!(
        md,
        "\n| suite | scenario | trials | faults | inputs | checks | lost | other figures |\n|---|---|---:|---:|---:|---:|---:|---|"
    );
    for f in &out.figures {
        let extra = f["extra"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            f["suite"].as_str().unwrap_or("?"),
            f["scenario"].as_str().unwrap_or("?").replace('|', "/"),
            number(f, "trials"),
            number(f, "faults"),
            number(f, "inputs"),
            number(f, "checks"),
            number(f, "lost"),
            extra.replace('|', "/")
        );
    }
    // Targets an issue names as figures (`target_..._met`), reported, never asserted.
    for f in &out.figures {
        for (key, value) in f["extra"].as_object().into_iter().flatten() {
            if key.starts_with("target_") && key.ends_with("_met") && value == &Value::Bool(false) {
                let _ = writeln!(
                    md,
                    "\ntarget not met: {} / {}: {key} = false",
                    f["suite"].as_str().unwrap_or("?"),
                    f["scenario"].as_str().unwrap_or("?")
                );
            }
        }
    }
    let command = format!(
        "cargo xtask reliability{} --seed {}",
        if args.full { " --full" } else { "" },
        args.seed
    );
    let _ = writeln!(
        md,
        "\n`{command}`: {} tests passed, {} failed, {:.0} s.",
        out.counts.passed,
        out.counts.failed,
        took.as_secs_f64()
    );
    println!("== reliability report ({} scale)\n{md}", args.scale());

    let dir = vm::repo_root().join("target/reliability");
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::json!({
        "command": command,
        "scale": args.scale(),
        "seed": args.seed,
        "seconds": took.as_secs(),
        "tests_passed": out.counts.passed,
        "tests_failed": out.counts.failed,
        "failures": out.failures,
        "figures": out.figures,
    });
    let base = dir.join(format!("report-{}", args.scale()));
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(base.with_extension("md"), &md)?;
    println!("report: {}.{{json,md}}", base.display());
    for failure in &out.failures {
        println!("reliability FAILED: {failure}");
    }
    println!(
        "reliability: {} passed, {} failed, {} figures, {lost} data lost",
        out.counts.passed,
        out.counts.failed,
        out.figures.len()
    );
    Ok(out.failures.is_empty())
}
