//! The device details tree: per thin device, its mapped block count, transaction and times.

use crate::checksum::{le32, le64};

/// Size of a device details value.
pub const DETAILS_VALUE_SIZE: usize = 24;

/// Details of one thin device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceDetails {
    /// Thin device id.
    pub dev_id: u64,
    /// Number of mapped blocks, as the kernel counts them.
    pub mapped_blocks: u64,
    /// Transaction id of the last change.
    pub transaction_id: u64,
    /// Pool time at creation.
    pub creation_time: u32,
    /// Pool time of the last snapshot of (or from) this device.
    pub snapshotted_time: u32,
}

impl DeviceDetails {
    pub(crate) fn parse(dev_id: u64, b: &[u8]) -> Self {
        DeviceDetails {
            dev_id,
            mapped_blocks: le64(b, 0),
            transaction_id: le64(b, 8),
            creation_time: le32(b, 16),
            snapshotted_time: le32(b, 20),
        }
    }

    /// The 24-byte on-disk value.
    pub fn to_bytes(&self) -> [u8; DETAILS_VALUE_SIZE] {
        let mut b = [0u8; DETAILS_VALUE_SIZE];
        b[0..8].copy_from_slice(&self.mapped_blocks.to_le_bytes());
        b[8..16].copy_from_slice(&self.transaction_id.to_le_bytes());
        b[16..20].copy_from_slice(&self.creation_time.to_le_bytes());
        b[20..24].copy_from_slice(&self.snapshotted_time.to_le_bytes());
        b
    }
}
