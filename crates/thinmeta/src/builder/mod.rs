//! Writes kernel-format pool metadata for test fixtures and benchmarks.
//!
//! Devices are built in memory as copy-on-write btrees: [`MetadataBuilder::create_snapshot`]
//! shares the origin's root, and later writes to either device shadow only the nodes on the path
//! they touch, as the kernel does. So a snapshot shares every subtree neither side has written.
//! [`MetadataBuilder::write_to`] lays out the superblock, both space maps (bitmaps, index,
//! reference-count trees: a node referenced from several parents gets its true count, 3 and more
//! going to the reference-count tree), the mapping and details trees, and optionally a held
//! metadata snapshot. Debian's `thin_check` 0.9.0 accepts the result (see the tests).
//!
//! ```
//! use convoy_thinmeta::builder::{BuilderConfig, MetadataBuilder};
//! let mut b = MetadataBuilder::new(BuilderConfig::default());
//! b.create_thin(1)?;
//! b.insert(1, 0, 10, 0)?;
//! b.create_snapshot(1, 2)?;
//! b.insert(1, 0, 11, 1)?; // the origin diverges; device 2 keeps data block 10
//! let mut file = std::io::Cursor::new(Vec::new());
//! b.write_to(&mut file)?;
//! # Ok::<(), convoy_thinmeta::ThinMetaError>(())
//! ```

mod disk;
mod tree;
mod write;

use std::collections::BTreeMap;

use crate::details::DeviceDetails;
use crate::error::{Result, ThinMetaError};
use crate::mappings::pack_mapping;
use tree::{Arena, NodeId};

/// Pool-wide parameters of the metadata to write.
#[derive(Debug, Clone, Copy)]
pub struct BuilderConfig {
    /// Size of the metadata in 4 KiB blocks (the written file is this long, sparse).
    pub nr_metadata_blocks: u64,
    /// Number of data blocks in the pool.
    pub nr_data_blocks: u64,
    /// Data block size in 512-byte sectors.
    pub data_block_size: u32,
    /// Transaction id to record.
    pub transaction_id: u64,
}

impl Default for BuilderConfig {
    fn default() -> Self {
        BuilderConfig {
            nr_metadata_blocks: 2048,
            nr_data_blocks: 1 << 16,
            data_block_size: 128,
            transaction_id: 1,
        }
    }
}

#[derive(Clone, Copy)]
struct Device {
    root: NodeId,
    details: DeviceDetails,
}

/// State captured by [`MetadataBuilder::reserve_metadata_snapshot`].
struct Held {
    devices: BTreeMap<u64, Device>,
    time: u32,
    transaction_id: u64,
}

/// Builds pool metadata in memory and writes it in kernel format.
pub struct MetadataBuilder {
    config: BuilderConfig,
    arena: Arena,
    devices: BTreeMap<u64, Device>,
    held: Option<Held>,
    time: u32,
}

/// What [`MetadataBuilder::write_to`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenMetadata {
    /// Metadata blocks in use.
    pub allocated_blocks: u64,
    /// Block of the held metadata-snapshot superblock, if one is held.
    pub held_root: Option<u64>,
    /// Distinct mapping-tree nodes written (shared nodes counted once).
    pub mapping_nodes: u64,
}

impl MetadataBuilder {
    /// An empty pool at time 0.
    pub fn new(config: BuilderConfig) -> Self {
        MetadataBuilder {
            config,
            arena: Arena::default(),
            devices: BTreeMap::new(),
            held: None,
            time: 0,
        }
    }

    /// Current pool time (stamped on details of new devices).
    pub fn time(&self) -> u32 {
        self.time
    }

    /// Sets the pool time.
    pub fn set_time(&mut self, time: u32) {
        self.time = time;
    }

    /// Sets the transaction id recorded in the superblock.
    pub fn set_transaction_id(&mut self, transaction_id: u64) {
        self.config.transaction_id = transaction_id;
    }

    /// Creates an empty thin device.
    pub fn create_thin(&mut self, dev_id: u64) -> Result<()> {
        self.check_new(dev_id)?;
        let root = self.arena.empty_tree();
        self.add_device(dev_id, root);
        Ok(())
    }

    /// Creates a device holding `mappings` (`(virtual, data, time)`, strictly ascending virtual
    /// blocks), built bottom-up with `leaf_fill` entries per leaf (1..=252): different fills
    /// give trees split at different keys.
    pub fn create_thin_with(
        &mut self,
        dev_id: u64,
        mappings: impl IntoIterator<Item = (u64, u64, u32)>,
        leaf_fill: usize,
    ) -> Result<()> {
        self.check_new(dev_id)?;
        let mut entries = Vec::new();
        for (v, d, t) in mappings {
            self.check_data(d)?;
            entries.push((v, pack_mapping(d, t)));
        }
        let root = self.arena.bulk(&entries, leaf_fill)?;
        self.add_device(dev_id, root);
        Ok(())
    }

