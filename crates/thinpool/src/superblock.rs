//! What a metadata device holds, judged from its first 4 KiB (the thin-pool superblock block).
//!
//! The kernel formats fresh metadata only when block 0 is all zeroes; otherwise it opens the
//! metadata it finds. So before activating a pool we look: zeroed (a new pool), a thin-pool
//! superblock (an existing pool: re-activate, never wipe), or anything else (someone else's data:
//! refuse unless forced). Facts from `docs/thin-metadata-format.md`: magic 27022010 as a
//! little-endian u64 at offset 32, transaction id at 48, held root at 56, data block size (u32,
//! sectors) at 336.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::units::Sectors;

/// Size of the superblock block at the start of the metadata device.
pub const SUPERBLOCK_SIZE: usize = 4096;
/// The thin-pool superblock magic number.
pub const THIN_SUPERBLOCK_MAGIC: u64 = 27_022_010;

const MAGIC_OFFSET: usize = 32;
const TRANSACTION_ID_OFFSET: usize = 48;
const HELD_ROOT_OFFSET: usize = 56;
const DATA_BLOCK_SIZE_OFFSET: usize = 336;

/// What the first block of a metadata device holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataContent {
    /// All zeroes: the kernel will format fresh metadata.
    Zeroed,
    /// A thin-pool superblock: existing pool metadata.
    ThinPool(SuperblockSummary),
    /// Something else: not ours to overwrite.
    Foreign,
}

/// The few superblock fields this crate checks before activating existing metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuperblockSummary {
    /// The pool's transaction id at the last commit.
    pub transaction_id: u64,
    /// Block number of a held metadata snapshot, if any (kept across reboots).
    pub held_root: Option<u64>,
    /// The data block size the pool was formatted with.
    pub data_block_size: Sectors,
}

/// Classify the first 4 KiB of a metadata device. A buffer shorter than 4 KiB (a tiny device)
/// is judged on what it has.
pub fn classify(block: &[u8]) -> MetadataContent {
    if block.iter().all(|&b| b == 0) {
        return MetadataContent::Zeroed;
    }
    let Some(magic) = read_u64(block, MAGIC_OFFSET) else {
        return MetadataContent::Foreign;
    };
    if magic != THIN_SUPERBLOCK_MAGIC {
        return MetadataContent::Foreign;
    }
    let (Some(transaction_id), Some(held), Some(block_size)) = (
        read_u64(block, TRANSACTION_ID_OFFSET),
        read_u64(block, HELD_ROOT_OFFSET),
        read_u32(block, DATA_BLOCK_SIZE_OFFSET),
    ) else {
        return MetadataContent::Foreign;
    };
    MetadataContent::ThinPool(SuperblockSummary {
        transaction_id,
        held_root: (held != 0).then_some(held),
        data_block_size: Sectors(u64::from(block_size)),
    })
}

/// Read and classify the superblock block of the metadata device at `path`.
///
/// # Errors
/// [`Error::Io`] when the device cannot be opened or read.
pub fn inspect(path: &Path) -> Result<MetadataContent> {
    let mut file = File::open(path).map_err(|e| Error::io("open metadata device", path, e))?;
    let mut block = vec![0u8; SUPERBLOCK_SIZE];
    let mut filled = 0;
    while filled < block.len() {
        match file.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read metadata superblock of", path, e)),
        }
    }
    block.truncate(filled);
    Ok(classify(&block))
}

/// Zero the superblock block of the metadata device at `path` (the force option), so that the
/// kernel formats fresh metadata on activation.
///
/// # Errors
/// [`Error::Io`] when the device cannot be written or synced.
pub fn wipe(path: &Path) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open metadata device for writing", path, e))?;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&[0u8; SUPERBLOCK_SIZE]))
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("zero metadata superblock of", path, e))
}

