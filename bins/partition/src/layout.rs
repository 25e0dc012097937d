//! Where the two partitions go.
//!
//! Partition 1 (data) starts at 1 MiB; partition 2 (metadata) ends at the end of the usable
//! area and starts on a 1 MiB boundary, so it holds at least the metadata estimate; the data
//! partition takes everything in between. An MBR table is used when the disk has at most 2^32
//! logical sectors (2 TiB with 512-byte sectors), as the original script's fdisk did; a GPT table
//! beyond, where MBR cannot address the disk (GPT keeps a backup header and entry array in the
//! last 33 sectors, which the layout leaves free).

use crate::error::{Result, SetupError};

/// Partition boundaries are multiples of this (and the data partition starts here).
pub const ALIGN_BYTES: u64 = 1 << 20;

/// The smallest data partition worth a pool: 8 blocks of 2 MiB.
pub const MIN_DATA_BYTES: u64 = 16 << 20;

/// The largest disk, in logical sectors, that an MBR table can address.
pub const MBR_MAX_SECTORS: u64 = 1 << 32;

/// Bytes of a GPT partition-entry array (128 entries of 128 bytes).
const GPT_ENTRY_ARRAY_BYTES: u64 = 128 * 128;

/// The kind of partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A DOS/MBR table (partition type 0x83, Linux).
    Mbr,
    /// A GUID partition table (type "Linux filesystem data").
    Gpt,
}

impl TableKind {
    /// "MBR" or "GPT".
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Mbr => "MBR",
            TableKind::Gpt => "GPT",
        }
    }
}

/// A partition's place, in logical sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First sector.
    pub start: u64,
    /// Number of sectors.
    pub sectors: u64,
}

impl Extent {
    /// One past the last sector.
    pub fn end(&self) -> u64 {
        self.start + self.sectors
    }
}

/// The planned table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Which table.
    pub kind: TableKind,
    /// Logical sector size in bytes (the unit of the extents).
    pub sector_bytes: u64,
    /// Partition 1: the pool's data device.
    pub data: Extent,
    /// Partition 2: the pool's metadata device.
    pub metadata: Extent,
}

impl Layout {
    /// Bytes of an extent.
    pub fn bytes(&self, extent: Extent) -> u64 {
        extent.sectors * self.sector_bytes
    }
}

/// The smallest disk that [`plan`] accepts for a metadata area of `metadata_bytes`.
pub fn minimum_disk_bytes(metadata_bytes: u64) -> u64 {
    ALIGN_BYTES + MIN_DATA_BYTES + metadata_bytes.div_ceil(ALIGN_BYTES) * ALIGN_BYTES
}

/// Plans the two partitions on a disk of `disk_bytes` with `sector_bytes` logical sectors for
/// a metadata area of at least `metadata_bytes`. `device` names the disk in errors.
pub fn plan(
    device: &std::path::Path,
    disk_bytes: u64,
    sector_bytes: u64,
    metadata_bytes: u64,
) -> Result<Layout> {
    let too_small = |why: String| SetupError::TooSmall {
        device: device.to_path_buf(),
        size: disk_bytes,
        needed: minimum_disk_bytes(metadata_bytes),
        why,
    };
    if sector_bytes == 0 || !ALIGN_BYTES.is_multiple_of(sector_bytes) {
        return Err(SetupError::InvalidFigure(format!(
            "{}: unsupported logical sector size {sector_bytes}",
            device.display()
        )));
    }
    let align = ALIGN_BYTES / sector_bytes;
    let total = disk_bytes / sector_bytes;
    let kind = if total <= MBR_MAX_SECTORS {
        TableKind::Mbr
    } else {
        TableKind::Gpt
    };
    let usable_end = match kind {
        TableKind::Mbr => total,
        TableKind::Gpt => total.saturating_sub(1 + GPT_ENTRY_ARRAY_BYTES / sector_bytes),
    };
    let metadata_sectors = metadata_bytes.div_ceil(sector_bytes);
    let why = format!(
        "1 MiB for the partition table, a {metadata_bytes}-byte metadata partition and at least \
         {MIN_DATA_BYTES} bytes of data"
    );
    let Some(metadata_start) = usable_end
        .checked_sub(metadata_sectors)
        .map(|s| s / align * align)
    else {
        return Err(too_small(why));
    };
    if metadata_start < align || (metadata_start - align) * sector_bytes < MIN_DATA_BYTES {
        return Err(too_small(why));
    }
    Ok(Layout {
        kind,
        sector_bytes,
        data: Extent {
            start: align,
            sectors: metadata_start - align,
        },
        metadata: Extent {
            start: metadata_start,
            sectors: usable_end - metadata_start,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const DISK: &str = "/dev/test";

    #[test]
    fn hundred_gib_disk() {
        let layout = plan(Path::new(DISK), 107_374_182_400, 512, 42_627_072).unwrap();
        assert_eq!(layout.kind, TableKind::Mbr);
        assert_eq!(
            layout.data,
            Extent {
                start: 2048,
                sectors: 209_629_184
            }
        );
        assert_eq!(
            layout.metadata,
            Extent {
                start: 209_631_232,
                sectors: 83_968
            }
        );
        assert_eq!(layout.metadata.end(), 209_715_200);
        assert!(layout.bytes(layout.metadata) >= 42_627_072);
    }

    #[test]
    fn gpt_beyond_two_tib() {
        let disk = 3u64 << 40;
        let layout = plan(Path::new(DISK), disk, 512, 100 << 20).unwrap();
        assert_eq!(layout.kind, TableKind::Gpt);
        assert_eq!(layout.metadata.end(), disk / 512 - 33);
        assert_eq!(layout.metadata.start % 2048, 0);
        assert!(layout.bytes(layout.metadata) >= 100 << 20);
        assert_eq!(layout.data.end(), layout.metadata.start);
        let exactly_two_tib = plan(Path::new(DISK), 2u64 << 40, 512, 100 << 20).unwrap();
        assert_eq!(exactly_two_tib.kind, TableKind::Mbr);
    }

    #[test]
    fn four_k_sectors() {
        let layout = plan(Path::new(DISK), 10 << 30, 4096, 5 << 20).unwrap();
        assert_eq!(layout.data.start, 256);
        assert_eq!(layout.metadata.end(), (10 << 30) / 4096);
    }

    #[test]
    fn too_small() {
        let metadata = 41 << 20;
        let minimum = minimum_disk_bytes(metadata);
        assert!(plan(Path::new(DISK), minimum, 512, metadata).is_ok());
        let err = plan(Path::new(DISK), minimum - (1 << 20), 512, metadata).unwrap_err();
        assert!(err.to_string().contains("is too small"), "{err}");
        assert!(plan(Path::new(DISK), 1 << 20, 512, metadata).is_err());
    }
}
