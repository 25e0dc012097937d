//! Daemon flags and the saved configuration (`<root>/convoy.cfg`).
//!
//! The first start saves the driver setup to `convoy.cfg` (written by the volume manager, which
//! also holds the root's lock `<root>/lock`); later starts reuse it, so `convoy daemon` with no
//! driver flags brings back the same pool. Different driver flags for an existing root are
//! refused (they would orphan the volumes) unless `--ignore-config-file`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use convoy_core::ManagerConfig;

use crate::{DaemonError, Result};

/// Default root directory.
pub const DEFAULT_ROOT: &str = "/var/lib/rancher/convoy";
/// Name of the saved configuration under the root.
pub const CONFIG_FILE: &str = "convoy.cfg";

/// `convoy daemon` / `convoyd` flags (those of the original Convoy).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DaemonArgs {
    /// Directory holding convoy's state (volume records, config, mount points).
    #[arg(long, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Driver to enable (repeatable; the first is the default): devicemapper, vfs.
    #[arg(long = "drivers", value_name = "DRIVER")]
    pub drivers: Vec<String>,
    /// Driver option KEY=VALUE (repeatable), e.g. dm.datadev=/dev/sdb, vfs.path=/srv/vols.
    #[arg(long = "driver-opts", value_name = "KEY=VALUE")]
    pub driver_opts: Vec<String>,
    /// Write logs to FILE (appending) instead of standard error.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Keep volumes when Docker removes them (`docker volume rm` only forgets the name in Docker).
    #[arg(long)]
    pub ignore_docker_delete: bool,
    /// Create a volume when Docker mounts one convoy does not know.
    #[arg(long)]
    pub create_on_docker_mount: bool,
    /// Accepted for compatibility with the original (its timeout for external commands); not
    /// applied, which the daemon logs.
    #[arg(long, value_name = "DURATION")]
    pub cmd_timeout: Option<String>,
    /// Mount namespace file to mount volumes in (accepted for compatibility; volumes are mounted
    /// in the daemon's own namespace).
    #[arg(long, value_name = "PATH")]
    pub mnt_ns: Option<PathBuf>,
    /// Do not reuse the saved configuration; save the command line's instead.
    #[arg(long)]
    pub ignore_config_file: bool,
}

/// Parses `KEY=VALUE` driver options.
pub fn parse_driver_opts(opts: &[String]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for opt in opts {
        match opt.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                map.insert(key.trim().to_string(), value.to_string());
            }
            _ => {
                return Err(DaemonError::BadRequest {
                    route: "--driver-opts".into(),
                    message: format!("{opt:?} is not KEY=VALUE (e.g. dm.datadev=/dev/sdb)"),
                })
            }
        }
    }
    Ok(map)
}

/// The manager configuration for `args`, checked against the one saved in `<root>/convoy.cfg`.
///
/// Without `--drivers` the saved setup is reused (the manager reads it). Driver flags that differ
/// from the saved setup are refused unless `--ignore-config-file`, since a different pool would
/// orphan every volume of the root.
pub fn manager_config(args: &DaemonArgs) -> Result<ManagerConfig> {
    let path = args.root.join(CONFIG_FILE);
    let config = ManagerConfig {
        root: args.root.clone(),
        drivers: args.drivers.clone(),
        driver_opts: parse_driver_opts(&args.driver_opts)?,
    };
    let saved = if args.ignore_config_file {
        None
    } else {
        load_config(&path)?
    };
    match saved {
        None if config.drivers.is_empty() => Err(DaemonError::Config {
            path,
            message: "no driver configured and none saved by an earlier run: pass --drivers (devicemapper or vfs) and its --driver-opts".into(),
        }),
        None => Ok(config),
        Some(saved) => {
            let drivers_differ = !config.drivers.is_empty() && config.drivers != saved.drivers;
            let opts_differ =
                !config.driver_opts.is_empty() && config.driver_opts != saved.driver_opts;
            if drivers_differ || opts_differ {
                return Err(DaemonError::Config {
                    path,
                    message: format!(
                        "this root was set up with --drivers {:?} and --driver-opts {:?}; the command line asks for {:?} and {:?}. Start without driver flags to reuse the saved setup, or pass --ignore-config-file to replace it",
                        saved.drivers, saved.driver_opts, config.drivers, config.driver_opts
                    ),
                });
            }
            // Empty drivers make the manager reuse the saved setup as a whole.
            Ok(ManagerConfig {
                drivers: Vec::new(),
                driver_opts: BTreeMap::new(),
                ..config
            })
        }
    }
}

fn load_config(path: &Path) -> Result<Option<ManagerConfig>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| DaemonError::Config {
                path: path.to_path_buf(),
                message: format!(
                    "cannot parse it ({e}); fix or remove it, or pass --ignore-config-file"
                ),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DaemonError::File {
            what: "cannot read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(root: &Path, drivers: &[&str], opts: &[&str]) -> DaemonArgs {
        DaemonArgs {
            root: root.to_path_buf(),
            drivers: drivers.iter().map(|s| s.to_string()).collect(),
            driver_opts: opts.iter().map(|s| s.to_string()).collect(),
            ..DaemonArgs::default()
        }
    }

    fn save(root: &Path, drivers: &[&str], opts: &[(&str, &str)]) {
        let config = ManagerConfig {
            root: root.to_path_buf(),
            drivers: drivers.iter().map(|s| s.to_string()).collect(),
            driver_opts: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        std::fs::write(root.join(CONFIG_FILE), serde_json::to_vec(&config).unwrap()).unwrap();
    }

    #[test]
    fn saved_config_is_reused_and_conflicts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = manager_config(&args(dir.path(), &["vfs"], &["vfs.path=/a"])).unwrap();
        assert_eq!(first.drivers, ["vfs"]);
        save(dir.path(), &["vfs"], &[("vfs.path", "/a")]);
        let again = manager_config(&args(dir.path(), &[], &[])).unwrap();
        assert!(again.drivers.is_empty(), "reuse is left to the manager");
        manager_config(&args(dir.path(), &["vfs"], &["vfs.path=/a"])).unwrap();
        let err = manager_config(&args(dir.path(), &["vfs"], &["vfs.path=/b"])).unwrap_err();
        assert!(err.to_string().contains("--ignore-config-file"), "{err}");
        let mut replace = args(dir.path(), &["vfs"], &["vfs.path=/b"]);
        replace.ignore_config_file = true;
        let replaced = manager_config(&replace).unwrap();
        assert_eq!(replaced.driver_opts["vfs.path"], "/b");
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = manager_config(&args(dir.path(), &["vfs"], &["novalue"])).unwrap_err();
        assert!(err.to_string().contains("KEY=VALUE"), "{err}");
        let err = manager_config(&args(dir.path(), &[], &[])).unwrap_err();
        assert!(err.to_string().contains("no driver configured"), "{err}");
        std::fs::write(dir.path().join(CONFIG_FILE), b"garbage").unwrap();
        let err = manager_config(&args(dir.path(), &["vfs"], &[])).unwrap_err();
        assert!(err.to_string().contains("cannot parse"), "{err}");
    }
}
