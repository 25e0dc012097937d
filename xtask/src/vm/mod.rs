//! `cargo xtask vm`: the real-kernel harness.
//!
//! The development and CI machines run a kernel without device-mapper. This boots a Debian kernel
//! under QEMU (TCG), shares the host's root directory over 9p, chroots into it and runs one
//! command as root in the repository's root, so the guest runs the host's own binaries
//! (`target/debug/...`, `dmsetup`, `mkfs.ext4`) against a real dm-thin target.
//! See `docs/testing.md`.

pub mod initramfs;
pub mod kernel;
mod qemu;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use qemu::{GuestOutcome, Mode, PowerCut};

/// Arguments of `cargo xtask vm`.
#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// Attach a sparse disk image of this size (e.g. `2G`, `512M`); repeatable. Disks appear in
    /// the guest as /dev/vda, /dev/vdb, ... and are deleted when the guest stops.
    #[arg(long = "disk", value_name = "SIZE")]
    pub disks: Vec<String>,
    /// Attach an existing disk image file (kept afterwards); repeatable, after the `--disk` ones.
    #[arg(long = "disk-file", value_name = "PATH")]
    pub disk_files: Vec<PathBuf>,
    /// Kill the guest and fail after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
    /// Start an interactive shell in the guest instead of running a command.
    #[arg(long, conflicts_with = "command")]
    pub shell: bool,
    /// Print the guest's boot log too.
    #[arg(long)]
    pub verbose: bool,
    /// The command to run as root in the guest, in the repository's root directory.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Size of the sparse scratch disk that `test`, `demo` and `bench` attach as `/dev/vda`.
pub const SCRATCH_DISK_BYTES: u64 = 64 << 30;

/// Guest script lines that make the guest's `TMPDIR` (`/run/tmp`) a fresh ext4 filesystem on the
/// scratch disk `/dev/vda`, so sparse files there (loop devices, images) cost host disk only for
/// what is written.
pub const SCRATCH_TMP_SCRIPT: &str =
    "mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 /dev/vda >/dev/null \
    && mount /dev/vda \"$TMPDIR\" && chmod 1777 \"$TMPDIR\" \
    || { echo \"cannot prepare the scratch TMPDIR ($TMPDIR) on /dev/vda\"; exit 125; }\n";

/// One guest run, as the `test` task also uses it.
pub struct GuestRun {
    /// Shell script body run in the guest after the environment and `cd` to the repository.
    pub script_body: String,
    /// Sizes in bytes of fresh sparse disks to attach (first is /dev/vda).
    pub disk_sizes: Vec<u64>,
    /// Existing images to attach after those.
    pub disk_files: Vec<PathBuf>,
    /// Kill the guest after this long.
    pub timeout: Duration,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Batch or interactive.
    pub mode: Mode,
    /// Print the boot log as it comes.
    pub verbose: bool,
}

/// Runs `cargo xtask vm`; returns the guest command's exit status.
pub fn run(args: &VmArgs) -> Result<i32> {
    let body = if args.shell {
        "exec /bin/bash -i\n".to_string()
    } else if args.command.is_empty() {
        bail!("nothing to run: use `cargo xtask vm -- CMD ARGS...` or `cargo xtask vm --shell`");
    } else {
        format!("exec {}\n", shell_words(&args.command))
    };
    let disk_sizes = args
        .disks
        .iter()
        .map(|s| parse_size(s))
        .collect::<Result<Vec<_>>>()?;
    for file in &args.disk_files {
        if !file.is_file() {
            bail!("--disk-file {}: no such file", file.display());
        }
    }
    let run = GuestRun {
        script_body: body,
        disk_sizes,
        disk_files: args.disk_files.clone(),
        timeout: Duration::from_secs(args.timeout),
        memory_mib: args.memory,
        mode: if args.shell { Mode::Shell } else { Mode::Batch },
        verbose: args.verbose,
    };
    let outcome = boot(&run, &mut |line| println!("{line}"))?;
    Ok(outcome.exit_status)
}

/// Boots a guest for `run`, passing every line the command prints to `on_line`.
pub fn boot(run: &GuestRun, on_line: &mut dyn FnMut(&str)) -> Result<GuestOutcome> {
    boot_with_cut(run, None, on_line)
}

/// [`boot`], and with `cut` kill the guest (QEMU, SIGKILL) a delay after a marker line: a power
/// cut. The outcome says whether the cut happened before the command finished.
pub fn boot_with_cut(
    run: &GuestRun,
    cut: Option<&PowerCut>,
    on_line: &mut dyn FnMut(&str),
) -> Result<GuestOutcome> {
    let repo = repo_root();
    if ["/run", "/proc", "/sys", "/dev"]
        .iter()
        .any(|p| repo.starts_with(p))
    {
        bail!(
            "the checkout is under {}, which the guest replaces with its own; move it elsewhere",
            repo.display()
        );
    }
    let cache = repo.join("target").join("vm");
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let kernel = kernel::ensure(&cache)?;
    let initrd = cache.join("initrd.cpio");
    initramfs::build(&kernel, &initrd)?;
    let work = tempfile_dir(&cache)?;
    let result = qemu::boot(&kernel, &initrd, &work, &repo, run, cut, on_line);
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// The repository's root (the parent of `xtask/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository root")
        .to_path_buf()
}

/// A fresh per-run directory under `target/vm/` (the guest sees it through 9p).
fn tempfile_dir(cache: &Path) -> Result<PathBuf> {
    for attempt in 0..1000u32 {
        let dir = cache.join(format!("run-{}-{attempt}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("cannot make a run directory under {}", cache.display())
}

/// Quotes words for `/bin/sh`.
pub fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes one word for `/bin/sh` (single quotes; bare when it is plainly safe).
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `2G`, `512M`, `64k`, `1048576`: powers of 1024, case-insensitive.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => bail!("invalid disk size `{text}`: expected a number with optional k/m/g/t suffix"),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("invalid disk size `{text}`: expected e.g. 2G or 512M"))?;
    match n.checked_mul(1u64 << shift) {
        Some(0) | None => bail!("invalid disk size `{text}`: must be above 0 and below 16 EiB"),
        Some(bytes) => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("0").is_err());
        assert!(parse_size("2X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("true"), "true");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
