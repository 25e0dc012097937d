//! Daemon flags, the saved configuration (`<root>/convoy.cfg`) and the root's lock.
//!
//! The first start saves the driver setup to `convoy.cfg`; later starts reuse it, so
//! `convoy daemon` with no driver flags brings back the same pool. Giving different driver flags
//! for an existing root is refused (it would orphan the volumes) unless `--ignore-config-file`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{durable, DaemonError, PluginSettings, Result};

/// Default root directory.
pub const DEFAULT_ROOT: &str = "/var/lib/rancher/convoy";
/// Name of the saved configuration under the root.
pub const CONFIG_FILE: &str = "convoy.cfg";
/// Name of the lock file under the root.
pub const LOCK_FILE: &str = "lock";

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
    /// Timeout for external commands (mkfs, mount), e.g. 5m or 300s.
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

/// The configuration saved in `<root>/convoy.cfg`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DaemonConfig {
    /// Root directory.
    pub root: PathBuf,
    /// Enabled drivers, default first.
    pub driver_list: Vec<String>,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// `--ignore-docker-delete`.
    pub ignore_docker_delete: bool,
    /// `--create-on-docker-mount`.
    pub create_on_docker_mount: bool,
    /// `--cmd-timeout`, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd_timeout: Option<String>,
}

impl DaemonConfig {
    /// The Docker plugin behaviour of this configuration.
    pub fn plugin_settings(&self) -> PluginSettings {
        PluginSettings {
            ignore_docker_delete: self.ignore_docker_delete,
            create_on_docker_mount: self.create_on_docker_mount,
        }
    }
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

/// Merges the command line with the saved configuration under `args.root` and saves the result.
pub fn resolve_config(args: &DaemonArgs) -> Result<DaemonConfig> {
    let path = args.root.join(CONFIG_FILE);
    let from_flags = DaemonConfig {
        root: args.root.clone(),
        driver_list: args.drivers.clone(),
        driver_opts: parse_driver_opts(&args.driver_opts)?,
        ignore_docker_delete: args.ignore_docker_delete,
        create_on_docker_mount: args.create_on_docker_mount,
        cmd_timeout: args.cmd_timeout.clone(),
    };
    let saved = if args.ignore_config_file {
        None
    } else {
        load_config(&path)?
    };
    let config = match saved {
        None => from_flags,
        Some(saved) => {
            let drivers_given = !from_flags.driver_list.is_empty();
            let opts_given = !from_flags.driver_opts.is_empty();
            if (drivers_given && from_flags.driver_list != saved.driver_list)
                || (opts_given && from_flags.driver_opts != saved.driver_opts)
            {
                return Err(DaemonError::Config {
                    path,
                    message: format!(
                        "this root was set up with --drivers {:?} and --driver-opts {:?}; the command line asks for {:?} and {:?}. Start without driver flags to reuse the saved setup, or pass --ignore-config-file to replace it",
                        saved.driver_list, saved.driver_opts, from_flags.driver_list, from_flags.driver_opts
                    ),
                });
            }
            DaemonConfig {
                root: args.root.clone(),
                driver_list: saved.driver_list,
                driver_opts: saved.driver_opts,
                ..from_flags
            }
        }
    };
    if config.driver_list.is_empty() {
        return Err(DaemonError::Config {
            path,
            message:
                "no driver configured: pass --drivers (devicemapper or vfs) and its --driver-opts"
                    .into(),
        });
    }
    let bytes = serde_json::to_vec_pretty(&config).expect("the config serializes");
    durable::write_file(&path, &bytes)?;
    Ok(config)
}

fn load_config(path: &Path) -> Result<Option<DaemonConfig>> {
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

/// The root's exclusive lock, held for the daemon's life (released when dropped or on exit).
#[derive(Debug)]
pub struct RootLock {
    _file: File,
}

/// Creates `root` if needed and takes its lock; fails if another daemon holds it.
pub fn lock_root(root: &Path) -> Result<RootLock> {
    let path = root.join(LOCK_FILE);
    let fail = |source| DaemonError::File {
        what: "cannot open lock",
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(root).map_err(fail)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fail)?;
    match file.try_lock() {
        Ok(()) => Ok(RootLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(DaemonError::AlreadyRunning {
            root: root.to_path_buf(),
            lock: path,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(fail(source)),
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

    #[test]
    fn saved_config_is_reused_and_conflicts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = resolve_config(&args(dir.path(), &["vfs"], &["vfs.path=/a"])).unwrap();
        let again = resolve_config(&args(dir.path(), &[], &[])).unwrap();
        assert_eq!(first, again);
        let err = resolve_config(&args(dir.path(), &["vfs"], &["vfs.path=/b"])).unwrap_err();
        assert!(err.to_string().contains("--ignore-config-file"), "{err}");
        let mut replace = args(dir.path(), &["vfs"], &["vfs.path=/b"]);
        replace.ignore_config_file = true;
        let replaced = resolve_config(&replace).unwrap();
        assert_eq!(replaced.driver_opts["vfs.path"], "/b");
        assert_eq!(
            resolve_config(&args(dir.path(), &[], &[])).unwrap(),
            replaced
        );
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve_config(&args(dir.path(), &["vfs"], &["novalue"])).unwrap_err();
        assert!(err.to_string().contains("KEY=VALUE"), "{err}");
        let err = resolve_config(&args(dir.path(), &[], &[])).unwrap_err();
        assert!(err.to_string().contains("no driver configured"), "{err}");
        std::fs::write(dir.path().join(CONFIG_FILE), b"garbage").unwrap();
        let err = resolve_config(&args(dir.path(), &["vfs"], &[])).unwrap_err();
        assert!(err.to_string().contains("cannot parse"), "{err}");
    }

    #[test]
    fn the_root_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_root(dir.path()).unwrap();
        let err = lock_root(dir.path()).unwrap_err();
        assert!(matches!(err, DaemonError::AlreadyRunning { .. }), "{err}");
        drop(held);
        lock_root(dir.path()).unwrap();
    }
}
