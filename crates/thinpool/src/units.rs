//! Unit newtypes. Sectors vs bytes vs blocks is the classic bug of this field, so every size in
//! the API carries its unit in its type.
//!
//! The plain units are the `devicemapper` crate's own (re-exported): [`Sectors`] (512 bytes),
//! [`Bytes`], [`DataBlocks`] (pool data blocks, whose size is the pool's [`BlockSize`]) and
//! [`MetaBlocks`] (4 KiB metadata blocks). [`BlockSize`] is a pool block size that has passed the
//! kernel's rules.

use std::fmt;

pub use devicemapper::{Bytes, DataBlocks, MetaBlocks, Sectors, SECTOR_SIZE};

use crate::error::{Error, Result};

/// A thin-pool data block size: a multiple of 128 sectors (64 KiB) between 128 sectors and
/// 2097152 sectors (1 GiB), the kernel's rule. Only [`BlockSize::new`] makes one, so a value of
/// this type is always valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockSize(Sectors);

impl BlockSize {
    /// Smallest block size the kernel accepts: 128 sectors (64 KiB).
    pub const MIN: Sectors = Sectors(128);
    /// Largest block size the kernel accepts: 2097152 sectors (1 GiB).
    pub const MAX: Sectors = Sectors(2_097_152);
    /// A block size must be a multiple of this: 128 sectors (64 KiB).
    pub const GRANULE: Sectors = Sectors(128);
    /// Convoy's default: 4096 sectors (2 MiB), as the original Convoy.
    pub const DEFAULT: BlockSize = BlockSize(Sectors(4096));

    /// Validate a block size given in sectors.
    ///
    /// # Errors
    /// [`Error::InvalidBlockSize`] stating the rule and the value when it is out of range or not
    /// a multiple of 128 sectors.
    pub fn new(sectors: Sectors) -> Result<BlockSize> {
        let valid =
            sectors >= Self::MIN && sectors <= Self::MAX && sectors.is_multiple_of(*Self::GRANULE);
        if valid {
            Ok(BlockSize(sectors))
        } else {
            Err(Error::InvalidBlockSize { sectors: *sectors })
        }
    }

    /// The block size in sectors.
    pub fn sectors(self) -> Sectors {
        self.0
    }

    /// The block size in bytes.
    pub fn bytes(self) -> Bytes {
        self.0.bytes()
    }

    /// Whole blocks contained in `sectors` (rounded down).
    pub fn blocks_in(self, sectors: Sectors) -> DataBlocks {
        DataBlocks(*sectors / *self.0)
    }

    /// The number of sectors in `blocks` blocks.
    pub fn sectors_of(self, blocks: DataBlocks) -> Sectors {
        Sectors(*blocks * *self.0)
    }
}

impl Default for BlockSize {
    fn default() -> BlockSize {
        BlockSize::DEFAULT
    }
}

impl fmt::Display for BlockSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sectors ({} KiB)", *self.0, *self.0 / 2)
    }
}

impl TryFrom<Sectors> for BlockSize {
    type Error = Error;

    fn try_from(sectors: Sectors) -> Result<BlockSize> {
        BlockSize::new(sectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_kernels_range() {
        for s in [128u64, 256, 4096, 65536, 2_097_152 - 128, 2_097_152] {
            let bs = BlockSize::new(Sectors(s)).unwrap();
            assert_eq!(bs.sectors(), Sectors(s));
            assert_eq!(bs.bytes(), Bytes(u128::from(s) * 512));
        }
    }

    #[test]
    fn refuses_out_of_range_and_unaligned() {
        for s in [
            0u64,
            1,
            64,
            127,
            129,
            200,
            4095,
            4097,
            2_097_152 + 128,
            4_194_304,
            u64::MAX,
        ] {
            let err = BlockSize::new(Sectors(s)).unwrap_err();
            assert!(
                matches!(err, Error::InvalidBlockSize { sectors } if sectors == s),
                "{s}: {err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(&s.to_string()),
                "message names the value: {msg}"
            );
            assert!(
                msg.contains("multiple of 128"),
                "message states the rule: {msg}"
            );
            assert!(msg.contains("2097152"), "message states the maximum: {msg}");
        }
    }

    #[test]
    fn default_is_two_mebibytes() {
        assert_eq!(BlockSize::default().bytes(), Bytes(2 * 1024 * 1024));
        assert_eq!(BlockSize::default().to_string(), "4096 sectors (2048 KiB)");
    }

    #[test]
    fn block_arithmetic() {
        let bs = BlockSize::new(Sectors(128)).unwrap();
        assert_eq!(bs.blocks_in(Sectors(1000)), DataBlocks(7));
        assert_eq!(bs.sectors_of(DataBlocks(7)), Sectors(896));
        assert!(BlockSize::try_from(Sectors(100)).is_err());
    }
}
