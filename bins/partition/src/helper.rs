//! The partition helper's whole run (the binary only parses flags): inspect the device, print
//! the seed's figures, refuse anything that is not an empty, unused whole disk, plan the two
//! partitions and — with `--write-to-disk` — write them, have the kernel re-read the table,
//! check the kernel's view, and print the daemon command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::device::BlockDevice;
use crate::error::{io_err, Result, SetupError};
use crate::layout::{self, Layout};
use crate::sizing::{Figures, SECTOR_BYTES};
use crate::{inuse, reread, signatures, table};

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The whole disk to partition.
    pub device: PathBuf,
    /// The maximum number of volumes plus snapshots to size the metadata for.
    pub max_thins: u64,
    /// Write the table (otherwise a dry run).
    pub write_to_disk: bool,
}

/// What a successful run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed's figures.
    pub figures: Figures,
    /// The planned (or written) partitions.
    pub layout: Layout,
    /// The data and metadata partition devices, when written.
    pub partitions: Option<(PathBuf, PathBuf)>,
}

/// The daemon command line for a data and a metadata device.
pub fn daemon_command(data: &Path, metadata: &Path) -> String {
    format!(
        "convoy daemon --drivers devicemapper --driver-opts dm.datadev={} --driver-opts dm.metadatadev={}",
        data.display(),
        metadata.display()
    )
}

/// Refuses a disk that has partitions (kernel view or on-disk table), cannot have any, is in
/// use, or holds data.
fn check_empty(device: &BlockDevice) -> Result<()> {
    let path = &device.path;
    let known = device.kernel_partitions();
    if !known.is_empty() {
        let names: Vec<&str> = known.iter().map(|p| p.name.as_str()).collect();
        return Err(SetupError::AlreadyPartitioned {
            device: path.clone(),
            detail: format!("the kernel lists {}", names.join(", ")),
        });
    }
    inuse::check_unused(device)?;
    let mut disk = std::fs::File::open(path).map_err(io_err(path, "read"))?;
    if let Some(table) = signatures::find_partition_table(&mut disk, device.logical_sector)
        .map_err(io_err(path, "read"))?
    {
        return Err(SetupError::AlreadyPartitioned {
            device: path.clone(),
            detail: format!("it holds {table}"),
        });
    }
    if let Some(found) = signatures::find_signature(&mut disk, device.logical_sector)
        .map_err(io_err(path, "read"))?
    {
        return Err(SetupError::NotEmpty {
            device: path.clone(),
            what: found.what,
            offset: found.offset,
        });
    }
    if device.partition_scan_disabled() {
        return Err(SetupError::InvalidFigure(format!(
            "{} cannot hold partitions: the kernel does not scan it for them (a loop device must be \
             attached with `losetup -P`; detach it and attach it again with -P)",
            path.display()
        )));
    }
    Ok(())
}

/// Waits (up to 10 s) for the kernel — devtmpfs, or udev where it runs — to create `path`.
fn wait_for_node(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Checks that the kernel now lists exactly the planned partitions; says what differs if not.
fn kernel_view_matches(device: &BlockDevice, layout: &Layout) -> std::result::Result<(), String> {
    let to_sectors = |extent: layout::Extent| {
        (
            extent.start * layout.sector_bytes / SECTOR_BYTES,
            extent.sectors * layout.sector_bytes / SECTOR_BYTES,
        )
    };
    let expected = [
        (1, to_sectors(layout.data)),
        (2, to_sectors(layout.metadata)),
    ];
    let known = device.kernel_partitions();
    for (number, (start, size)) in expected {
        match known.iter().find(|p| p.number == number) {
            Some(p) if p.start_sectors == start && p.size_sectors == size => {}
            Some(p) => {
                return Err(format!(
                    "the kernel sees partition {number} at sector {} with {} sectors, not at {start} with {size}",
                    p.start_sectors, p.size_sectors
                ))
            }
            None => return Err(format!("the kernel does not list partition {number}")),
        }
    }
    Ok(())
}

/// Runs the helper, printing its report to `out`.
pub fn run(options: &Options, out: &mut dyn Write) -> Result<Outcome> {
    let path = &options.device;
    let device = BlockDevice::open(path)?;
    let figures = Figures::new(device.size_bytes, options.max_thins)?;
    let print = |out: &mut dyn Write, text: String| {
        writeln!(out, "{text}").map_err(io_err(Path::new("standard output"), "write to"))
    };
    let shown = path.display();
    print(
        out,
        format!("{shown} size is {} bytes", figures.device_bytes),
    )?;
    print(
        out,
        format!(
            "Maximum volume and snapshot counts is {}",
            figures.max_thins
        ),
    )?;
    print(
        out,
        format!(
            "Metadata Device size would be {} bytes",
            figures.metadata_bytes
        ),
    )?;
    print(
        out,
        format!("Data Device size would be {} bytes", figures.data_bytes),
    )?;
    print(
        out,
        format!("Data Device would be {} sectors", figures.data_sectors),
    )?;

    check_empty(&device)?;
    let layout = layout::plan(
        path,
        device.size_bytes,
        device.logical_sector,
        figures.metadata_bytes,
    )?;
    let data_path = device.partition_path(1);
    let metadata_path = device.partition_path(2);
    print(
        out,
        format!(
            "Partition table: {} ({}-byte sectors; partitions aligned to 1 MiB)",
            layout.kind.name(),
            layout.sector_bytes
        ),
    )?;
    for (role, partition, extent) in [
        ("data", &data_path, layout.data),
        ("metadata", &metadata_path, layout.metadata),
    ] {
        print(
            out,
            format!(
                "  {} ({role}): start sector {}, {} sectors, {} bytes",
                partition.display(),
                extent.start,
                extent.sectors,
                layout.bytes(extent)
            ),
        )?;
    }
    if !options.write_to_disk {
        print(
            out,
            format!(
                "Dry run: nothing written. Run again with --write-to-disk to partition {shown}"
            ),
        )?;
        return Ok(Outcome {
            figures,
            layout,
            partitions: None,
        });
    }

    print(out, format!("Start partitioning of {shown}"))?;
    {
        let mut disk = inuse::open_exclusive(path, true)?;
        table::write(&mut disk, path, device.size_bytes, &layout)?;
    }
    let disk = std::fs::File::open(path).map_err(io_err(path, "reopen"))?;
    reread::reread_partitions(&disk, path, || kernel_view_matches(&device, &layout))?;
    for node in [&data_path, &metadata_path] {
        if !wait_for_node(node) {
            return Err(SetupError::Reread {
                device: path.clone(),
                message: format!(
                    "the kernel lists the partitions but {} did not appear",
                    node.display()
                ),
            });
        }
    }
    print(out, format!("Complete the partition of {shown}"))?;
    print(out, "Now you can start Convoy Daemon using:".to_string())?;
    print(out, String::new())?;
    print(out, daemon_command(&data_path, &metadata_path))?;
    Ok(Outcome {
        figures,
        layout,
        partitions: Some((data_path, metadata_path)),
    })
}
