//! Public data types: backup metadata in and out, statistics, and the I/O and progress traits.

use std::io;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

use crate::manifest::ManifestHeader;

/// What the caller knows about the volume and snapshot being backed up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupMeta {
    /// Name for the backup; `backup-<16 hex>` is generated when `None`.
    pub backup_name: Option<String>,
    /// The volume driver (`devicemapper`).
    pub driver_name: String,
    /// Volume name (also the store's per-volume directory).
    pub volume_name: String,
    /// Volume UUID.
    pub volume_uuid: String,
    /// Volume size in bytes; the source is read up to here.
    pub volume_size: u64,
    /// When the volume was created.
    pub volume_created_at: String,
    /// Snapshot name.
    pub snapshot_name: String,
    /// Snapshot UUID.
    pub snapshot_uuid: String,
    /// When the snapshot was created.
    pub snapshot_created_at: String,
}

/// `backup inspect` output: the original Convoy's fields, typed (`volume_size` is a number of
/// bytes). Its JSON is the original's, field for field and every value a string
/// (`"VolumeSize": "1073741824"`), as the daemon's wire type writes it too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BackupInfo {
    /// `<dest>?backup=<name>&volume=<name>`.
    #[serde(rename = "BackupURL")]
    pub backup_url: String,
    /// The backup's UUID.
    #[serde(rename = "BackupUUID")]
    pub backup_uuid: String,
    /// The driver that made it.
    pub driver_name: String,
    /// Volume UUID.
    #[serde(rename = "VolumeUUID")]
    pub volume_uuid: String,
    /// Volume name.
    pub volume_name: String,
    /// Volume size in bytes (a decimal string in the JSON).
    #[serde(with = "decimal_string")]
    pub volume_size: u64,
    /// When the volume was created.
    pub volume_created_at: String,
    /// Snapshot UUID.
    #[serde(rename = "SnapshotUUID")]
    pub snapshot_uuid: String,
    /// Snapshot name.
    pub snapshot_name: String,
    /// When the snapshot was created.
    pub snapshot_created_at: String,
    /// When the backup was made (RFC 3339, UTC).
    pub created_time: String,
    /// `"true"` when the backup is in an encrypted store (its data and manifest sealed); empty,
    /// and left out of the JSON, otherwise (so that unencrypted backups print as the
    /// original Convoy printed them).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub encrypted: String,
}

/// A `u64` written as a decimal string, the original's form of numbers in `backup inspect`.
mod decimal_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl BackupInfo {
    pub(crate) fn from_header(backup_url: String, h: &ManifestHeader) -> Self {
        BackupInfo {
            backup_url,
            backup_uuid: h.backup_uuid.clone(),
            driver_name: h.driver_name.clone(),
            volume_uuid: h.volume_uuid.clone(),
            volume_name: h.volume_name.clone(),
            volume_size: h.volume_size,
            encrypted: if h.cipher == "none" {
                String::new()
            } else {
                "true".into()
            },
            volume_created_at: h.volume_created_at.clone(),
            snapshot_uuid: h.snapshot_uuid.clone(),
            snapshot_name: h.snapshot_name.clone(),
            snapshot_created_at: h.snapshot_created_at.clone(),
            created_time: h.created_time.clone(),
        }
    }
}

/// What a backup did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupStats {
    /// Chunks read from the source.
    pub chunks_read: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Chunks read that were all zero (left as holes).
    pub zero_chunks: u64,
    /// Chunks read whose content equalled the parent's at the same offset.
    pub unchanged_chunks: u64,
    /// Chunks taken from the parent manifest without reading.
    pub carried_chunks: u64,
    /// Blocks uploaded (new to the store).
    pub blocks_uploaded: u64,
    /// Blocks the store already held (deduplicated).
    pub blocks_deduplicated: u64,
    /// Encoded bytes uploaded for new blocks.
    pub bytes_uploaded: u64,
    /// Entries in the manifest.
    pub manifest_entries: u64,
    /// Pack objects written.
    pub packs_uploaded: u64,
}

/// The result of a backup.
#[derive(Clone, Debug)]
pub struct BackupOutcome {
    /// The new backup, as `inspect` shows it.
    pub info: BackupInfo,
    /// Its volume and name.
    pub backup: crate::BackupRef,
    /// Counters.
    pub stats: BackupStats,
}

/// What a restore or verify did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Blocks downloaded and verified.
    pub blocks: u64,
    /// Volume bytes written (or verified).
    pub bytes: u64,
    /// Volume size from the manifest.
    pub volume_size: u64,
}

/// What a delete did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteStats {
    /// Blocks of the deleted backup removed with their packs (no other backup uses them).
    pub blocks_removed: u64,
    /// Pack objects removed because no backup references them any more.
    pub packs_removed: u64,
    /// Incremental children re-attached to the deleted backup's parent.
    pub children_reparented: u64,
}

/// What [`crate::BackupTarget::repair`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// Reference records of backups that do not exist (crashed backups).
    pub refs_removed: u64,
    /// Blocks in the packs removed.
    pub blocks_removed: u64,
    /// Packs no backup references.
    pub packs_removed: u64,
    /// Other leftovers (child/parent records, temp files, trash).
    pub records_removed: u64,
}

