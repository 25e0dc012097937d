//! What is already written on a disk: a partition table (MBR, GPT primary or backup) or the
//! signature of a filesystem, swap area, LVM, LUKS or dm-thin metadata. The partition helper
//! only takes empty disks.

use std::io::{self, Read, Seek, SeekFrom};

/// Bytes read from the start of the disk: enough for every signature below.
const HEAD_BYTES: usize = 128 * 1024;

/// A recognised signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// What it is, as a phrase ("an ext2/3/4 filesystem").
    pub what: &'static str,
    /// Its byte offset on the disk.
    pub offset: u64,
}

/// Fixed-offset magic numbers of the common non-partition contents.
const MAGICS: [(&str, u64, &[u8]); 10] = [
    ("an ext2/3/4 filesystem", 1080, &[0x53, 0xef]),
    ("an XFS filesystem", 0, b"XFSB"),
    ("a btrfs filesystem", 65_600, b"_BHRfS_M"),
    ("a LUKS volume", 0, b"LUKS\xba\xbe"),
    ("an LVM physical volume", 512 + 24, b"LVM2 001"),
    ("an LVM physical volume", 24, b"LVM2 001"),
    ("a swap area", 4086, b"SWAPSPACE2"),
    ("a swap area", 65_526, b"SWAPSPACE2"),
    // dm-thin metadata: the superblock's magic 27022010 (little-endian u64 at byte 32).
    (
        "dm-thin pool metadata",
        32,
        &[0xba, 0x52, 0x9c, 0x01, 0, 0, 0, 0],
    ),
    (
        "a bcache device",
        4096 + 24,
        &[0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca],
    ),
];

fn has_at(buf: &[u8], offset: u64, magic: &[u8]) -> bool {
    let start = offset as usize;
    buf.get(start..start + magic.len()) == Some(magic)
}

/// Reads the first [`HEAD_BYTES`] (or less on a small disk) and the last logical sector.
fn read_ends<D: Read + Seek>(disk: &mut D, sector: u64) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let size = disk.seek(SeekFrom::End(0))?;
    let mut head = vec![0u8; HEAD_BYTES.min(size as usize)];
    disk.seek(SeekFrom::Start(0))?;
    disk.read_exact(&mut head)?;
    let mut tail = vec![0u8; sector.min(size) as usize];
    disk.seek(SeekFrom::Start(size - tail.len() as u64))?;
    disk.read_exact(&mut tail)?;
    Ok((head, tail))
}

/// Describes the partition table on `disk`, if any: an MBR with a used entry, or a GPT header
/// (primary at LBA 1, or backup at the last LBA). `sector` is the logical sector size.
pub fn find_partition_table<D: Read + Seek>(
    disk: &mut D,
    sector: u64,
) -> io::Result<Option<String>> {
    let (head, tail) = read_ends(disk, sector)?;
    if has_at(&head, sector, b"EFI PART") {
        return Ok(Some("a GPT partition table".into()));
    }
    if has_at(&tail, 0, b"EFI PART") {
        return Ok(Some("a backup GPT header at the end of the disk".into()));
    }
    if has_at(&head, 510, &[0x55, 0xaa]) {
        let used: Vec<usize> = (0..4)
            .filter(|i| {
                let entry = &head[446 + 16 * i..446 + 16 * (i + 1)];
                entry[4] != 0 && entry[12..16] != [0, 0, 0, 0]
            })
            .map(|i| i + 1)
            .collect();
        if !used.is_empty() {
            let list: Vec<String> = used.iter().map(|n| n.to_string()).collect();
            return Ok(Some(format!(
                "an MBR partition table with entries {}",
                list.join(", ")
            )));
        }
    }
    Ok(None)
}

/// Finds the first known filesystem-like signature on `disk`.
pub fn find_signature<D: Read + Seek>(disk: &mut D, sector: u64) -> io::Result<Option<Found>> {
    let (head, _) = read_ends(disk, sector)?;
    Ok(MAGICS
        .iter()
        .find(|(_, offset, magic)| has_at(&head, *offset, magic))
        .map(|(what, offset, _)| Found {
            what,
            offset: *offset,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn disk_with(offset: usize, bytes: &[u8]) -> Cursor<Vec<u8>> {
        let mut data = vec![0u8; 1 << 20];
        data[offset..offset + bytes.len()].copy_from_slice(bytes);
        Cursor::new(data)
    }

    #[test]
    fn empty_disk_has_nothing() {
        let mut disk = Cursor::new(vec![0u8; 1 << 20]);
        assert_eq!(find_partition_table(&mut disk, 512).unwrap(), None);
        assert_eq!(find_signature(&mut disk, 512).unwrap(), None);
    }

    #[test]
    fn tables() {
        let mut gpt = disk_with(512, b"EFI PART");
        assert!(find_partition_table(&mut gpt, 512)
            .unwrap()
            .unwrap()
            .contains("GPT"));
        let mut backup = disk_with((1 << 20) - 512, b"EFI PART");
        assert!(find_partition_table(&mut backup, 512)
            .unwrap()
            .unwrap()
            .contains("backup"));
        let mut mbr = disk_with(510, &[0x55, 0xaa]);
        assert_eq!(
            find_partition_table(&mut mbr, 512).unwrap(),
            None,
            "signature alone"
        );
        let entry2 = 446 + 16;
        mbr.get_mut()[entry2 + 4] = 0x83;
        mbr.get_mut()[entry2 + 12] = 8;
        assert_eq!(
            find_partition_table(&mut mbr, 512).unwrap().as_deref(),
            Some("an MBR partition table with entries 2")
        );
    }

    #[test]
    fn filesystems() {
        let mut ext = disk_with(1080, &[0x53, 0xef]);
        assert_eq!(
            find_signature(&mut ext, 512).unwrap().unwrap().what,
            "an ext2/3/4 filesystem"
        );
        let mut thin = disk_with(32, &27_022_010u64.to_le_bytes());
        assert_eq!(
            find_signature(&mut thin, 512).unwrap().unwrap().what,
            "dm-thin pool metadata"
        );
    }
}
