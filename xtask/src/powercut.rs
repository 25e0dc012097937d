//! `cargo xtask powercut`: power cuts of the whole guest during writes and backups (issue 8).
//!
//! Three disk images in `target/powercut/` outlive the guest: an ext4 "state" disk (the daemon's
//! root, the `vfs://` backup folder and the test's logs of acknowledged work), and the thin
//! pool's metadata and data disks. Boot 0 sets up the pool and volumes and starts the load; every
//! later boot first verifies what the cut left, then loads again. The load is the guest test
//! `rel_powercut_guest_boot` (`tests/tests/rel_powercut.rs`): fsync'd record writers, file
//! replacement by rename, and a snapshot/backup/delete loop. When it prints its ready marker,
//! this side kills QEMU with SIGKILL after a seeded delay — no shutdown, no flush of the guest's
//! caches. The last boot only verifies.
//!
//! What a cut models: the disks use QEMU's `cache=unsafe`, so a write the guest's kernel had
//! submitted and seen completed is in the host's page cache and survives the kill; what the
//! guest still held in its own page cache is lost. That is a power cut of the guest (its RAM and
//! in-flight requests), not of the host: a disk's volatile write cache is not modelled.
//!
//! Each verify prints `@@POWERCUT-VERIFY {json}`; this side sums them into one figure line
//! (`@@REL`, suite `powercut`): trials = faults = power cuts, checks passed, data lost.

use crate::test;
use crate::vm::{self, shell_quote, GuestRun, Mode, PowerCut};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `cargo xtask powercut`.
#[derive(Debug, clap::Args)]
pub struct PowercutArgs {
    /// Power cuts to make (each needs a guest boot; one more boot verifies the last).
    #[arg(long)]
    pub trials: Option<u64>,
    /// Seed of the cut delays and of the guest's choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The CI scale (`QUICK_TRIALS` cuts) instead of the full one.
    #[arg(long)]
    pub quick: bool,
}

/// Cuts at the quick (CI) scale.
pub const QUICK_TRIALS: u64 = 1;
/// Cuts at the full scale (the published figures).
pub const FULL_TRIALS: u64 = 10;

/// The guest test run at every boot.
const GUEST_TEST: &str = "rel_powercut_guest_boot";
/// The guest's line that arms the cut.
const READY: &str = "@@POWERCUT-READY@@";
/// The load's progress lines (`snapshot NAME`, `backup NAME`, `delete old`).
const LOAD_MARK: &str = "@@POWERCUT-LOAD ";
/// Each boot's verify result.
const VERIFY_MARK: &str = "@@POWERCUT-VERIFY ";
/// The cut comes this long after the ready line: seeded, between these bounds.
const MIN_DELAY_MS: u64 = 1_000;
const MAX_DELAY_MS: u64 = 15_000;
/// One boot (verify and restore every listed backup, then load) must end within this.
const BOOT_TIMEOUT: Duration = Duration::from_secs(1200);

