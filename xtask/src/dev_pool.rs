//! `cargo xtask dev-pool`: the loopback development pool of the original's docs, as one
//! command. Two sparse files, `data.vol` (100G) and `metadata.vol` (1G), in a directory
//! (`target/dev-pool` by default), attached to loop devices with `losetup`; prints the
//! `convoy daemon` command line that uses them. Running it again reuses what exists (the files
//! are never truncated: they may hold a pool). `--teardown` detaches the loop devices and
//! removes the files.
//!
//! Development only: a pool on loop devices over sparse files is slow, and it only starts on a
//! kernel with device-mapper's thin-pool target.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Arguments after `cargo xtask dev-pool`.
#[derive(Debug, clap::Args)]
pub struct DevPoolArgs {
    /// Detach the loop devices and remove the backing files.
    #[arg(long)]
    pub teardown: bool,
    /// Directory of data.vol and metadata.vol [default: <repo>/target/dev-pool].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Size of the sparse data file (k/m/g/t: powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "100G")]
    pub data_size: String,
    /// Size of the sparse metadata file (k/m/g/t: powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    pub metadata_size: String,
}

/// The two backing files, data first.
const FILES: [&str; 2] = ["data.vol", "metadata.vol"];

/// Parses a size: an integer with an optional `k`/`m`/`g`/`t` suffix (powers of 1024, either
/// case), as convoy's own size options.
pub fn parse_size(text: &str) -> Result<u64> {
    let trimmed = text.trim();
    let (digits, shift) = match trimmed.chars().last().map(|c| c.to_ascii_lowercase()) {
        Some('k') => (&trimmed[..trimmed.len() - 1], 10),
        Some('m') => (&trimmed[..trimmed.len() - 1], 20),
        Some('g') => (&trimmed[..trimmed.len() - 1], 30),
        Some('t') => (&trimmed[..trimmed.len() - 1], 40),
        _ => (trimmed, 0),
    };
    let number: u64 = digits
        .parse()
        .with_context(|| format!("invalid size {text:?}: expected e.g. 100G, 512m, 1073741824"))?;
    let bytes = number
        .checked_mul(1u64 << shift)
        .with_context(|| format!("size {text:?} is too large"))?;
    if bytes == 0 {
        bail!("size {text:?} must be more than zero");
    }
    Ok(bytes)
}

fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("target/dev-pool")
}