/// Default [`CompactOptions::threshold`]: packs less than half used are rewritten.
pub const DEFAULT_COMPACT_THRESHOLD: f64 = 0.5;
/// Default [`CompactOptions::max_bytes`]: 1 GiB of used blocks copied per run.
pub const DEFAULT_COMPACT_MAX_BYTES: u64 = 1 << 30;

/// What [`crate::BackupTarget::compact`] rewrites.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactOptions {
    /// Packs whose used fraction (bytes of blocks some backup uses / bytes of the pack) is
    /// below this are rewritten; from 0 to 1, both excluded. Default
    /// [`DEFAULT_COMPACT_THRESHOLD`]: at 0.5 every byte copied frees at least one byte, and the
    /// store holds at most about twice the bytes its backups use (plus packs not yet compacted
    /// for lack of budget).
    pub threshold: f64,
    /// At most this many bytes of used blocks are copied in one run (a pack that would exceed
    /// it waits for the next run; packs with nothing used cost nothing and always go). The
    /// exclusive lock, which holds backups off, is held for the run. Default
    /// [`DEFAULT_COMPACT_MAX_BYTES`].
    pub max_bytes: u64,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            threshold: DEFAULT_COMPACT_THRESHOLD,
            max_bytes: DEFAULT_COMPACT_MAX_BYTES,
        }
    }
}

/// What [`crate::BackupTarget::compact`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Manifests read (every backup's).
    pub backups_read: u64,
    /// Packs whose used bytes were computed.
    pub packs_examined: u64,
    /// Packs rewritten: their used blocks copied into new packs, the pack removed.
    pub packs_rewritten: u64,
    /// Packs under the threshold left for a later run: over the `max_bytes` budget, damaged,
    /// or holding blocks of a damaged forwarding object.
    pub packs_deferred: u64,
    /// New packs written.
    pub packs_written: u64,
    /// Bytes of blocks copied.
    pub bytes_copied: u64,
    /// Bytes of every pack before the run.
    pub bytes_stored_before: u64,
    /// Bytes of every pack after the run.
    pub bytes_stored_after: u64,
    /// Pack bytes freed: `bytes_stored_before - bytes_stored_after` (packs rewritten or removed
    /// as garbage, minus the packs written).
    pub bytes_reclaimed: u64,
    /// Forwarding objects written for packs rewritten in this run.
    pub forwards_written: u64,
    /// Forwarding objects rewritten to point straight at live packs (after their blocks moved
    /// again), or removed when nothing in them was used any more.
    pub forwards_updated: u64,
    /// Leftovers of crashed backups, deletes and compactions removed first (reference records,
    /// forwarding objects, packs).
    pub garbage_removed: u64,
    /// Manifest entries whose block is in no pack and no forwarding object (a damaged backup:
    /// `verify` names it).
    pub entries_unresolved: u64,
}

/// Restore behaviour.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Write zeros over holes. Leave `false` for a fresh (zeroed or sparse) target; set it when
    /// restoring over a device or file that may hold old data.
    pub zero_holes: bool,
}

/// A readable volume (a snapshot's block device or an image file).
pub trait BlockSource: Send + Sync {
    /// Fills `buf` with the bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl BlockSource for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

/// A writable restore target (a block device or a file).
pub trait BlockSink: Send + Sync {
    /// Writes `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Called once after the last write (e.g. to fsync).
    fn finish(&self) -> io::Result<()> {
        Ok(())
    }
}

impl BlockSink for std::fs::File {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_all_at(data, offset)
    }
    fn finish(&self) -> io::Result<()> {
        self.sync_all()
    }
}

/// Progress reports from long operations. Every method has a silent default.
pub trait Progress: Send + Sync {
    /// The operation will cover `total_bytes` of volume data.
    fn start(&self, _total_bytes: u64) {}
    /// `bytes` more of the volume were processed.
    fn advance(&self, _bytes: u64) {}
    /// A new block of `stored_bytes` was uploaded.
    fn uploaded(&self, _stored_bytes: u64) {}
    /// The operation finished.
    fn finish(&self) {}
}

/// The silent [`Progress`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_info_is_typed_and_its_json_is_the_originals() {
        let info = BackupInfo {
            backup_url: "vfs:///b?backup=backup-1&volume=v1".into(),
            backup_uuid: "u1".into(),
            driver_name: "devicemapper".into(),
            volume_uuid: "vu".into(),
            volume_name: "v1".into(),
            volume_size: 1 << 30,
            volume_created_at: "t0".into(),
            snapshot_uuid: "su".into(),
            snapshot_name: "s1".into(),
            snapshot_created_at: "t1".into(),
            created_time: "t2".into(),
            encrypted: String::new(),
        };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["VolumeSize"], "1073741824");
        assert!(json.get("Encrypted").is_none());
        assert_eq!(serde_json::from_value::<BackupInfo>(json).unwrap(), info);
        let mut bad = serde_json::to_value(&info).unwrap();
        bad["VolumeSize"] = "1G".into();
        assert!(serde_json::from_value::<BackupInfo>(bad).is_err());
    }
}
