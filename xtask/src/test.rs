//! `cargo xtask test`: the one test command.
//!
//! 1. Host tier: `cargo test --workspace --lib --bins --tests`, then the doc tests. Device tests
//!    (named `dm_...`, `#[ignore]`d with a reason) are listed there as ignored, never counted as
//!    passing.
//! 2. VM tier: the workspace's test binaries are built on the host; those that hold `dm_` tests
//!    run inside **one** guest boot with `--ignored dm_`, on a real dm-thin kernel, in two lanes
//!    at once (see [`SHARED_DEVICE_LANE`]). The guest's
//!    `TMPDIR` is a fresh ext4 filesystem on a large sparse scratch disk (`/dev/vda`), so tests can
//!    back loop devices with sparse files; a blank 4 GiB virtio disk (`/dev/vdb`, named in
//!    `CONVOY_VM_SPARE_DISK`) serves the tests that need a real disk (partitioning).
//!
//! 3. Docker tier (host, root): ignored tests named `docker_...` drive a real `dockerd`. They run
//!    when `dockerd` is installed; otherwise the tier is reported as skipped (never as passed),
//!    and with `CONVOY_REQUIRE_DOCKER=1` (as CI sets) a missing `dockerd` fails the run.
//!
//! 4. Reliability tier: the quick scale of `cargo xtask reliability` (see `reliability.rs`).
//!
//! The task prints a `N passed, N failed` line per tier, then one for all tiers, and fails if any
//! tier failed or if the VM tier found no device test to run.

use crate::vm::{self, shell_quote, GuestRun, Mode};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Run only the host tier.
    #[arg(long, conflicts_with = "vm_only")]
    pub host_only: bool,
    /// Run only the VM tier.
    #[arg(long)]
    pub vm_only: bool,
    /// Leave out the quick reliability suite that otherwise ends the run.
    #[arg(long)]
    pub no_reliability: bool,
    /// Kill the test guest after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Only device tests whose name contains this (in addition to the `dm_` convention).
    #[arg(value_name = "FILTER")]
    pub filter: Option<String>,
}

/// Size of the spare virtio disk (`/dev/vdb`) for tests that need a real disk, not a loop device.
pub const SPARE_DISK_BYTES: u64 = 4 << 30;
/// The spare disk's node in the guest, given to tests as `CONVOY_VM_SPARE_DISK`.
pub const SPARE_DISK: &str = "/dev/vdb";

/// Marker of the device tests.
pub const DEVICE_TEST_PREFIX: &str = "dm_";
/// Marker of the tests that drive a real `dockerd` on the host.
pub const DOCKER_TEST_PREFIX: &str = "docker_";

/// A test binary and how many of the selected ignored tests it holds.
pub struct TestBinary {
    /// The test executable.
    pub path: PathBuf,
    /// Its package's directory (libtest's working directory under cargo).
    pub package_dir: PathBuf,
    /// How many selected tests it holds.
    pub tests: usize,
}

impl TestBinary {
    /// The executable's file name.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }
}

/// Runs `cargo xtask test`.
pub fn run(args: &TestArgs) -> Result<bool> {
    crate::prereq::ensure(crate::prereq::Level::Test, true)?;
    let mut ok = true;
    let mut totals = Counts::default();
    // Each tier's wall time, so that a slow CI run says where its minutes went.
    let started = std::time::Instant::now();
    let stamp = |tier: &str| println!("{tier} took {:.0} s", started.elapsed().as_secs_f64());
    if !args.vm_only {
        println!("== host tier: cargo test --workspace --lib --bins --tests, then --doc");
        let (host_ok, counts) = host_tier()?;
        println!(
            "host-tier: {} passed, {} failed",
            counts.passed, counts.failed
        );
        stamp("the host tier (with its build)");
        ok &= host_ok;
        totals.add(counts);
    }
    println!("== building test binaries for the docker and VM tiers");
    let built = build_test_binaries(None)?;
    if !args.vm_only {
        let (docker_ok, counts) = docker_tier(&built)?;
        ok &= docker_ok;
        totals.add(counts);
        stamp("up to the end of the docker tier");
    }
    if !args.host_only {
        let (vm_ok, counts) = vm_tier(args, &built)?;
        ok &= vm_ok;
        totals.add(counts);
        stamp("up to the end of the VM tier");
    }
    if !(args.no_reliability || args.host_only || args.vm_only || args.filter.is_some()) {
        println!("== reliability tier: cargo xtask reliability (quick scale)");
        let (rel_ok, counts) =
            crate::reliability::run(&crate::reliability::RelArgs::quick(), Some(&built))?;
        println!(
            "reliability-tier: {} passed, {} failed",
            counts.passed, counts.failed
        );
        ok &= rel_ok;
        totals.add(counts);
        stamp("up to the end of the reliability tier");
    }
    println!(
        "all tiers: {} passed, {} failed",
        totals.passed, totals.failed
    );
    Ok(ok)
}

