//! The manager's host-tier integration tests (vfs driver, degraded start), in one binary: one
//! link, and one copy of the generic code they all use instead of one per file (as eight
//! binaries they took 182 s of compile time in a clean build on 2 cores, as one 60 s). Each
//! file is a module; run one with its name as the filter, e.g.
//! `cargo test -p convoy-core --test host vfs_policy::`.
//!
//! The device tests (`dm_*.rs`) stay binaries of their own: the VM tier runs them by binary,
//! in two lanes, each in a process of its own. So does `vfs_encrypted_backup.rs`: it sets the
//! process-wide backup secret (`configure_backup_secret`), which would reach the backups of the
//! tests running beside it here.

#[path = "../common/mod.rs"]
mod common;

mod degraded;
mod vfs;
mod vfs_backup;
mod vfs_browse;
mod vfs_cancel;
mod vfs_lifecycle;
mod vfs_mount_holders;
mod vfs_policy;
