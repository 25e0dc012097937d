//! Writing the planned table: `mbrman` for MBR, `gpt` (with a protective MBR) for GPT. Before
//! the table goes down, the first MiB of the disk, the last 33 sectors (where a stale GPT backup
//! would sit) and the first 64 KiB of each new partition are zeroed, so neither old tables nor
//! old signatures (a stale dm-thin superblock on the metadata partition) survive.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{io_err, Result, SetupError};
use crate::layout::{Layout, TableKind, ALIGN_BYTES};

/// MBR partition type of both partitions: Linux.
pub const MBR_TYPE_LINUX: u8 = 0x83;

/// GPT partition names.
pub const GPT_NAMES: [&str; 2] = ["convoy-data", "convoy-metadata"];

/// Bytes zeroed at the start of each new partition.
const WIPE_PARTITION_BYTES: u64 = 64 * 1024;

fn zero(disk: &mut File, offset: u64, len: u64) -> std::io::Result<()> {
    disk.seek(SeekFrom::Start(offset))?;
    disk.write_all(&vec![0u8; len as usize])
}

/// A disk signature for the MBR that differs between runs (it only needs to be unlikely to
/// collide with another disk's in the same machine).
fn disk_signature() -> [u8; 4] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    (nanos ^ std::process::id().rotate_left(16)).to_le_bytes()
}

/// Writes `layout` to `disk` (opened read-write on the whole device) and flushes it.
pub fn write(disk: &mut File, device: &Path, disk_bytes: u64, layout: &Layout) -> Result<()> {
    let sector = layout.sector_bytes;
    let wipe = |disk: &mut File| -> std::io::Result<()> {
        zero(disk, 0, ALIGN_BYTES.min(disk_bytes))?;
        let tail = (33 * sector).min(disk_bytes);
        zero(disk, disk_bytes - tail, tail)?;
        for extent in [layout.data, layout.metadata] {
            zero(
                disk,
                extent.start * sector,
                WIPE_PARTITION_BYTES.min(extent.sectors * sector),
            )?;
        }
        disk.sync_all()
    };
    wipe(disk).map_err(io_err(device, "wipe the old table area of"))?;
    match layout.kind {
        TableKind::Mbr => write_mbr(disk, device, layout)?,
        TableKind::Gpt => write_gpt(disk, device, disk_bytes, layout)?,
    }
    disk.sync_all()
        .map_err(io_err(device, "flush the partition table of"))
}

fn write_mbr(disk: &mut File, device: &Path, layout: &Layout) -> Result<()> {
    let table_error = |message: String| SetupError::Table {
        kind: "MBR",
        device: device.to_path_buf(),
        message,
    };
    let mut mbr = mbrman::MBR::new_from(disk, layout.sector_bytes as u32, disk_signature())
        .map_err(|e| table_error(e.to_string()))?;
    for (index, extent) in [(1, layout.data), (2, layout.metadata)] {
        let (Ok(starting_lba), Ok(sectors)) =
            (u32::try_from(extent.start), u32::try_from(extent.sectors))
        else {
            return Err(table_error(format!(
                "partition {index} does not fit MBR's 32-bit addresses"
            )));
        };
        mbr[index] = mbrman::MBRPartitionEntry {
            boot: mbrman::BOOT_INACTIVE,
            first_chs: mbrman::CHS::empty(),
            sys: MBR_TYPE_LINUX,
            last_chs: mbrman::CHS::empty(),
            starting_lba,
            sectors,
        };
    }
    disk.seek(SeekFrom::Start(0))
        .map_err(io_err(device, "seek on"))?;
    mbr.write_into(disk).map_err(|e| table_error(e.to_string()))
}

fn write_gpt(disk: &mut File, device: &Path, disk_bytes: u64, layout: &Layout) -> Result<()> {
    let table_error = |message: String| SetupError::Table {
        kind: "GPT",
        device: device.to_path_buf(),
        message,
    };
    let block_size = match layout.sector_bytes {
        512 => gpt::disk::LogicalBlockSize::Lb512,
        4096 => gpt::disk::LogicalBlockSize::Lb4096,
        other => {
            return Err(table_error(format!(
                "unsupported logical sector size {other}"
            )))
        }
    };
    let last_lba = disk_bytes / layout.sector_bytes - 1;
    let protective =
        gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(last_lba).unwrap_or(u32::MAX));
    protective
        .overwrite_lba0(disk)
        .map_err(|e| table_error(format!("protective MBR: {e}")))?;
    let mut gpt_disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(block_size)
        .create_from_device(&mut *disk, None)
        .map_err(|e| table_error(e.to_string()))?;
    for (id, name, extent) in [
        (1, GPT_NAMES[0], layout.data),
        (2, GPT_NAMES[1], layout.metadata),
    ] {
        gpt_disk
            .add_partition_at(
                name,
                id,
                extent.start,
                extent.sectors,
                gpt::partition_types::LINUX_FS,
                0,
            )
            .map_err(|e| table_error(format!("partition {id} ({name}): {e}")))?;
    }
    gpt_disk.write().map_err(|e| table_error(e.to_string()))?;
    Ok(())
}