/// Runs `cargo xtask powercut`.
pub fn main(args: &PowercutArgs) -> Result<bool> {
    let trials = args.trials.unwrap_or(if args.quick {
        QUICK_TRIALS
    } else {
        FULL_TRIALS
    });
    println!("== building the binaries and the suite's test binaries");
    let built = test::build_test_binaries(Some("convoy-e2e"))?;
    let started = Instant::now();
    let ok = run(&built, trials, args.seed, &mut |line| println!("{line}"))?;
    println!(
        "powercut: {} after {:.0} s",
        if ok { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    Ok(ok)
}

/// Makes `trials` power cuts with `seed` on fresh disk images, using the `rel_powercut` test
/// binary among `built` (from [`test::build_test_binaries`]). Every guest line, each boot's
/// verify line and the final `@@REL` figure line go to `on_line`. Returns false if any boot
/// failed, a load ended without being cut, an invariant was violated or data was lost.
pub fn run(
    built: &[(PathBuf, PathBuf)],
    trials: u64,
    seed: u64,
    on_line: &mut dyn FnMut(&str),
) -> Result<bool> {
    let started = Instant::now();
    let binaries = test::select_ignored(built, "rel_powercut_", None)?;
    let [binary] = binaries.as_slice() else {
        bail!(
            "expected one test binary with {GUEST_TEST}, found {}",
            binaries.len()
        );
    };
    let disks = fresh_disks()?;
    let mut delays = SplitMix(seed ^ 0x706f_7765_7263_7574);
    let mut sum = Sum::default();
    let mut cuts = 0u64;
    let mut during_backup = 0u64;
    let mut failure = None;
    for boot in 0..=trials {
        let load = boot < trials;
        let cut = load.then(|| PowerCut {
            marker: READY.to_string(),
            delay: Duration::from_millis(
                MIN_DELAY_MS + delays.next() % (MAX_DELAY_MS - MIN_DELAY_MS + 1),
            ),
        });
        on_line(&format!(
            "== powercut boot {boot}/{trials}: {}{}",
            if boot == 0 { "setup" } else { "verify" },
            match &cut {
                Some(c) => format!(", load, cut {} ms after it is ready", c.delay.as_millis()),
                None => String::new(),
            }
        ));
        let run = GuestRun {
            script_body: script(binary, boot, load, seed, trials),
            disk_sizes: Vec::new(),
            disk_files: disks.clone(),
            timeout: BOOT_TIMEOUT,
            memory_mib: 2048,
            mode: Mode::Batch,
            verbose: false,
        };
        let boot_started = Instant::now();
        let mut last_load = String::new();
        let mut outcome;
        let mut attempt = 0;
        loop {
            let mut command_lines = 0u64;
            outcome = vm::boot_with_cut(&run, cut.as_ref(), &mut |line| {
                on_line(line);
                command_lines += 1;
                if let Some(what) = line.find(LOAD_MARK).map(|i| &line[i + LOAD_MARK.len()..]) {
                    last_load = what.to_string();
                }
                if let Some(json) = line
                    .find(VERIFY_MARK)
                    .map(|i| &line[i + VERIFY_MARK.len()..])
                {
                    sum.add(json);
                }
            });
            // A guest that failed before its command printed anything (TCG on a loaded host can
            // panic in the kernel's timer check) never touched the disks: boot it again.
            attempt += 1;
            match &outcome {
                Err(e) if command_lines == 0 && attempt < 3 => on_line(&format!(
                    "== powercut boot {boot}: the guest failed to start ({e:#}); booting it again"
                )),
                _ => break,
            }
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                failure = Some(format!("boot {boot}: {e:#}"));
                break;
            }
        };
        if !outcome.power_cut {
            on_line(&format!(
                "== powercut boot {boot}: guest exited ({}) after {:.1} s",
                outcome.exit_status,
                boot_started.elapsed().as_secs_f64()
            ));
        }
        if outcome.power_cut {
            cuts += 1;
            during_backup += u64::from(last_load.starts_with("backup "));
            on_line(&format!(
                "== powercut boot {boot}: power cut after {:.1} s of boot, during {}",
                boot_started.elapsed().as_secs_f64(),
                if last_load.is_empty() {
                    "writes (before the first snapshot)".to_string()
                } else {
                    format!("writes and `{last_load}`")
                }
            ));
        } else if load {
            failure = Some(format!(
                "boot {boot}: the guest stopped before the cut (exit status {})",
                outcome.exit_status
            ));
            break;
        } else if outcome.exit_status != 0 {
            failure = Some(format!(
                "boot {boot}: verify failed (exit status {})",
                outcome.exit_status
            ));
            break;
        }
    }
    if sum.unreadable > 0 {
        failure.get_or_insert(format!("{} unreadable verify lines", sum.unreadable));
    }
    let figure = serde_json::json!({
        "suite": "powercut",
        "scenario": "guest power cut (QEMU SIGKILL) during fsync'd writes, snapshots and backups",
        "scale": if trials >= FULL_TRIALS { "full" } else { "quick" },
        "seed": seed,
        "trials": cuts,
        "faults": cuts,
        "inputs": 0,
        "checks": sum.checks,
        "lost": sum.lost,
        "extra": {
            "verified_boots": sum.boots,
            "cuts_during_backup": during_backup,
            "acked_records": sum.acked_records,
            "acked_file_replacements": sum.acked_files,
            "backups_restored": sum.backups_restored,
            "seconds": started.elapsed().as_secs(),
        },
    });
    on_line(&format!("@@REL {figure}"));
    if let Some(f) = &failure {
        on_line(&format!("powercut FAILED: {f}"));
    }
    Ok(failure.is_none() && sum.lost == 0 && sum.violations == 0 && sum.boots == trials)
}

/// Fresh sparse images: state (ext4), pool metadata, pool data; attached as vda, vdb, vdc.
fn fresh_disks() -> Result<Vec<PathBuf>> {
    let dir = vm::repo_root().join("target/powercut");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut disks = Vec::new();
    for (name, bytes) in [
        ("state.img", 2u64 << 30),
        ("meta.img", 64 << 20),
        ("data.img", 4 << 30),
    ] {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        File::create(&path)
            .and_then(|f| f.set_len(bytes))
            .with_context(|| format!("creating {}", path.display()))?;
        disks.push(path);
    }
    Ok(disks)
}

fn script(binary: &test::TestBinary, boot: u64, load: bool, seed: u64, trials: u64) -> String {
    format!(
        "export CONVOY_POWERCUT_DISKS=/dev/vda,/dev/vdb,/dev/vdc CONVOY_POWERCUT_BOOT={boot} \
         CONVOY_POWERCUT_LOAD={load} CONVOY_REL_SEED={seed} CONVOY_REL_SCALE={scale}\n\
         cd {dir} && exec {bin} --ignored --exact {GUEST_TEST} --nocapture --test-threads=1 --color never\n",
        load = u8::from(load),
        scale = if trials >= FULL_TRIALS { "full" } else { "quick" },
        dir = shell_quote(&binary.package_dir.to_string_lossy()),
        bin = shell_quote(&binary.path.to_string_lossy()),
    )
}

/// The verify lines, summed.
#[derive(Default)]
struct Sum {
    boots: u64,
    checks: u64,
    lost: u64,
    violations: u64,
    acked_records: u64,
    acked_files: u64,
    backups_restored: u64,
    unreadable: u64,
}

impl Sum {
    fn add(&mut self, json: &str) {
        let Ok(v) = serde_json::from_str::<Value>(json) else {
            self.unreadable += 1;
            return;
        };
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        self.boots += 1;
        self.checks += n("checks");
        self.lost += n("lost");
        self.violations += n("violations");
        // The acknowledgement logs accumulate: the last boot's count is the run's total.
        self.acked_records = self.acked_records.max(n("acked_records"));
        self.acked_files = self.acked_files.max(n("acked_files"));
        self.backups_restored += n("backups_restored");
    }
}

/// splitmix64: the cut delays, from the seed (xtask has no random crate).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