    /// Snapshots `origin` as `snap_id`: the new device shares the origin's root. The pool time
    /// is recorded as both devices' snapshot time and then incremented, as the kernel does.
    pub fn create_snapshot(&mut self, origin: u64, snap_id: u64) -> Result<()> {
        self.check_new(snap_id)?;
        let time = self.time;
        let dev = self.device_mut(origin)?;
        dev.details.snapshotted_time = time;
        let root = dev.root;
        self.arena.refs[root] += 1;
        self.add_device(snap_id, root);
        if let Some(d) = self.devices.get_mut(&snap_id) {
            d.details.snapshotted_time = time;
        }
        self.time += 1;
        Ok(())
    }

    /// Maps virtual block `vblock` of `dev_id` to `data_block` (replacing any mapping),
    /// shadowing shared nodes on the way.
    pub fn insert(&mut self, dev_id: u64, vblock: u64, data_block: u64, time: u32) -> Result<()> {
        self.check_data(data_block)?;
        let root = self.device_mut(dev_id)?.root;
        let root = self
            .arena
            .insert(root, vblock, pack_mapping(data_block, time));
        self.device_mut(dev_id)?.root = root;
        Ok(())
    }

    /// Unmaps virtual block `vblock` of `dev_id`; returns whether it was mapped.
    pub fn remove(&mut self, dev_id: u64, vblock: u64) -> Result<bool> {
        let root = self.device_mut(dev_id)?.root;
        let (root, found) = self.arena.remove(root, vblock);
        self.device_mut(dev_id)?.root = root;
        Ok(found)
    }

    /// Holds a metadata snapshot of the current state (as the pool message
    /// `reserve_metadata_snap`): later changes do not affect it.
    pub fn reserve_metadata_snapshot(&mut self) -> Result<()> {
        if self.held.is_some() {
            return Err(ThinMetaError::InvalidDescription(
                "a metadata snapshot is already held".into(),
            ));
        }
        for d in self.devices.values() {
            self.arena.refs[d.root] += 1;
        }
        self.held = Some(Held {
            devices: self.devices.clone(),
            time: self.time,
            transaction_id: self.config.transaction_id,
        });
        Ok(())
    }

    /// Writes the metadata to `out` (from offset 0; `nr_metadata_blocks` blocks long).
    pub fn write_to<W: std::io::Write + std::io::Seek>(&self, out: W) -> Result<WrittenMetadata> {
        write::write(self, out)
    }

    /// Writes the metadata to a new (sparse) file at `path`.
    pub fn write_file(&self, path: &std::path::Path) -> Result<WrittenMetadata> {
        let file = std::fs::File::create(path).map_err(ThinMetaError::Write)?;
        file.set_len(self.config.nr_metadata_blocks * crate::checksum::BLOCK_SIZE as u64)
            .map_err(ThinMetaError::Write)?;
        let written = self.write_to(std::io::BufWriter::new(&file))?;
        file.sync_all().map_err(ThinMetaError::Write)?;
        Ok(written)
    }

    fn add_device(&mut self, dev_id: u64, root: NodeId) {
        let details = DeviceDetails {
            dev_id,
            mapped_blocks: 0,
            transaction_id: self.config.transaction_id,
            creation_time: self.time,
            snapshotted_time: self.time,
        };
        self.devices.insert(dev_id, Device { root, details });
    }

    fn check_new(&self, dev_id: u64) -> Result<()> {
        if dev_id >= 1 << 24 {
            return Err(ThinMetaError::InvalidDescription(format!(
                "device id {dev_id} does not fit in 24 bits"
            )));
        }
        if self.devices.contains_key(&dev_id) {
            return Err(ThinMetaError::InvalidDescription(format!(
                "device {dev_id} already exists"
            )));
        }
        Ok(())
    }

    fn check_data(&self, data_block: u64) -> Result<()> {
        if data_block >= self.config.nr_data_blocks {
            return Err(ThinMetaError::InvalidDescription(format!(
                "data block {data_block} beyond the pool's {} data blocks",
                self.config.nr_data_blocks
            )));
        }
        Ok(())
    }

    fn device_mut(&mut self, dev_id: u64) -> Result<&mut Device> {
        self.devices
            .get_mut(&dev_id)
            .ok_or(ThinMetaError::DeviceNotFound { dev_id })
    }
}
