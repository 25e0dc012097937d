//! The superblock (block 0) and the metadata-snapshot copy of it.

use crate::block::Block;
use crate::checksum::{le32, le64, verify, SUPERBLOCK_SALT};
use crate::error::{corrupt, Result};

/// Magic number of a thin-pool superblock.
pub const SUPERBLOCK_MAGIC: u64 = 27022010;
/// Location of the live superblock.
pub const SUPERBLOCK_LOCATION: u64 = 0;

/// Root of a space map, as stored in the superblock (128-byte field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpaceMapRoot {
    /// Blocks the space map covers.
    pub nr_blocks: u64,
    /// Blocks with a non-zero reference count.
    pub nr_allocated: u64,
    /// Bitmap index root (btree for data, single index block for metadata).
    pub bitmap_root: u64,
    /// Root of the btree of reference counts above 2.
    pub ref_count_root: u64,
}

impl SpaceMapRoot {
    pub(crate) fn parse(b: &[u8]) -> Self {
        SpaceMapRoot {
            nr_blocks: le64(b, 0),
            nr_allocated: le64(b, 8),
            bitmap_root: le64(b, 16),
            ref_count_root: le64(b, 24),
        }
    }
}

/// A validated superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Block the superblock was read from (0, or the held metadata-snapshot root).
    pub location: u64,
    /// Flags (bit 0: needs check).
    pub flags: u32,
    /// UUID bytes (the kernel leaves them zero).
    pub uuid: [u8; 16],
    /// Format version (1 or 2).
    pub version: u32,
    /// Pool time (incremented on every snapshot).
    pub time: u32,
    /// Transaction id.
    pub transaction_id: u64,
    /// Held metadata-snapshot root; 0 = none.
    pub metadata_snap: u64,
    /// Data space map root.
    pub data_space_map: SpaceMapRoot,
    /// Metadata space map root.
    pub metadata_space_map: SpaceMapRoot,
    /// Root of the two-level mapping tree.
    pub mapping_root: u64,
    /// Root of the device details tree.
    pub details_root: u64,
    /// Data block size in 512-byte sectors.
    pub data_block_size: u32,
    /// Metadata block size in sectors (8).
    pub metadata_block_size: u32,
    /// Number of metadata blocks.
    pub nr_metadata_blocks: u64,
    /// Compatible feature flags.
    pub compat_flags: u32,
    /// Read-only compatible feature flags.
    pub compat_ro_flags: u32,
    /// Incompatible feature flags.
    pub incompat_flags: u32,
}

impl Superblock {
    /// Parses and validates the superblock found at `location`.
    pub fn parse(block: &Block, location: u64) -> Result<Self> {
        const WHAT: &str = "superblock";
        if let Err((stored, computed)) = verify(block, SUPERBLOCK_SALT) {
            return Err(corrupt(
                location,
                WHAT,
                format!("bad checksum {stored:#010x}, expected {computed:#010x}"),
            ));
        }
        let blocknr = le64(block, 8);
        if blocknr != location {
            return Err(corrupt(
                location,
                WHAT,
                format!("records its location as block {blocknr}"),
            ));
        }
        let magic = le64(block, 32);
        if magic != SUPERBLOCK_MAGIC {
            return Err(corrupt(
                location,
                WHAT,
                format!("bad magic {magic}, expected {SUPERBLOCK_MAGIC}"),
            ));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&block[16..32]);
        let sb = Superblock {
            location,
            flags: le32(block, 4),
            uuid,
            version: le32(block, 40),
            time: le32(block, 44),
            transaction_id: le64(block, 48),
            metadata_snap: le64(block, 56),
            data_space_map: SpaceMapRoot::parse(&block[64..192]),
            metadata_space_map: SpaceMapRoot::parse(&block[192..320]),
            mapping_root: le64(block, 320),
            details_root: le64(block, 328),
            data_block_size: le32(block, 336),
            metadata_block_size: le32(block, 340),
            nr_metadata_blocks: le64(block, 344),
            compat_flags: le32(block, 352),
            compat_ro_flags: le32(block, 356),
            incompat_flags: le32(block, 360),
        };
        if !(1..=2).contains(&sb.version) {
            return Err(corrupt(
                location,
                WHAT,
                format!("unsupported version {}", sb.version),
            ));
        }
        if sb.metadata_block_size != 8 {
            return Err(corrupt(
                location,
                WHAT,
                format!(
                    "metadata block size {} sectors, expected 8",
                    sb.metadata_block_size
                ),
            ));
        }
        if sb.data_block_size == 0 {
            return Err(corrupt(location, WHAT, "data block size is 0"));
        }
        for (name, root) in [
            ("mapping", sb.mapping_root),
            ("device details", sb.details_root),
        ] {
            if root == SUPERBLOCK_LOCATION {
                return Err(corrupt(
                    location,
                    WHAT,
                    format!("{name} tree root is block 0"),
                ));
            }
        }
        Ok(sb)
    }

    /// UUID as thin_delta/thin_dump print it: the bytes up to the first NUL.
    pub fn uuid_string(&self) -> String {
        let end = self.uuid.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.uuid[..end]).into_owned()
    }
}
