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

/// Byte counts held in a `u64` (record sizes, sizes users give) to and from [`Sectors`], so
/// that no caller multiplies or divides by 512 itself. Bring it into scope to call
/// `Sectors::from_bytes(..)`, `Sectors::covering(..)` and `sectors.to_bytes()`.
pub trait SectorBytes: Sized {
    /// `bytes` in sectors; `None` when it is not a whole number of sectors.
    fn from_bytes(bytes: u64) -> Option<Self>;
    /// The fewest sectors holding `bytes` (rounded up).
    fn covering(bytes: u64) -> Self;
    /// These sectors in bytes; `None` when that is more than a `u64` holds.
    fn checked_bytes(self) -> Option<u64>;
    /// These sectors in bytes, `u64::MAX` when that is more than a `u64` holds (16 EiB: no
    /// device comes near; use [`SectorBytes::checked_bytes`] where a caller's number may).
    fn to_bytes(self) -> u64;
}

impl SectorBytes for Sectors {
    fn from_bytes(bytes: u64) -> Option<Sectors> {
        bytes
            .is_multiple_of(SECTOR_BYTES)
            .then_some(Sectors(bytes / SECTOR_BYTES))
    }

    fn covering(bytes: u64) -> Sectors {
        Sectors(bytes.div_ceil(SECTOR_BYTES))
    }

    fn checked_bytes(self) -> Option<u64> {
        self.0.checked_mul(SECTOR_BYTES)
    }

    fn to_bytes(self) -> u64 {
        self.0.saturating_mul(SECTOR_BYTES)
    }
}

/// [`SECTOR_SIZE`] as a `u64`.
const SECTOR_BYTES: u64 = SECTOR_SIZE as u64;

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
    fn byte_counts_convert_to_and_from_sectors() {
        assert_eq!(Sectors::from_bytes(0), Some(Sectors(0)));
        assert_eq!(Sectors::from_bytes(1 << 30), Some(Sectors(1 << 21)));
        assert_eq!(Sectors::from_bytes(513), None);
        assert_eq!(Sectors::from_bytes(511), None);
        assert_eq!(Sectors::covering(0), Sectors(0));
        assert_eq!(Sectors::covering(1), Sectors(1));
        assert_eq!(Sectors::covering(512), Sectors(1));
        assert_eq!(Sectors::covering(513), Sectors(2));
        assert_eq!(Sectors::covering(u64::MAX), Sectors(1 << 55));
        assert_eq!(Sectors(3).to_bytes(), 1536);
        assert_eq!(Sectors(3).checked_bytes(), Some(1536));
        assert_eq!(Sectors(1 << 55).checked_bytes(), None);
        assert_eq!(Sectors(1 << 55).to_bytes(), u64::MAX);
        assert_eq!(Sectors((1 << 55) - 1).checked_bytes(), Some(u64::MAX - 511));
    }

    #[test]
    fn block_arithmetic() {
        let bs = BlockSize::new(Sectors(128)).unwrap();
        assert_eq!(bs.blocks_in(Sectors(1000)), DataBlocks(7));
        assert_eq!(bs.sectors_of(DataBlocks(7)), Sectors(896));
        assert!(BlockSize::try_from(Sectors(100)).is_err());
    }
}
