//! The partition helper's figures: the metadata area `thin_metadata_size` estimates for the
//! whole device as a pool of 2 MiB blocks (the original called `thin_metadata_size -b 2m
//! -s <device bytes>b -m <max thins> -u b -n`), the rest as data.
//!
//! For a 107374182400-byte device and 10000 thins: metadata 42627072 bytes, data 107331555328
//! bytes, 209631944 data sectors.

use crate::error::{Result, SetupError};
use crate::metadata_size::{MAPPINGS_PER_LEAF, METADATA_BLOCK_BYTES};

/// Bytes per sector, the unit of device-mapper tables.
pub const SECTOR_BYTES: u64 = 512;

/// The pool block size the estimate assumes (the daemon's default `dm.thinpoolblocksize`).
pub const POOL_BLOCK_BYTES: u64 = 2 << 20;

/// The default maximum number of volumes plus snapshots.
pub const DEFAULT_MAX_THINS: u64 = 10_000;

/// The largest `--max-thins`: thin device ids are 24-bit.
pub const MAX_THINS_LIMIT: u64 = 1 << 24;

/// The largest metadata device dm-thin uses (255 * 2^14 blocks of 4 KiB, just under 16 GiB).
pub const METADATA_LIMIT_BYTES: u64 = 255 * (1 << 14) * METADATA_BLOCK_BYTES;

/// The estimate of `thin_metadata_size` in exact integer arithmetic: bytes of metadata for a
/// pool of `pool_bytes` with `block_bytes` blocks and `max_thins` thin devices. `None` if it
/// overflows 64 bits or a block is smaller than a sector.
pub fn metadata_bytes(pool_bytes: u64, block_bytes: u64, max_thins: u64) -> Option<u64> {
    let block_sectors = block_bytes / SECTOR_BYTES;
    if block_sectors == 0 {
        return None;
    }
    let mappings = (2 * (pool_bytes / SECTOR_BYTES)) / block_sectors;
    let leaves = mappings / MAPPINGS_PER_LEAF;
    let blocks = leaves.checked_add(max_thins)?.checked_add(1)?;
    blocks.checked_mul(METADATA_BLOCK_BYTES)
}

/// What the partition helper prints before it partitions anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    /// The whole device, in bytes.
    pub device_bytes: u64,
    /// The maximum number of volumes plus snapshots the metadata is sized for.
    pub max_thins: u64,
    /// The metadata area the estimate asks for, in bytes.
    pub metadata_bytes: u64,
    /// What is left for data, in bytes.
    pub data_bytes: u64,
    /// The same in 512-byte sectors.
    pub data_sectors: u64,
}

impl Figures {
    /// Computes the figures for a device of `device_bytes` and `max_thins` thins.
    pub fn new(device_bytes: u64, max_thins: u64) -> Result<Figures> {
        if max_thins == 0 || max_thins > MAX_THINS_LIMIT {
            return Err(SetupError::InvalidFigure(format!(
                "--max-thins must be between 1 and {MAX_THINS_LIMIT} (thin device ids are 24-bit), not {max_thins}"
            )));
        }
        let metadata_bytes = metadata_bytes(device_bytes, POOL_BLOCK_BYTES, max_thins)
            .ok_or_else(|| SetupError::InvalidFigure("metadata size overflows".into()))?;
        if metadata_bytes > METADATA_LIMIT_BYTES {
            return Err(SetupError::InvalidFigure(format!(
                "the metadata area would be {metadata_bytes} bytes, over dm-thin's limit of \
                 {METADATA_LIMIT_BYTES} bytes; lower --max-thins"
            )));
        }
        let data_bytes = device_bytes.saturating_sub(metadata_bytes);
        Ok(Figures {
            device_bytes,
            max_thins,
            metadata_bytes,
            data_bytes,
            data_sectors: data_bytes / SECTOR_BYTES,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_figures() {
        let figures = Figures::new(107_374_182_400, DEFAULT_MAX_THINS).unwrap();
        assert_eq!(figures.metadata_bytes, 42_627_072);
        assert_eq!(figures.data_bytes, 107_331_555_328);
        assert_eq!(figures.data_sectors, 209_631_944);
    }

    #[test]
    fn agrees_with_the_tool() {
        for (pool, thins) in [(107_374_182_400u64, 10_000u64), (1 << 40, 1), (3 << 30, 77)] {
            let args: Vec<String> = format!("-b 2m -s {pool}b -m {thins} -u b -n")
                .split(' ')
                .map(String::from)
                .collect();
            let tool = crate::metadata_size::run(&args).stdout;
            assert_eq!(
                tool.trim(),
                metadata_bytes(pool, POOL_BLOCK_BYTES, thins)
                    .unwrap()
                    .to_string()
            );
        }
    }

    #[test]
    fn bad_thin_counts() {
        assert!(Figures::new(1 << 30, 0).is_err());
        assert!(Figures::new(1 << 30, MAX_THINS_LIMIT + 1).is_err());
        assert!(
            Figures::new(1 << 30, 5_000_000).is_err(),
            "over the 16 GiB metadata limit"
        );
    }
}
