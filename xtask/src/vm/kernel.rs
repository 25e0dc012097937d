//! The guest kernel: the Debian package that `linux-image-amd64` depends on, downloaded once with
//! `apt-get download`, extracted with `dpkg -x` and indexed with `depmod`, cached under
//! `target/vm/kernel/`.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Modules the guest loads, in this order (each after its own dependencies). `crc32c_generic`
/// comes first: `libcrc32c` (dm-persistent-data, xfs) needs a crc32c provider and `insmod` does not
/// follow the soft dependency that would load it.
pub const GUEST_MODULES: &[&str] = &[
    "crc32c_generic",
    "virtio_pci",
    "virtio_blk",
    "9pnet_virtio",
    "9p",
    "loop",
    "dm-thin-pool",
    "dm-flakey",
    "dm-delay",
    // Userspace block devices (convoy-nbd: backup browsing and instant restore).
    "nbd",
    // (Debian 6.1 builds no dm-dust; dm-flakey and the built-in `error` target inject faults.)
    "ext4",
    "xfs",
];

/// An extracted kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Kernel release, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// Path of `vmlinuz`.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the extracted tree.
    pub modules_dir: PathBuf,
}

impl Kernel {
    /// Module files (relative to `modules_dir`) for [`GUEST_MODULES`] and their dependencies, in a
    /// load order where every module follows the ones it needs.
    pub fn module_load_order(&self) -> Result<Vec<String>> {
        let dep_file = self.modules_dir.join("modules.dep");
        let text = fs::read_to_string(&dep_file)
            .with_context(|| format!("reading {}", dep_file.display()))?;
        let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut by_name: BTreeMap<String, String> = BTreeMap::new();
        for line in text.lines() {
            let Some((module, rest)) = line.split_once(':') else {
                continue;
            };
            deps.insert(
                module.to_string(),
                rest.split_whitespace().map(str::to_string).collect(),
            );
            by_name.insert(module_name(module), module.to_string());
        }
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for wanted in GUEST_MODULES {
            let Some(path) = by_name.get(&wanted.replace('-', "_")) else {
                bail!(
                    "kernel {} has no module `{wanted}` (looked in {})",
                    self.release,
                    dep_file.display()
                );
            };
            visit(path, &deps, &mut seen, &mut order);
        }
        Ok(order)
    }
}

fn visit(
    path: &str,
    deps: &BTreeMap<String, Vec<String>>,
    seen: &mut HashSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(path.to_string()) {
        return;
    }
    for dep in deps.get(path).into_iter().flatten() {
        visit(dep, deps, seen, order);
    }
    order.push(path.to_string());
}

/// `kernel/drivers/md/dm-thin-pool.ko` → `dm_thin_pool` (the kernel treats `-` and `_` alike).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Returns the cached kernel under `cache`, downloading and preparing it the first time.
pub fn ensure(cache: &Path) -> Result<Kernel> {
    let root = cache.join("kernel");
    let ready = root.join("READY");
    if let Ok(release) = fs::read_to_string(&ready) {
        let release = release.trim().to_string();
        return Ok(kernel_at(&root, release));
    }
    let package = kernel_package()?;
    let release = package
        .strip_prefix("linux-image-")
        .context("unexpected kernel package name")?
        .to_string();
    let download = cache.join("download");
    fs::create_dir_all(&download)?;
    eprintln!(
        "xtask vm: downloading {package} (once; cached in {})",
        root.display()
    );
    run(Command::new("apt-get")
        .args(["download", "-q", &package])
        .current_dir(&download))
    .context("apt-get download of the guest kernel failed (run `apt-get update` first?)")?;
    let deb = fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&package) && n.ends_with(".deb"))
        })
        .with_context(|| format!("no {package}*.deb in {}", download.display()))?;
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    run(Command::new("depmod").arg("-b").arg(&root).arg(&release))
        .context("depmod failed (apt-get install kmod)")?;
    let kernel = kernel_at(&root, release.clone());
    if !kernel.vmlinuz.exists() {
        bail!("{} has no {}", deb.display(), kernel.vmlinuz.display());
    }
    fs::write(&ready, &release)?;
    let _ = fs::remove_file(&deb);
    Ok(kernel)
}

fn kernel_at(root: &Path, release: String) -> Kernel {
    // Debian bookworm ships modules under /lib; later releases under /usr/lib.
    let modules_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&release))
        .find(|p| p.exists())
        .unwrap_or_else(|| root.join("lib/modules").join(&release));
    Kernel {
        vmlinuz: root.join("boot").join(format!("vmlinuz-{release}")),
        modules_dir,
        release,
    }
}

/// The versioned image package `linux-image-amd64` depends on, e.g. `linux-image-6.1.0-56-amd64`.
fn kernel_package() -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .context("running apt-cache (is this a Debian machine?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .context("`apt-cache depends linux-image-amd64` names no kernel; run `apt-get update`")
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::module_name;

    #[test]
    fn module_names_normalise_dashes_and_suffixes() {
        assert_eq!(
            module_name("kernel/drivers/md/dm-thin-pool.ko"),
            "dm_thin_pool"
        );
        assert_eq!(module_name("kernel/fs/9p/9p.ko.xz"), "9p");
    }
}
