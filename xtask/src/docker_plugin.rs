//! `cargo xtask docker-plugin`: convoy as a Docker managed plugin (`docker plugin create`), built
//! from local files only (no registry): `config.json` and a root filesystem holding the `convoy`
//! binary, busybox-static for the start script, and the host's `mkfs.*`, `mount`, `umount`,
//! `fsfreeze`, `nsenter` with the shared libraries each needs (found with `ldd`).
//!
//! Inside the plugin the daemon's root and volumes live under the propagated mount
//! `/var/lib/convoy`, so Docker sees the mounts and they survive a plugin disable/enable. The
//! daemon's flags come from the plugin setting `CONVOY_ARGS` (`docker plugin set NAME
//! CONVOY_ARGS=...`); the default is the vfs driver under the propagated mount.

use anyhow::{ensure, Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Arguments of `cargo xtask docker-plugin`.
#[derive(Debug, clap::Args)]
pub struct DockerPluginArgs {
    /// Plugin name given to `docker plugin create`.
    #[arg(long, default_value = "convoy")]
    pub name: String,
    /// Directory to build the plugin in (config.json + rootfs/); default target/docker-plugin.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The convoy binary to put in the plugin; default: `cargo build --release -p convoy`.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Docker daemon to create the plugin on (`docker -H`); default docker's own.
    #[arg(long)]
    pub host: Option<String>,
    /// Build the directory only; do not run `docker plugin create`.
    #[arg(long)]
    pub no_create: bool,
}

/// The daemon's flags when `CONVOY_ARGS` is not set.
pub const DEFAULT_ARGS: &str = "--drivers vfs --driver-opts vfs.path=/var/lib/convoy/volumes";

/// Host tools copied into the plugin (with their libraries), when present.
const TOOLS: &[&str] = &[
    "mkfs.ext4",
    "mke2fs",
    "mkfs.xfs",
    "mount",
    "umount",
    "fsfreeze",
    "nsenter",
    "sync",
];

/// The plugin's `config.json`.
pub fn config_json() -> serde_json::Value {
    serde_json::json!({
        "description": "convoy: persistent volumes on device-mapper thin provisioning (or a \
                        directory), instant snapshots, incremental backups to S3 or a folder",
        "documentation": "https://github.com/rancher/convoy (this build: docs/docker.md)",
        "entrypoint": ["/bin/sh", "/convoy-plugin-start"],
        "workdir": "/",
        "interface": {
            "types": ["docker.volumedriver/1.0"],
            "socket": "convoy.sock"
        },
        // S3 backups need the network; the pool devices need /dev.
        "network": { "type": "host" },
        "propagatedMount": "/var/lib/convoy",
        "mounts": [
            { "name": "dev", "source": "/dev", "destination": "/dev",
              "type": "bind", "options": ["rbind", "rshared"] }
        ],
        "linux": {
            "capabilities": ["CAP_SYS_ADMIN", "CAP_MKNOD"],
            "allowAllDevices": true
        },
        "env": [
            { "name": "CONVOY_ARGS", "description": "flags of `convoy daemon` (drivers and driver options)",
              "settable": ["value"], "value": DEFAULT_ARGS },
            { "name": "RUST_LOG", "settable": ["value"], "value": "info" }
        ]
    })
}

/// The start script the entrypoint runs (busybox sh).
pub const START_SCRIPT: &str = "\
#!/bin/sh
# convoy managed plugin: the daemon on Docker's plugin socket, its state under the propagated mount.
set -e
mkdir -p /run/docker/plugins /var/lib/convoy/root /var/lib/convoy/volumes /tmp
exec /bin/convoy --socket /run/docker/plugins/convoy.sock daemon --root /var/lib/convoy/root $CONVOY_ARGS
";

/// Runs `cargo xtask docker-plugin`.
pub fn run(args: &DockerPluginArgs) -> Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::vm::repo_root().join("target/docker-plugin"));
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => {
            println!("docker-plugin: cargo build --release -p convoy");
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--release", "--quiet", "-p", "convoy"])
                .current_dir(crate::vm::repo_root())
                .status()
                .context("running cargo build")?;
            ensure!(status.success(), "building convoy failed");
            crate::vm::repo_root().join("target/release/convoy")
        }
    };
    build(&out, &binary)?;
    println!("docker-plugin: built {}", out.display());
    if args.no_create {
        return Ok(());
    }
    let mut docker = Command::new("docker");
    if let Some(h) = &args.host {
        docker.args(["-H", h]);
    }
    let status = docker
        .args(["plugin", "create", &args.name])
        .arg(&out)
        .status()
        .context("running docker plugin create (apt-get install docker.io)")?;
    ensure!(status.success(), "docker plugin create failed");
    println!(
        "docker-plugin: created {0}; enable it with `docker plugin enable {0}` (devicemapper: \
         `docker plugin set {0} CONVOY_ARGS=\"--drivers devicemapper --driver-opts \
         dm.datadev=/dev/sdb1 --driver-opts dm.metadatadev=/dev/sdb2\"` first)",
        args.name
    );
    Ok(())
}

/// Writes `out/config.json` and `out/rootfs` (replacing an earlier build).
pub fn build(out: &Path, binary: &Path) -> Result<()> {
    ensure!(binary.is_file(), "no convoy binary at {}", binary.display());
    let rootfs = out.join("rootfs");
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs).with_context(|| format!("removing {}", rootfs.display()))?;
    }
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "etc",
        "run/docker/plugins",
        "var/lib/convoy",
    ] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context(
            "busybox-static is needed for the plugin's shell: apt-get install busybox-static",
        )?;
    fs::copy(&busybox, rootfs.join("bin/busybox"))?;
    for applet in ["sh", "mkdir", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    copy_with_libs(binary, &rootfs.join("bin/convoy"), &rootfs, &mut files)?;
    for tool in TOOLS {
        if let Some(path) = find_tool(tool) {
            copy_with_libs(&path, &rootfs.join("bin").join(tool), &rootfs, &mut files)?;
        }
    }
    fs::write(rootfs.join("convoy-plugin-start"), START_SCRIPT)?;
    fs::write(rootfs.join("etc/mtab"), "")?;
    fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&config_json())?,
    )?;
    Ok(())
}

fn find_tool(tool: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// Copies `from` to `to` and every shared library `ldd` lists for it to the same path under
/// `rootfs`.
fn copy_with_libs(
    from: &Path,
    to: &Path,
    rootfs: &Path,
    done: &mut BTreeSet<PathBuf>,
) -> Result<()> {
    fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    let out = Command::new("ldd")
        .arg(from)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Static binaries: "not a dynamic executable".
        return Ok(());
    }
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let lib = PathBuf::from(path);
        if !done.insert(lib.clone()) {
            continue;
        }
        let dest = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
        fs::create_dir_all(dest.parent().unwrap_or(rootfs))?;
        // Follow symlinks: the plugin gets the file itself under the linked name.
        fs::copy(&lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_declares_the_volume_interface_and_the_propagated_mount() {
        let c = config_json();
        assert_eq!(c["interface"]["types"][0], "docker.volumedriver/1.0");
        assert_eq!(c["interface"]["socket"], "convoy.sock");
        assert_eq!(c["propagatedMount"], "/var/lib/convoy");
        assert!(START_SCRIPT.contains("/run/docker/plugins/convoy.sock"));
        assert!(START_SCRIPT.contains("--root /var/lib/convoy/root"));
        assert!(DEFAULT_ARGS.contains("vfs.path=/var/lib/convoy/volumes"));
    }
}