fn read_u64(buf: &[u8], offset: usize) -> Option<u64> {
    let bytes = buf.get(offset..offset + 8)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn read_u32(buf: &[u8], offset: usize) -> Option<u32> {
    let bytes = buf.get(offset..offset + 4)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(transaction: u64, held: u64, block_size: u32) -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_SIZE];
        b[0..4].copy_from_slice(&0xdead_beefu32.to_le_bytes()); // checksum: not checked here
        b[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&THIN_SUPERBLOCK_MAGIC.to_le_bytes());
        b[TRANSACTION_ID_OFFSET..TRANSACTION_ID_OFFSET + 8]
            .copy_from_slice(&transaction.to_le_bytes());
        b[HELD_ROOT_OFFSET..HELD_ROOT_OFFSET + 8].copy_from_slice(&held.to_le_bytes());
        b[DATA_BLOCK_SIZE_OFFSET..DATA_BLOCK_SIZE_OFFSET + 4]
            .copy_from_slice(&block_size.to_le_bytes());
        b
    }

    #[test]
    fn zeroes_are_zeroed() {
        assert_eq!(classify(&[0u8; SUPERBLOCK_SIZE]), MetadataContent::Zeroed);
        assert_eq!(classify(&[]), MetadataContent::Zeroed);
    }

    #[test]
    fn thin_superblock_is_recognised_with_its_fields() {
        let b = superblock(7, 0, 4096);
        assert_eq!(
            classify(&b),
            MetadataContent::ThinPool(SuperblockSummary {
                transaction_id: 7,
                held_root: None,
                data_block_size: Sectors(4096),
            })
        );
        let b = superblock(1, 42, 128);
        let MetadataContent::ThinPool(s) = classify(&b) else {
            panic!("not recognised");
        };
        assert_eq!(s.held_root, Some(42));
        assert_eq!(s.data_block_size, Sectors(128));
    }

    #[test]
    fn other_content_is_foreign() {
        // An ext4 image starts with zeroes but has its superblock at 1024.
        let mut ext = vec![0u8; SUPERBLOCK_SIZE];
        ext[1024 + 56..1024 + 58].copy_from_slice(&0xef53u16.to_le_bytes());
        assert_eq!(classify(&ext), MetadataContent::Foreign);
        // Magic big-endian is not the magic.
        let mut be = vec![0u8; SUPERBLOCK_SIZE];
        be[MAGIC_OFFSET..MAGIC_OFFSET + 8].copy_from_slice(&THIN_SUPERBLOCK_MAGIC.to_be_bytes());
        assert_eq!(classify(&be), MetadataContent::Foreign);
        // Magic one byte off.
        let mut off = vec![0u8; SUPERBLOCK_SIZE];
        off[MAGIC_OFFSET + 1..MAGIC_OFFSET + 9]
            .copy_from_slice(&THIN_SUPERBLOCK_MAGIC.to_le_bytes());
        assert_eq!(classify(&off), MetadataContent::Foreign);
        // A truncated buffer with non-zero bytes but no room for the fields.
        assert_eq!(classify(&[1, 2, 3]), MetadataContent::Foreign);
    }

    #[test]
    fn inspect_and_wipe_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let mut content = superblock(3, 0, 256);
        content.extend_from_slice(&[0x55u8; 8192]);
        std::fs::write(&path, &content).unwrap();
        assert!(matches!(
            inspect(&path).unwrap(),
            MetadataContent::ThinPool(SuperblockSummary {
                transaction_id: 3,
                ..
            })
        ));
        wipe(&path).unwrap();
        assert_eq!(inspect(&path).unwrap(), MetadataContent::Zeroed);
        // Only the superblock block is wiped.
        let after = std::fs::read(&path).unwrap();
        assert_eq!(after.len(), content.len());
        assert!(after[SUPERBLOCK_SIZE..].iter().all(|&b| b == 0x55));
    }

    #[test]
    fn inspect_missing_path_names_it() {
        let err = inspect(Path::new("/nonexistent/meta.img")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/meta.img"), "{err}");
    }
}
