//! # convoy-core
//!
//! The volume manager and convoy's embedding API: [`VolumeManager`] composes the layers below
//! (`convoy-thinpool`, `convoy-thinmeta`, `convoy-backupstore`) into what users do — volumes,
//! snapshots, backups and restores — with crash-safe records under a root directory and
//! start-up reconciliation. Design notes: `docs/core.md`; embedding guide: `docs/embedding.md`.
//!
//! ## Overview
//!
//! * [`VolumeManager::open`] takes a [`ManagerConfig`] (root, drivers, driver options), locks
//!   the root, sets up the drivers, loads the records and reconciles them with the system.
//! * Drivers: `devicemapper` (thin volumes in a dm-thin pool on `dm.datadev` /
//!   `dm.metadatadev`) and `vfs` (directories under `vfs.path`).
//! * Volumes: [`VolumeManager::create_volume`], `delete_volume`, `mount_volume`,
//!   `umount_volume`, `list_volumes`, `inspect_volume`. Snapshots: `create_snapshot`,
//!   `delete_snapshot`, `inspect_snapshot`. Volume and snapshot names share one namespace.
//! * Mounts for holders (Docker's mount IDs): [`VolumeManager::mount_for`], `unmount_for`,
//!   `mount_holders`, `delete_unheld_volume`; counted under each volume's lock and kept in
//!   `<root>/`[`MOUNT_REFS_FILE`] across restarts.
//! * Backups: [`VolumeManager::create_backup`] (incremental when the last backed-up snapshot
//!   still exists, full otherwise), `delete_backup`, `list_backups`, `inspect_backup`;
//!   restore with [`CreateVolumeRequest::backup_url`].
//! * [`Error`] with [`Error::kind`] for status codes; [`parse_size`], [`validate_name`] (the
//!   rule and syntax of `convoy-names`); [`write_atomic`], the one atomic file writer.
//!
//! ## Usage
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//! use convoy_core::{CreateVolumeRequest, ManagerConfig, NoProgress, VolumeManager};
//!
//! # async fn demo() -> convoy_core::Result<()> {
//! let manager = VolumeManager::open(ManagerConfig {
//!     root: "/var/lib/rancher/convoy".into(),
//!     drivers: vec!["vfs".into()],
//!     driver_opts: BTreeMap::from([("vfs.path".into(), "/srv/volumes".into())]),
//! })
//! .await?;
//! let req = CreateVolumeRequest { name: Some("vol1".into()), ..Default::default() };
//! let volume = manager.create_volume(req, Arc::new(NoProgress)).await?;
//! let path = manager.mount_volume(&volume.name, None).await?;
//! println!("vol1 at {}", path.display());
//! manager.create_snapshot("vol1", Some("snap1".into())).await?;
//! # Ok(()) }
//! ```

mod backup_device;
mod backups;
mod browse;
pub use browse::BackupMount;
mod block_ranges;
pub use backups::unescape_backup_url;
pub use block_ranges::BlockRanges;
mod legacy_backups;
pub use legacy_backups::{import_legacy_backups, ImportReport};
mod backup_secret;
mod crashpoint;
mod dm;
mod driver;
mod durable;
pub use durable::{remove_durably, write_atomic};
mod error;
mod external;
mod guard_fill;
mod guards;
mod instant;
mod lifecycle;
mod manager;
mod mount_refs;
pub use mount_refs::MOUNT_REFS_FILE;
mod mounts;
mod names;
mod open;
mod original;
mod policy;
pub use policy::{
    format_interval, format_keep, parse_interval, parse_keep, policy_snapshot_name, rfc3339,
    validate_policy_name, Action as PolicyAction, Policy, PolicyEngine, PolicyStatus, PolicyTarget,
    ALL_VOLUMES, DEFAULT_POLICY_NAME,
};
/// A policy's run state and the jobs it hands out.
pub mod policy_state {
    pub use crate::policy::book::{ActionState, Job, MadeBackup, MadeSnapshot, RunState};
}
mod records;
mod retention;
mod saved_config;
pub use saved_config::{original_saved_config, saved_config, SavedConfig, CONFIG_FILE};
mod snapshots;
mod state;
mod types;
mod vfs;
mod vfs_image;
mod vfs_layout;

pub use backup_secret::configure_backup_secret;
/// Parses the form [`ruby_date`] writes (Go's `time.RubyDate`) into Unix seconds.
pub use convoy_backupstore::legacy::format::parse_ruby_date;
/// Where the secret of encrypted backup stores comes from.
pub use convoy_backupstore::SecretSource as BackupSecretSource;
pub use dm::DEVICEMAPPER;
pub use error::{Error, ErrorKind, Result, StoreCause};
pub use external::{configure_external_commands, ExternalCommands};
pub use guard_fill::{
    percent_text, FillLevel, FillRefusal, FillThresholds, PoolFill, DEFAULT_FILL_REFUSE_PERCENT,
    DEFAULT_FILL_WARN_PERCENT, FILL_REFUSE_OPTION, FILL_WARN_OPTION,
};
pub use manager::VolumeManager;
pub use names::{generate_name, parse_size, ruby_date, validate_name, MAX_NAME_LEN};
pub use retention::{retention, KeepPolicy, KeepReason, RetentionDecision, RetentionItem};
pub use types::{
    BackupInfo, BackupKind, BackupReport, CreateVolumeRequest, Info, ManagerConfig, NoProgress,
    Progress, Snapshot, StoreOptions, Volume, DEFAULT_ROOT,
};
pub use vfs::VFS;
