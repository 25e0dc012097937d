//! Opening pool metadata and looking up devices.

use std::io::{Read, Seek};

use crate::block::BlockReader;
use crate::cursor::{Item, TreeCursor};
use crate::delta::{Delta, DeltaMode};
use crate::details::{DeviceDetails, DETAILS_VALUE_SIZE};
use crate::error::{corrupt, Result, ThinMetaError};
use crate::mappings::MappedRuns;
use crate::superblock::{Superblock, SUPERBLOCK_LOCATION};

const MAPPING_TOP: &str = "mapping tree (device level) node";
const MAPPING_NODE: &str = "mapping tree node";
const DETAILS_NODE: &str = "device details tree node";

/// Read-only view of a pool's metadata through one superblock (the live one or the held
/// metadata snapshot).
pub struct ThinMetadata<R> {
    reader: BlockReader<R>,
    live: Superblock,
    active: Superblock,
}

impl<R: Read + Seek> ThinMetadata<R> {
    /// Opens the metadata through the live superblock (block 0).
    pub fn open(source: R) -> Result<Self> {
        let mut reader = BlockReader::new(source);
        let live = read_superblock(&mut reader, SUPERBLOCK_LOCATION)?;
        reader.set_nr_blocks(live.nr_metadata_blocks);
        Ok(ThinMetadata {
            reader,
            active: live.clone(),
            live,
        })
    }

    /// Opens the metadata through a held metadata snapshot: the one the live superblock names,
    /// or the superblock copy at `block` if given (as `thin_delta -m BLOCK`).
    pub fn open_metadata_snapshot(source: R, block: Option<u64>) -> Result<Self> {
        let mut reader = BlockReader::new(source);
        let live = read_superblock(&mut reader, SUPERBLOCK_LOCATION)?;
        reader.set_nr_blocks(live.nr_metadata_blocks);
        let location = match block {
            Some(b) => b,
            None if live.metadata_snap == 0 => return Err(ThinMetaError::NoMetadataSnapshot),
            None => live.metadata_snap,
        };
        if location == SUPERBLOCK_LOCATION {
            return Err(ThinMetaError::NoMetadataSnapshot);
        }
        let active = read_superblock(&mut reader, location)?;
        Ok(ThinMetadata {
            reader,
            live,
            active,
        })
    }

    /// The superblock in use (the snapshot copy when opened through one).
    pub fn superblock(&self) -> &Superblock {
        &self.active
    }

    /// The live superblock (block 0).
    pub fn live_superblock(&self) -> &Superblock {
        &self.live
    }

    /// Metadata blocks read from the source so far.
    pub fn blocks_read(&self) -> u64 {
        self.reader.blocks_read()
    }

    /// Details of every device, in id order.
    pub fn devices(&mut self) -> Result<Vec<DeviceDetails>> {
        let mut cursor = TreeCursor::new(
            &mut self.reader,
            self.active.details_root,
            DETAILS_NODE,
            DETAILS_VALUE_SIZE,
        )?;
        let mut out = Vec::new();
        loop {
            match cursor.peek() {
                None => return Ok(out),
                Some(Item::Subtree { .. }) => cursor.descend(&mut self.reader)?,
                Some(Item::Entry { key, .. }) => {
                    let bytes = cursor.entry_bytes().unwrap_or(&[0u8; DETAILS_VALUE_SIZE]);
                    out.push(DeviceDetails::parse(key, bytes));
                    cursor.advance();
                }
            }
        }
    }

    /// Details of one device.
    pub fn device_details(&mut self, dev_id: u64) -> Result<DeviceDetails> {
        let mut cursor = TreeCursor::new(
            &mut self.reader,
            self.active.details_root,
            DETAILS_NODE,
            DETAILS_VALUE_SIZE,
        )?;
        match cursor.seek_exact(&mut self.reader, dev_id)? {
            Some(_) => {
                let bytes = cursor.entry_bytes().unwrap_or(&[0u8; DETAILS_VALUE_SIZE]);
                Ok(DeviceDetails::parse(dev_id, bytes))
            }
            None => Err(ThinMetaError::DeviceNotFound { dev_id }),
        }
    }

    /// Ids of the devices in the mapping tree with the root block of each one's mappings.
    pub fn device_roots(&mut self) -> Result<Vec<(u64, u64)>> {
        let mut cursor =
            TreeCursor::new(&mut self.reader, self.active.mapping_root, MAPPING_TOP, 8)?;
        let mut out = Vec::new();
        while let Some(entry) = cursor.next_entry(&mut self.reader)? {
            out.push(entry);
        }
        Ok(out)
    }

    /// Root block of one device's mapping tree.
    pub fn device_root(&mut self, dev_id: u64) -> Result<u64> {
        let mut cursor =
            TreeCursor::new(&mut self.reader, self.active.mapping_root, MAPPING_TOP, 8)?;
        cursor
            .seek_exact(&mut self.reader, dev_id)?
            .ok_or(ThinMetaError::DeviceNotFound { dev_id })
    }

    /// The mapped runs of one device, in virtual-block order.
    pub fn mapped_runs(&mut self, dev_id: u64) -> Result<MappedRuns<'_, R>> {
        let root = self.device_root(dev_id)?;
        let cursor = self.device_cursor(root)?;
        Ok(MappedRuns::new(&mut self.reader, cursor))
    }

    /// The delta between devices `left` and `right`.
    pub fn delta(&mut self, left: u64, right: u64, mode: DeltaMode) -> Result<Delta<'_, R>> {
        let left_root = self.device_root(left)?;
        let right_root = self.device_root(right)?;
        let left_cursor = self.device_cursor(left_root)?;
        let right_cursor = self.device_cursor(right_root)?;
        Ok(Delta::new(
            &mut self.reader,
            left_cursor,
            right_cursor,
            mode,
        ))
    }

    /// Block numbers of every node of one device's mapping tree, in walk order (for
    /// diagnostics and benchmarks: unlike the other walks, memory grows with the tree).
    pub fn mapping_tree_blocks(&mut self, dev_id: u64) -> Result<Vec<u64>> {
        let root = self.device_root(dev_id)?;
        let mut cursor = self.device_cursor(root)?;
        let mut out = Vec::new();
        loop {
            match cursor.peek() {
                None => return Ok(out),
                Some(Item::Subtree { block, .. }) => {
                    out.push(block);
                    cursor.descend(&mut self.reader)?;
                }
                Some(Item::Entry { .. }) => cursor.advance(),
            }
        }
    }

    fn device_cursor(&mut self, root: u64) -> Result<TreeCursor> {
        if root == SUPERBLOCK_LOCATION {
            return Err(corrupt(
                root,
                MAPPING_NODE,
                "a device's mapping root is block 0",
            ));
        }
        TreeCursor::new(&mut self.reader, root, MAPPING_NODE, 8)
    }
}

fn read_superblock<R: Read + Seek>(
    reader: &mut BlockReader<R>,
    location: u64,
) -> Result<Superblock> {
    let data = reader.read(location, "")?;
    Superblock::parse(&data, location)
}