/// Tests passed and failed, summed from libtest's `test result:` lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Tests passed.
    pub passed: u64,
    /// Tests failed.
    pub failed: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
    }

    /// Adds the counts of a `test result:` line, if `line` is one.
    pub fn observe(&mut self, line: &str) {
        if let Some((passed, failed)) = parse_result_line(line) {
            self.passed += passed;
            self.failed += failed;
        }
    }
}

/// What the test tiers build and run of the packages they select: every target with tests
/// (libraries, binaries, integration tests), not the examples. `cargo test`'s default also links every example,
/// which no test runs (`dm_example` includes the one it runs as a module): 173 s of compile
/// time, about 1.5 minutes of a clean 2-core build. The examples are still checked by CI's
/// `cargo clippy --all-targets`, and `cargo xtask bench` builds the ones it runs.
const TEST_TARGETS: [&str; 3] = ["--lib", "--bins", "--tests"];

/// The host tier: the test targets, then the doc tests; their output passed through and their
/// results counted.
fn host_tier() -> Result<(bool, Counts)> {
    let mut counts = Counts::default();
    let mut ok = true;
    // The doc tests have their own run: target flags leave them out of the first.
    for what in [&TEST_TARGETS[..], &["--doc"][..]] {
        let mut child = Command::new(cargo())
            .args(["test", "--workspace"])
            .args(what)
            .current_dir(vm::repo_root())
            .stdout(Stdio::piped())
            .spawn()
            .context("running cargo test")?;
        for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
            let line = line?;
            println!("{line}");
            counts.observe(&line);
        }
        let status = child.wait()?;
        if !status.success() {
            println!(
                "== host tier FAILED ({status}): cargo test --workspace {}",
                what.join(" ")
            );
            ok = false;
        }
    }
    Ok((ok && counts.failed == 0, counts))
}

/// The real-Docker tests, on the host.
fn docker_tier(built: &[(PathBuf, PathBuf)]) -> Result<(bool, Counts)> {
    let required = std::env::var("CONVOY_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let binaries = select_ignored(built, DOCKER_TEST_PREFIX, None)?;
    let total: usize = binaries.iter().map(|b| b.tests).sum();
    if !have_dockerd() {
        if required {
            println!("docker-tier: dockerd is not installed (apt-get install docker.io)");
            return Ok((
                false,
                Counts {
                    passed: 0,
                    failed: total.max(1) as u64,
                },
            ));
        }
        println!(
            "docker-tier: {total} tests skipped, not passed: dockerd is not installed \
             (apt-get install docker.io; CI sets CONVOY_REQUIRE_DOCKER=1)"
        );
        return Ok((true, Counts::default()));
    }
    println!("== docker tier: {total} tests against a real dockerd, on the host");
    let mut counts = Counts::default();
    let mut ok = true;
    for binary in &binaries {
        let mut child = Command::new(&binary.path)
            .args(["--ignored", DOCKER_TEST_PREFIX, "--test-threads=1"])
            .current_dir(&binary.package_dir)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", binary.path.display()))?;
        for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
            let line = line?;
            println!("{line}");
            counts.observe(&line);
        }
        ok &= child.wait()?.success();
    }
    println!(
        "docker-tier: {} passed, {} failed",
        counts.passed, counts.failed
    );
    Ok((ok && counts.failed == 0, counts))
}

