//! How the devicemapper driver runs its external tools (`mkfs.*`, `mount`, `umount`, `sync -f`,
//! `fsfreeze`): in which mount namespace the mounts happen (`convoy daemon --mnt-ns`) and how
//! long a tool may run (`--cmd-timeout`). One setting for the process, made once at start-up.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use crate::error::{Error, Result};

/// Settings of the external tools.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExternalCommands {
    /// Mount namespace file (e.g. `/proc/1/ns/mnt`, the host's when the daemon runs in a
    /// container): `mount`, `umount`, `sync -f`, `fsfreeze` and the reading of the mount table
    /// happen there, through `nsenter --mount=PATH`. `None`: the daemon's own namespace.
    pub mount_namespace: Option<PathBuf>,
    /// A tool still running after this long is killed and its operation fails. `None`: no limit.
    pub timeout: Option<Duration>,
}

static SETTINGS: RwLock<Option<ExternalCommands>> = RwLock::new(None);

/// Sets how external tools run, for the whole process (the daemon calls it before opening the
/// volume manager).
///
/// # Errors
/// [`Error::InvalidArgument`] when the namespace file does not exist or is not a mount
/// namespace, or the timeout is zero.
pub fn configure_external_commands(settings: ExternalCommands) -> Result<()> {
    if let Some(ns) = &settings.mount_namespace {
        check_namespace(ns)?;
    }
    if settings.timeout == Some(Duration::ZERO) {
        return Err(Error::invalid(
            "--cmd-timeout",
            "must be more than zero (e.g. 5m, 30s)",
        ));
    }
    *SETTINGS.write().unwrap_or_else(|e| e.into_inner()) = Some(settings);
    Ok(())
}

/// The current settings.
pub(crate) fn current() -> ExternalCommands {
    SETTINGS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}

/// A namespace file is a link `mnt:[INODE]` under /proc, or a bind mount of one (nsfs).
fn check_namespace(ns: &Path) -> Result<()> {
    let what = "--mnt-ns";
    let target = std::fs::read_link(ns).ok();
    let meta = std::fs::metadata(ns).map_err(|e| {
        Error::invalid(
            what,
            format!(
                "{}: {e}; give a mount namespace file such as /proc/1/ns/mnt",
                ns.display()
            ),
        )
    })?;
    let is_mnt_link = target
        .as_ref()
        .is_some_and(|t| t.to_string_lossy().starts_with("mnt:["));
    // A bind-mounted namespace file is a regular-looking file on nsfs; /proc links name `mnt:`.
    if !is_mnt_link && meta.is_dir() {
        return Err(Error::invalid(
            what,
            format!(
                "{} is a directory, not a mount namespace file (e.g. /proc/1/ns/mnt)",
                ns.display()
            ),
        ));
    }
    if let Some(t) = target.filter(|_| !is_mnt_link) {
        if t.to_string_lossy().contains(":[") {
            return Err(Error::invalid(
                what,
                format!(
                    "{} is a {} namespace, not a mount namespace (…/ns/mnt)",
                    ns.display(),
                    t.to_string_lossy().split(':').next().unwrap_or("different")
                ),
            ));
        }
    }
    Ok(())
}
