//! Daemon flags and the saved configuration (`<root>/convoy.cfg`).
//!
//! The first start saves the driver setup to `convoy.cfg` (written by the volume manager, which
//! also holds the root's lock `<root>/lock`); later starts reuse it, so `convoy daemon` with no
//! driver flags brings back the same pool. Different driver flags for an existing root are
//! refused (they would orphan the volumes) unless `--ignore-config-file`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use convoy_core::{ManagerConfig, SavedConfig};

use crate::{DaemonError, Result};

/// Default root directory.
pub const DEFAULT_ROOT: &str = "/var/lib/rancher/convoy";
/// Name of the saved configuration under the root (read and written by convoy-core's
/// `saved_config` module, the one home of the file).
pub use convoy_core::CONFIG_FILE;

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
    /// Kill an external command (mkfs, mount, umount, sync, fsfreeze) still running after
    /// DURATION (e.g. 30s, 5m, 1h30m) and fail its operation; default: no limit.
    #[arg(long, value_name = "DURATION")]
    pub cmd_timeout: Option<String>,
    /// Mount volumes in this mount namespace (e.g. /proc/1/ns/mnt, the host's, when the daemon
    /// runs in a container), through `nsenter --mount=PATH`.
    #[arg(long, value_name = "PATH")]
    pub mnt_ns: Option<PathBuf>,
    /// Do not reuse the saved configuration; save the command line's instead.
    #[arg(long)]
    pub ignore_config_file: bool,
    /// Upload bandwidth limit of backups, in bytes per second (e.g. 10M = 10 MiB/s); a
    /// backup's own `--limit-upload` wins. Default: no limit.
    #[arg(long, value_name = "RATE", value_parser = rate_arg)]
    pub backup_limit_upload: Option<u64>,
    /// File holding the passphrase of encrypted backup stores (default:
    /// $CONVOY_BACKUP_PASSPHRASE when set). Read when such a store is used, never logged.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["backup_key_file", "backup_passcmd"])]
    pub backup_passphrase_file: Option<PathBuf>,
    /// Key file of encrypted backup stores (at least 32 random bytes).
    #[arg(long, value_name = "PATH", conflicts_with = "backup_passcmd")]
    pub backup_key_file: Option<PathBuf>,
    /// Command (run with `sh -c` when an encrypted store is used) printing the passphrase of
    /// encrypted backup stores.
    #[arg(long, value_name = "COMMAND")]
    pub backup_passcmd: Option<String>,
    /// Policy backup runs at once (scheduled backups beyond it wait their turn).
    #[arg(long, value_name = "N", default_value_t = crate::policy_runner::DEFAULT_MAX_POLICY_BACKUPS,
          value_parser = positive_count)]
    pub policy_max_backups: usize,
    /// Serve Prometheus metrics (OpenMetrics text, `GET /metrics`) over HTTP on this TCP
    /// address, e.g. 127.0.0.1:9898; no authentication, so keep it local or firewalled.
    /// Default: no metrics endpoint.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<String>,
}

/// A count of at least 1.
fn positive_count(input: &str) -> std::result::Result<usize, String> {
    match input.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{input:?} is not a whole number of at least 1")),
    }
}

/// A `RATE` argument (`10M`, `10M/s`): bytes per second, more than zero.
pub fn rate_arg(input: &str) -> std::result::Result<u64, String> {
    convoy_api::size::parse_rate(input).map_err(|e| e.to_string())
}

/// Applies the backup secret options (see [`convoy_core::configure_backup_secret`]).
pub fn configure_backup_secret(args: &DaemonArgs) {
    convoy_core::configure_backup_secret(convoy_core::BackupSecretSource::choose(
        args.backup_passphrase_file.clone(),
        args.backup_key_file.clone(),
        args.backup_passcmd.clone(),
    ));
}