fn vm_tier(args: &TestArgs, built: &[(PathBuf, PathBuf)]) -> Result<(bool, Counts)> {
    let binaries = select_ignored(built, DEVICE_TEST_PREFIX, args.filter.as_deref())?;
    let total: usize = binaries.iter().map(|b| b.tests).sum();
    if total == 0 {
        bail!("the VM tier found no `{DEVICE_TEST_PREFIX}` test to run");
    }
    println!(
        "== VM tier: {total} device tests in {} binaries, one guest boot, two lanes",
        binaries.len()
    );
    let mut script = String::new();
    script
        .push_str("echo \"guest kernel: $(uname -r)\"\necho 'dmsetup targets:'\ndmsetup targets\n");
    script.push_str(vm::SCRATCH_TMP_SCRIPT);
    script.push_str(&format!("export CONVOY_VM_SPARE_DISK={SPARE_DISK}\n"));
    let filter = match &args.filter {
        Some(f) => shell_quote(f),
        None => DEVICE_TEST_PREFIX.to_string(),
    };
    script.push_str(&lanes_script(&binaries, &filter));
    let run = GuestRun {
        script_body: script,
        disk_sizes: vec![vm::SCRATCH_DISK_BYTES, SPARE_DISK_BYTES],
        disk_files: Vec::new(),
        timeout: Duration::from_secs(args.timeout),
        // Two lanes of tests at once: more room than one needed (2 GiB).
        memory_mib: 3072,
        mode: Mode::Batch,
        verbose: false,
    };
    let started = Instant::now();
    let mut counts = Counts::default();
    let outcome = vm::boot(&run, &mut |line| {
        println!("{line}");
        counts.observe(strip_lane(line));
    })?;
    println!(
        "== VM tier finished in {:.1} s (guest exit status {})",
        started.elapsed().as_secs_f64(),
        outcome.exit_status
    );
    println!(
        "vm-tier: {} passed, {} failed",
        counts.passed, counts.failed
    );
    let ok = outcome.exit_status == 0 && counts.failed == 0 && counts.passed > 0;
    Ok((ok, counts))
}

/// Test binaries that use what the guest has only one of — NBD devices, the spare disk, the
/// default pool and socket names of the CLI — so they never run beside one another. They form
/// one lane; every other device test binary makes its devices under names of its own, and runs
/// in the other lane, at the same time. The guest has 2 vCPUs (multi-threaded TCG) and a test
/// binary under TCG keeps about one of them busy, so two lanes take about half the time of one.
const SHARED_DEVICE_LANE: &[&str] = &[
    "dm_cli_",
    "dm_nbd",
    "dm_cancel",
    "dm_partition_",
    "cli_",
    // Not sharing anything: here to even out the lanes' times (about 11 min each in CI).
    "dm_csi",
];

/// The guest script that runs `binaries` in two lanes at once: each lane runs its binaries one
/// after the other (`--test-threads=1`), its output lines prefixed with `[a] ` or `[b] `; the
/// script exits non-zero if any binary failed.
fn lanes_script(binaries: &[TestBinary], filter: &str) -> String {
    let shared = |b: &TestBinary| {
        let name = b.name();
        SHARED_DEVICE_LANE.iter().any(|p| name.starts_with(p))
    };
    let lanes: [(&str, Vec<&TestBinary>); 2] = [
        ("a", binaries.iter().filter(|b| shared(b)).collect()),
        ("b", binaries.iter().filter(|b| !shared(b)).collect()),
    ];
    let mut script = String::new();
    for (lane, members) in &lanes {
        script.push_str(&format!("lane_{lane}() {{\n    lrc=0\n"));
        for binary in members {
            script.push_str(&format!(
                "    echo '== {name}'\n    (cd {dir} && {bin} --ignored {filter} --test-threads=1 --color never) || lrc=1\n",
                name = binary.name(),
                dir = shell_quote(&binary.package_dir.to_string_lossy()),
                bin = shell_quote(&binary.path.to_string_lossy()),
            ));
        }
        script.push_str(&format!("    echo $lrc > \"$TMPDIR/lane-{lane}.rc\"\n}}\n"));
    }
    for (lane, _) in &lanes {
        script.push_str(&format!(
            "{{ lane_{lane} 2>&1; }} | sed -u 's/^/[{lane}] /' &\n"
        ));
    }
    script.push_str("wait\nrc=0\n");
    for (lane, _) in &lanes {
        script.push_str(&format!(
            "[ \"$(cat \"$TMPDIR/lane-{lane}.rc\" 2>/dev/null)\" = 0 ] || rc=1\n"
        ));
    }
    script.push_str("exit $rc\n");
    script
}

/// A guest output line without its lane prefix (`[a] `).
fn strip_lane(line: &str) -> &str {
    match (line.get(..1), line.get(2..4), line.get(4..)) {
        (Some("["), Some("] "), Some(rest)) => rest,
        _ => line,
    }
}

