//! The metadata snapshot guard: `reserve_metadata_snap` / `release_metadata_snap`.
//!
//! While a metadata snapshot is held, the kernel keeps a frozen copy of the metadata superblock
//! at the block reported as the "held root"; a reader of the metadata device (the snapshot
//! differ in `convoy-thinmeta`) can walk the trees under it while the pool keeps running. The
//! kernel allows one at a time, and it survives reboots (it lives in the superblock), so a
//! daemon that crashed while holding one must release it at start-up
//! ([`ThinPool::release_metadata_snap`]).

use nix::errno::Errno;

use crate::error::{errno_of, Error, Result};
use crate::pool::ThinPool;
use crate::units::MetaBlocks;

/// A held metadata snapshot; released when dropped (or by [`MetadataSnapshot::release`] to see
/// the error).
#[derive(Debug)]
#[must_use = "the metadata snapshot is released as soon as the guard is dropped"]
pub struct MetadataSnapshot<'pool> {
    pool: &'pool ThinPool,
    root: MetaBlocks,
    released: bool,
}

impl MetadataSnapshot<'_> {
    /// Block number (4 KiB metadata blocks) of the snapshot's superblock copy on the metadata
    /// device.
    pub fn held_root(&self) -> MetaBlocks {
        self.root
    }

    /// Release the snapshot now.
    ///
    /// # Errors
    /// Those of [`ThinPool::release_metadata_snap`].
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.pool.release_metadata_snap()
    }
}

impl Drop for MetadataSnapshot<'_> {
    fn drop(&mut self) {
        if !self.released {
            // Nothing to report to from a destructor; a failure here leaves the snapshot held,
            // which the next start-up releases.
            let _ = self.pool.release_metadata_snap();
        }
    }
}

impl ThinPool {
    /// Reserve a metadata snapshot and return a guard that releases it on drop.
    ///
    /// # Errors
    /// [`Error::MetadataSnapshotHeld`] when one is already held (the kernel answers EBUSY);
    /// [`Error::PoolReadOnly`].
    pub fn reserve_metadata_snap(&self) -> Result<MetadataSnapshot<'_>> {
        let msg = "reserve_metadata_snap";
        self.message(msg).map_err(|e| match errno_of(&e) {
            Some(Errno::EBUSY) => Error::MetadataSnapshotHeld {
                pool: self.name().to_owned(),
            },
            _ => self.message_error(msg, &format!("metadata of pool {}", self.name()), e),
        })?;
        let mut guard = MetadataSnapshot {
            pool: self,
            root: MetaBlocks(0),
            released: false,
        };
        // If reading the status fails, the guard's drop releases the snapshot.
        let root = self
            .status()?
            .held_metadata_root
            .ok_or_else(|| Error::StatusParse {
                device: format!("thin pool {}", self.name()),
                line: "-".to_owned(),
                reason: "no held metadata root after reserve_metadata_snap".to_owned(),
            })?;
        guard.root = root;
        Ok(guard)
    }

    /// Release a held metadata snapshot (also one left over from a crash).
    ///
    /// # Errors
    /// [`Error::NotFound`] when none is held.
    pub fn release_metadata_snap(&self) -> Result<()> {
        let msg = "release_metadata_snap";
        self.message(msg).map_err(|e| match errno_of(&e) {
            Some(Errno::EINVAL) if self.held_root_now() == Some(None) => Error::NotFound {
                kind: "metadata snapshot of thin pool",
                name: self.name().to_owned(),
            },
            _ => self.message_error(msg, &format!("metadata of pool {}", self.name()), e),
        })
    }

    /// The held root as the status reports it now (`None` if the status cannot be read).
    fn held_root_now(&self) -> Option<Option<MetaBlocks>> {
        self.status().ok().map(|s| s.held_metadata_root)
    }
}