/// Applies `--mnt-ns` and `--cmd-timeout` to the external commands of the volume manager.
pub fn configure_external_commands(args: &DaemonArgs) -> Result<()> {
    let bad = |message: String| DaemonError::BadRequest {
        route: "--cmd-timeout".into(),
        message,
    };
    let timeout = match &args.cmd_timeout {
        None => None,
        Some(text) => Some(humantime::parse_duration(text.trim()).map_err(|e| {
            bad(format!(
                "{text:?} is not a duration ({e}); e.g. 30s, 5m, 1h30m"
            ))
        })?),
    };
    convoy_core::configure_external_commands(convoy_core::ExternalCommands {
        mount_namespace: args.mnt_ns.clone(),
        timeout,
    })
    .map_err(DaemonError::from)
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
    // The original Convoy's saved setup (its convoy.cfg and devicemapper.cfg) is read as
    // convoy's; the manager adopts its volumes (docs/migrating.md).
    let (saved, from_original) = if args.ignore_config_file {
        (None, false)
    } else {
        match convoy_core::saved_config(&args.root).map_err(|e| saved_config_error(&path, e))? {
            None => (None, false),
            Some(SavedConfig::Original(original)) => (Some(original), true),
            Some(SavedConfig::Convoy(saved)) => (Some(saved), false),
        }
    };
    match saved {
        None if config.drivers.is_empty() => Err(DaemonError::Config {
            path,
            message: "no driver configured and none saved by an earlier run: pass --drivers (devicemapper or vfs) and its --driver-opts".into(),
        }),
        None => Ok(config),
        Some(saved) => {
            let drivers_differ = !config.drivers.is_empty() && config.drivers != saved.drivers;
            let opts_differ = if from_original {
                // The original's flags were not saved; each one given must name its pool.
                config
                    .driver_opts
                    .iter()
                    .any(|(k, v)| !same_option(k, v, saved.driver_opts.get(k)))
            } else {
                !config.driver_opts.is_empty() && config.driver_opts != saved.driver_opts
            };
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

/// Whether a driver option given on the command line says what the saved setup says (sizes
/// compared as sizes: `2G` is `2147483648`).
fn same_option(key: &str, given: &str, saved: Option<&String>) -> bool {
    let Some(saved) = saved else {
        return false;
    };
    if given == saved {
        return true;
    }
    key == "dm.defaultvolumesize"
        && matches!(
            (convoy_core::parse_size(given), convoy_core::parse_size(saved)),
            (Ok(a), Ok(b)) if a == b
        )
}

/// An error reading the saved setup, as the daemon reports it: a file of convoy's that does
/// not parse says how to go on; the rest (the original's refusals, I/O) by their message.
fn saved_config_error(path: &Path, e: convoy_core::Error) -> DaemonError {
    let message = match e {
        convoy_core::Error::CorruptRecord { reason, .. } => {
            format!("cannot parse it ({reason}); fix or remove it, or pass --ignore-config-file")
        }
        other => other.to_string(),
    };
    DaemonError::Config {
        path: path.to_path_buf(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_side_and_core_read_sizes_alike() {
        // convoy_api::size (CLI, Docker `-o size=`, rates) and convoy_core::parse_size (`/v1`
        // sizes, `dm.defaultvolumesize`): one syntax; only core refuses zero, as a volume size.
        for text in [
            "512b",
            "512B",
            "4096",
            "1k",
            "1kb",
            "64m",
            "10G",
            "10GB",
            " 3g ",
            "0",
            "0b",
            "",
            "b",
            "1x",
            "1.5G",
            "-1",
            "512bb",
            "10GiB",
            "16777216t",
        ] {
            let api = convoy_api::size::parse_size(text).ok();
            let core = convoy_core::parse_size(text).ok();
            match api {
                Some(0) => assert_eq!(core, None, "{text:?}"),
                _ => assert_eq!(api, core, "{text:?}"),
            }
        }
        assert_eq!(convoy_api::size::parse_size("512b").unwrap(), 512);
        assert_eq!(convoy_core::parse_size("512b").unwrap(), 512);
    }

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

    #[test]
    fn the_original_daemons_saved_setup_is_read_and_its_flags_accepted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            r#"{"Root":"/r","DriverList":["devicemapper"],"DefaultDriver":"devicemapper","MountNamespaceFD":"","IgnoreDockerDelete":false,"CreateOnDockerMount":false,"CmdTimeout":""}"#,
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("devicemapper")).unwrap();
        std::fs::write(
            dir.path().join("devicemapper/devicemapper.cfg"),
            r#"{"Root":"/r/devicemapper","DataDevice":"/dev/vdb","MetadataDevice":"/dev/vdc","ThinpoolDevice":"/dev/mapper/convoy-pool","ThinpoolSize":6442450944,"ThinpoolBlockSize":4096,"DefaultVolumeSize":2147483648,"LastDevID":3}"#,
        )
        .unwrap();
        // No flags, or the original daemon's own flags: the saved setup, reused by the manager.
        let none = manager_config(&args(dir.path(), &[], &[])).unwrap();
        assert!(none.drivers.is_empty());
        let same = manager_config(&args(
            dir.path(),
            &["devicemapper"],
            &[
                "dm.datadev=/dev/vdb",
                "dm.metadatadev=/dev/vdc",
                "dm.defaultvolumesize=2G",
            ],
        ))
        .unwrap();
        assert!(same.drivers.is_empty());
        // Another pool is refused before anything is opened.
        let err = manager_config(&args(
            dir.path(),
            &["devicemapper"],
            &["dm.datadev=/dev/vdd", "dm.metadatadev=/dev/vdc"],
        ))
        .unwrap_err();
        assert!(err.to_string().contains("/dev/vdd"), "{err}");
    }
}