/// Whether `dockerd` is installed.
pub fn have_dockerd() -> bool {
    Command::new("dockerd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `test result: ok. 3 passed; 0 failed; ...` → (3, 0).
fn parse_result_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let count = |word: &str| -> Option<u64> {
        rest.split(';')
            .find_map(|part| part.trim().strip_suffix(word))
            .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
    };
    Some((count(" passed")?, count(" failed")?))
}

/// Builds the workspace's binaries and test binaries; returns each test binary with its package
/// directory.
pub fn build_test_binaries(package: Option<&str>) -> Result<Vec<(PathBuf, PathBuf)>> {
    // Device tests run the workspace's binaries (convoy, convoy-partition, ...) in the guest,
    // where cargo is not run: build them all first. `--tests` gives the build the features the
    // host tier's `cargo test --workspace` resolved (dev-dependencies included), so after the
    // host tier nothing is compiled again; without it cargo rebuilt core, daemon and the CLI
    // with the smaller feature set, minutes on a fresh machine.
    let status = Command::new(cargo())
        .args(["build", "--workspace", "--bins", "--tests", "--quiet"])
        .current_dir(vm::repo_root())
        .status()
        .context("running cargo build --bins")?;
    if !status.success() {
        bail!("building the workspace's binaries failed ({status})");
    }
    let mut child = Command::new(cargo())
        .args([
            "test",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .args(match package {
            Some(p) => vec!["--package", p],
            None => vec!["--workspace"],
        })
        .args(TEST_TARGETS)
        .current_dir(vm::repo_root())
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test --no-run")?;
    let mut found = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let (Some(exe), Some(manifest)) =
            (msg["executable"].as_str(), msg["manifest_path"].as_str())
        else {
            continue;
        };
        let package_dir = PathBuf::from(manifest)
            .parent()
            .map(PathBuf::from)
            .context("manifest path without a directory")?;
        found.push((PathBuf::from(exe), package_dir));
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("building the test binaries failed ({status})");
    }
    Ok(found)
}

/// The test binaries holding ignored tests named `prefix...` (and containing `filter`).
pub fn select_ignored(
    built: &[(PathBuf, PathBuf)],
    prefix: &str,
    filter: Option<&str>,
) -> Result<Vec<TestBinary>> {
    let mut binaries = Vec::new();
    for (path, package_dir) in built {
        let out = Command::new(path)
            .args(["--list", "--ignored"])
            .current_dir(package_dir)
            .output()
            .with_context(|| format!("listing tests of {}", path.display()))?;
        let tests = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .filter(|name| {
                named_with_prefix(name, prefix) && filter.is_none_or(|f| name.contains(f))
            })
            .count();
        if tests > 0 {
            binaries.push(TestBinary {
                path: path.clone(),
                package_dir: package_dir.clone(),
                tests,
            });
        }
    }
    Ok(binaries)
}

/// A test's own name (the last path segment) starts with `prefix`.
fn named_with_prefix(full_name: &str, prefix: &str) -> bool {
    full_name
        .rsplit("::")
        .next()
        .is_some_and(|name| name.starts_with(prefix))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_summed_from_libtest_output() {
        assert_eq!(
            parse_result_line(
                "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 5 filtered out; finished in 1.2s"
            ),
            Some((3, 0))
        );
        assert_eq!(
            parse_result_line("test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured"),
            Some((1, 2))
        );
        assert_eq!(parse_result_line("running 3 tests"), None);
    }

    #[test]
    fn the_vm_lanes_split_the_binaries_and_their_prefix_is_stripped() {
        let bin = |name: &str| TestBinary {
            path: PathBuf::from(format!("/t/deps/{name}-0123")),
            package_dir: PathBuf::from("/t"),
            tests: 1,
        };
        let script = lanes_script(&[bin("dm_nbd"), bin("dm_thin"), bin("cli_adopt")], "dm_");
        let (a, rest) = script.split_once("lane_b() {").unwrap();
        let b = rest.split_once('}').unwrap().0;
        assert!(
            a.contains("dm_nbd-0123") && a.contains("cli_adopt-0123"),
            "{script}"
        );
        assert!(!a.contains("dm_thin"), "{script}");
        assert!(
            b.contains("dm_thin-0123") && !b.contains("dm_nbd"),
            "{script}"
        );
        assert!(script.contains("| sed -u 's/^/[a] /' &"), "{script}");
        assert!(script.ends_with("exit $rc\n"), "{script}");
        assert_eq!(strip_lane("[b] test result: ok."), "test result: ok.");
        assert_eq!(strip_lane("test result: ok."), "test result: ok.");
        assert_eq!(strip_lane("[é] x"), "[é] x");
    }

    #[test]
    fn device_tests_are_recognised_by_their_own_name() {
        let dm = |name| named_with_prefix(name, DEVICE_TEST_PREFIX);
        assert!(dm("dm_pool_create"));
        assert!(dm("pool::tests::dm_pool_create"));
        assert!(!dm("pool::dm_tests::create"));
        assert!(!dm("random_name"));
        assert!(named_with_prefix(
            "docker_real_dockerd_volume_lifecycle",
            DOCKER_TEST_PREFIX
        ));
    }
}
