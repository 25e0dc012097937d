//! [`Daemon`]: the state every request handler shares.

use std::path::Path;

use convoy_core::VolumeManager;

use crate::Result;

/// How the daemon's endpoints behave (daemon flags): the Docker plugin's, and defaults of
/// `/v1` calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaemonSettings {
    /// `--ignore-docker-delete`: Docker's `Remove` keeps the volume.
    pub ignore_docker_delete: bool,
    /// `--create-on-docker-mount`: Docker's `Mount` of an unknown volume creates it.
    pub create_on_docker_mount: bool,
    /// `--backup-limit-upload`: upload limit (bytes/s) of backups that set none themselves.
    pub backup_limit_upload: Option<u64>,
}

/// The volume manager plus the daemon's own state (settings, policies). Docker's mount
/// references are the manager's (`VolumeManager::mount_for`), kept under each volume's lock.
#[derive(Debug)]
pub struct Daemon {
    pub(crate) manager: VolumeManager,
    pub(crate) settings: DaemonSettings,
    /// Scheduled snapshots and backups (`<root>/policies.json`); run by `policy_runner`.
    pub(crate) policies: convoy_core::PolicyEngine,
}

impl Daemon {
    /// A daemon serving `manager`, keeping its own state under `root`.
    pub fn new(manager: VolumeManager, root: &Path, settings: DaemonSettings) -> Result<Self> {
        let policies = convoy_core::PolicyEngine::open(root, crate::policy_runner::unix_now())?;
        Ok(Self {
            manager,
            settings,
            policies,
        })
    }

    /// The policies (cheap to clone; clones share them).
    pub fn policies(&self) -> &convoy_core::PolicyEngine {
        &self.policies
    }

    /// The volume manager.
    pub fn manager(&self) -> &VolumeManager {
        &self.manager
    }
}