fn losetup(args: &[&str], file: &Path) -> Result<String> {
    let out = Command::new("losetup")
        .args(args)
        .arg(file)
        .output()
        .context("cannot run losetup (install util-linux)")?;
    if !out.status.success() {
        bail!(
            "losetup {} {} failed: {}",
            args.join(" "),
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The loop devices currently backed by `file`.
fn attached(file: &Path) -> Result<Vec<String>> {
    Ok(
        losetup(&["--noheadings", "--output", "NAME", "--associated"], file)?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
    )
}

/// Whether this process's effective user is root.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Whether the running kernel offers the thin-pool target (loaded, or loadable as a module).
fn thin_pool_available() -> bool {
    let loaded = Path::new("/sys/module/dm_thin_pool").exists();
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let builtin = fs::read_to_string(format!("/lib/modules/{}/modules.builtin", release.trim()))
        .unwrap_or_default()
        .contains("dm-thin-pool");
    let module = fs::read_to_string(format!("/lib/modules/{}/modules.dep", release.trim()))
        .unwrap_or_default()
        .contains("dm-thin-pool");
    loaded || builtin || module
}

/// The daemon command line for the two loop devices.
pub fn daemon_command(data: &str, metadata: &str) -> String {
    format!(
        "convoy daemon --drivers devicemapper --driver-opts dm.datadev={data} --driver-opts dm.metadatadev={metadata}"
    )
}

/// Runs `cargo xtask dev-pool`.
pub fn run(args: &DevPoolArgs) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    if !is_root() {
        bail!(
            "dev-pool attaches loop devices: run it as root (e.g. `sudo -E cargo xtask dev-pool`)"
        );
    }
    if args.teardown {
        return teardown(&dir);
    }
    let sizes = [
        parse_size(&args.data_size)?,
        parse_size(&args.metadata_size)?,
    ];
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut devices = Vec::new();
    for (name, size) in FILES.iter().zip(sizes) {
        let file = dir.join(name);
        if file.exists() {
            let existing = fs::metadata(&file)?.len();
            if existing != size {
                println!(
                    "dev-pool: keeping existing {} ({existing} bytes, not {size}); --teardown first to resize",
                    file.display()
                );
            }
        } else {
            fs::File::create(&file)
                .and_then(|f| f.set_len(size))
                .with_context(|| format!("cannot create sparse file {}", file.display()))?;
        }
        let device = match attached(&file)?.into_iter().next() {
            Some(device) => {
                println!("dev-pool: {} already on {device}", file.display());
                device
            }
            None => {
                let device = losetup(&["--find", "--show"], &file)?.trim().to_string();
                println!("dev-pool: {} attached to {device}", file.display());
                device
            }
        };
        devices.push(device);
    }
    println!();
    println!("Start the daemon with:");
    println!();
    println!("  {}", daemon_command(&devices[0], &devices[1]));
    println!();
    let dir_flag = match &args.dir {
        Some(dir) => format!(" --dir {}", dir.display()),
        None => String::new(),
    };
    println!(
        "Tear down (after stopping the daemon and removing its pool): cargo xtask dev-pool --teardown{dir_flag}"
    );
    if !thin_pool_available() {
        eprintln!(
            "dev-pool: warning: this kernel has no dm-thin-pool target; the daemon cannot start \
             a pool here (use `cargo xtask vm` for a kernel that has one)"
        );
    }
    Ok(())
}

fn teardown(dir: &Path) -> Result<()> {
    for name in FILES {
        let file = dir.join(name);
        if !file.exists() {
            continue;
        }
        for device in attached(&file)? {
            let out = Command::new("losetup")
                .args(["--detach", &device])
                .output()?;
            if !out.status.success() {
                bail!(
                    "cannot detach {device} ({}): {}; stop the daemon and remove the thin pool \
                     (`dmsetup remove convoy-pool`) first",
                    file.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            println!("dev-pool: detached {device}");
        }
        // A detach of a busy loop device is deferred (autoclear): only remove what is free.
        if !attached(&file)?.is_empty() {
            bail!(
                "{} is still attached (busy); stop the daemon and remove the thin pool first",
                file.display()
            );
        }
        fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
        println!("dev-pool: removed {}", file.display());
    }
    // Only an empty directory goes.
    let _ = fs::remove_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100G").unwrap(), 100 << 30);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("0").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn command_line() {
        assert_eq!(
            daemon_command("/dev/loop0", "/dev/loop1"),
            "convoy daemon --drivers devicemapper --driver-opts dm.datadev=/dev/loop0 --driver-opts dm.metadatadev=/dev/loop1"
        );
    }

    /// Set up, set up again (idempotent), tear down — on real loop devices. Needs root (CI runs
    /// as root); fails loudly without it.
    #[test]
    fn setup_and_teardown_on_loop_devices() {
        assert!(is_root(), "this test attaches loop devices: run it as root");
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("pool");
        let args = |teardown| DevPoolArgs {
            teardown,
            dir: Some(pool.clone()),
            data_size: "64M".into(),
            metadata_size: "8m".into(),
        };
        run(&args(false)).unwrap();
        let data = pool.join("data.vol");
        let metadata = pool.join("metadata.vol");
        assert_eq!(fs::metadata(&data).unwrap().len(), 64 << 20);
        assert_eq!(fs::metadata(&metadata).unwrap().len(), 8 << 20);
        let data_devices = attached(&data).unwrap();
        assert_eq!(data_devices.len(), 1, "{data_devices:?}");
        assert_eq!(attached(&metadata).unwrap().len(), 1);

        run(&args(false)).unwrap();
        assert_eq!(
            attached(&data).unwrap(),
            data_devices,
            "a second run reuses the device"
        );

        run(&args(true)).unwrap();
        assert!(!data.exists() && !metadata.exists());
        assert!(!pool.exists());
        let still = Command::new("losetup").arg("--list").output().unwrap();
        assert!(!String::from_utf8_lossy(&still.stdout).contains(&*data.to_string_lossy()));
    }
}
