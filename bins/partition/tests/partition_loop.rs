//! `convoy-partition` on real block devices: sparse files attached as loop devices
//! (`losetup -P`), checked with `sfdisk -d` and the kernel's sysfs view. Needs root, `losetup`
//! and `sfdisk` (CI runs as root); without them the tests fail loudly instead of passing.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use convoy_testkit::{LoopDevice, LoopOptions};

const HELPER: &str = env!("CARGO_BIN_EXE_convoy-partition");

/// Loop devices are a shared resource: attach and use them one test at a time.
static LOOP_LOCK: Mutex<()> = Mutex::new(());

fn require_environment() {
    assert!(
        convoy_testkit::is_root(),
        "these tests need root (loop devices, partition tables); run them as root"
    );
    for tool in ["losetup", "sfdisk"] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` is missing: install util-linux / fdisk to run these tests"
        );
    }
}

/// A sparse file attached as a loop device (the test rig's `LoopDevice`, in a temp dir of its
/// own); detached (and the file removed) on drop.
struct Disk {
    path: PathBuf,
    _device: LoopDevice,
}

/// Bytes in a `truncate -s` size: a number with an optional binary suffix (`48M`, `1G`, `3T`).
fn size_bytes(size: &str) -> u64 {
    let (digits, shift) = match size.as_bytes().last() {
        Some(b'K') => (&size[..size.len() - 1], 10),
        Some(b'M') => (&size[..size.len() - 1], 20),
        Some(b'G') => (&size[..size.len() - 1], 30),
        Some(b'T') => (&size[..size.len() - 1], 40),
        _ => (size, 0),
    };
    digits.parse::<u64>().expect("a size") << shift
}

impl Disk {
    fn new(size: &str, partscan: bool) -> Disk {
        let options = LoopOptions {
            partscan,
            direct_io: false,
        };
        let device = LoopDevice::in_temp_dir(size_bytes(size), options);
        Disk {
            path: device.path().to_path_buf(),
            _device: device,
        }
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// The kernel's size of partition `n`, in 512-byte sectors.
    fn kernel_partition_size(&self, n: u32) -> u64 {
        let name = self.name();
        let file = format!("/sys/block/{name}/{name}p{n}/size");
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .trim()
            .parse()
            .unwrap()
    }

    fn sfdisk_dump(&self) -> String {
        let out = Command::new("sfdisk")
            .arg("-d")
            .arg(&self.path)
            .output()
            .expect("run sfdisk");
        assert!(
            out.status.success(),
            "sfdisk -d: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn helper(args: &[&str], device: &Path) -> Output {
    Command::new(HELPER)
        .args(args)
        .arg(device)
        .output()
        .expect("run convoy-partition")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `sfdisk -d` line of partition `n`: (start, size, type).
fn sfdisk_partition(dump: &str, device: &str, n: u32) -> (u64, u64, String) {
    let prefix = format!("{device}p{n} :");
    let line = dump
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{dump}"));
    let field = |key: &str| {
        line.split(',')
            .find_map(|f| {
                f.trim()
                    .trim_start_matches(&prefix)
                    .trim()
                    .strip_prefix(key)
            })
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    };
    (
        field("start=").parse().unwrap(),
        field("size=").parse().unwrap(),
        field("type="),
    )
}

#[test]
fn dry_run_prints_the_seed_figures() {
    let _lock = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    require_environment();
    let disk = Disk::new("107374182400", true);
    let out = helper(&[], &disk.path);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let shown = disk.path.display();
    let expected = format!(
        "{shown} size is 107374182400 bytes\n\
         Maximum volume and snapshot counts is 10000\n\
         Metadata Device size would be 42627072 bytes\n\
         Data Device size would be 107331555328 bytes\n\
         Data Device would be 209631944 sectors\n"
    );
    assert!(stdout.starts_with(&expected), "{stdout}");
    assert!(stdout.contains("Dry run: nothing written"), "{stdout}");
    assert_eq!(disk.kernel_partition_count(), 0, "a dry run must not write");
    let dump = Command::new("sfdisk")
        .arg("-d")
        .arg(&disk.path)
        .output()
        .unwrap();
    assert!(!dump.status.success(), "a dry run left a partition table");

    let fewer = helper(&["-m", "100"], &disk.path);
    // 4096 * (1 + floor(2 * 209715200 / 4096 / 252) + 100) = 4096 * 507
    assert!(text(&fewer.stdout).contains("Maximum volume and snapshot counts is 100\n"));
    assert!(
        text(&fewer.stdout).contains("Metadata Device size would be 2076672 bytes\n"),
        "{}",
        text(&fewer.stdout)
    );
}

impl Disk {
    fn kernel_partition_count(&self) -> usize {
        let name = self.name();
        std::fs::read_dir(format!("/sys/block/{name}"))
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{name}p"))
            })
            .count()
    }
}

#[test]
fn write_to_disk_creates_data_then_metadata() {
    let _lock = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    require_environment();
    let disk = Disk::new("1G", true);
    let out = helper(&["--write-to-disk"], &disk.path);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));

    // Figures for 1 GiB: metadata 4096 * (1 + floor(2 * 2097152 / 4096 / 252) + 10000).
    let metadata_bytes = 4096 * (1 + 2 * 2_097_152 / 4096 / 252 + 10_000);
    assert!(
        stdout.contains(&format!(
            "Metadata Device size would be {metadata_bytes} bytes\n"
        )),
        "{stdout}"
    );

    let dump = disk.sfdisk_dump();
    let device = disk.path.display().to_string();
    assert!(dump.contains("label: dos"), "{dump}");
    let (data_start, data_size, data_type) = sfdisk_partition(&dump, &device, 1);
    let (meta_start, meta_size, meta_type) = sfdisk_partition(&dump, &device, 2);
    assert_eq!((data_start, data_type.as_str()), (2048, "83"));
    assert_eq!(meta_type, "83");
    assert_eq!(
        data_start + data_size,
        meta_start,
        "data runs up to the metadata partition"
    );
    assert_eq!(
        meta_start + meta_size,
        2_097_152,
        "metadata ends at the end of the disk"
    );
    assert_eq!(meta_start % 2048, 0, "metadata starts on a 1 MiB boundary");
    assert!(
        meta_size * 512 >= metadata_bytes,
        "metadata partition smaller than the estimate"
    );
    assert!(meta_size * 512 < metadata_bytes + (1 << 20));

    assert_eq!(disk.kernel_partition_size(1), data_size);
    assert_eq!(disk.kernel_partition_size(2), meta_size);
    let name = disk.name();
    let command = format!(
        "convoy daemon --drivers devicemapper --driver-opts dm.datadev=/dev/{name}p1 --driver-opts dm.metadatadev=/dev/{name}p2"
    );
    assert!(stdout.trim_end().ends_with(&command), "{stdout}");
    assert!(Path::new(&format!("/dev/{name}p1")).exists());

    // Partitioned now: a second run refuses, dry run or not.
    for args in [&[][..], &["--write-to-disk"][..]] {
        let again = helper(args, &disk.path);
        assert_eq!(again.status.code(), Some(1));
        let stderr = text(&again.stderr);
        assert!(
            stderr.contains(&format!(
                "{device} already partitioned, can't start partition"
            )),
            "{stderr}"
        );
    }
}

#[test]
fn gpt_beyond_two_tib() {
    let _lock = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    require_environment();
    let disk = Disk::new("3T", true);
    let out = helper(&["--write-to-disk", "--max-thins", "500"], &disk.path);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let dump = disk.sfdisk_dump();
    assert!(dump.contains("label: gpt"), "{dump}");
    let device = disk.path.display().to_string();
    let (data_start, data_size, _) = sfdisk_partition(&dump, &device, 1);
    let (meta_start, meta_size, _) = sfdisk_partition(&dump, &device, 2);
    let sectors = 3u64 << 31;
    assert_eq!(data_start, 2048);
    assert_eq!(data_start + data_size, meta_start);
    assert_eq!(
        meta_start + meta_size,
        sectors - 33,
        "up to the GPT backup area"
    );
    assert!(
        dump.contains("name=\"convoy-data\"") && dump.contains("name=\"convoy-metadata\""),
        "{dump}"
    );
    assert_eq!(disk.kernel_partition_size(1), data_size);
    assert_eq!(disk.kernel_partition_size(2), meta_size);
}

#[test]
fn refuses_a_disk_partitioned_by_another_tool() {
    let _lock = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    require_environment();
    let disk = Disk::new("256M", true);
    let mut sfdisk = Command::new("sfdisk")
        .arg("--quiet")
        .arg(&disk.path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run sfdisk");
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"start=2048, size=8192, type=83\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let out = helper(&[], &disk.path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} already partitioned, can't start partition",
            disk.path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn refuses_a_too_small_disk() {
    let _lock = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    require_environment();
    let disk = Disk::new("48M", true);
    let out = helper(&["--write-to-disk"], &disk.path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("is too small: 50331648 bytes"), "{stderr}");
    assert_eq!(disk.kernel_partition_count(), 0);
    // With fewer thins the metadata shrinks and the same disk is enough.
    let smaller = helper(&["--max-thins", "100"], &disk.path);
    assert!(smaller.status.success(), "{}", text(&smaller.stderr));
}

#[test]
fn refuses_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.vol");
    File::create(&file).unwrap().set_len(1 << 30).unwrap();
    let out = helper(&["--write-to-disk"], &file);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("is a regular file, not a block device"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&file)
            .unwrap()
            .iter()
            .filter(|b| **b != 0)
            .count(),
        0,
        "file was written"
    );
    let missing = helper(&[], &dir.path().join("nope"));
    assert!(
        text(&missing.stderr).contains("cannot find device"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn refuses_a_busy_disk() {
    let _lock = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    require_environment();
    let disk = Disk::new("256M", true);
    // An exclusive opener (what a mount or device-mapper holds) makes the disk busy.
    let claim = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&disk.path)
        .unwrap();
    let out = helper(&["--write-to-disk"], &disk.path);
    drop(claim);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("is busy"), "{stderr}");
    assert_eq!(disk.kernel_partition_count(), 0);
}

#[test]
fn refuses_a_disk_holding_a_filesystem() {
    let _lock = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    require_environment();
    let disk = Disk::new("256M", true);
    {
        let mut dev = OpenOptions::new().write(true).open(&disk.path).unwrap();
        dev.seek(SeekFrom::Start(1080)).unwrap();
        dev.write_all(&[0x53, 0xef]).unwrap();
        dev.sync_all().unwrap();
    }
    let out = helper(&[], &disk.path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("is not empty: it holds an ext2/3/4 filesystem"),
        "{stderr}"
    );
}

#[test]
fn refuses_a_loop_device_without_partition_scanning() {
    let _lock = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    require_environment();
    let disk = Disk::new("256M", false);
    let out = helper(&["--write-to-disk"], &disk.path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("losetup -P"), "{stderr}");
    let dump = Command::new("sfdisk")
        .arg("-d")
        .arg(&disk.path)
        .output()
        .unwrap();
    assert!(!dump.status.success(), "a table was written");
}

#[test]
fn refuses_a_partition() {
    let _lock = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    require_environment();
    let disk = Disk::new("256M", true);
    let out = helper(&["--write-to-disk", "-m", "10"], &disk.path);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let part = PathBuf::from(format!("/dev/{}p1", disk.name()));
    let again = helper(&[], &part);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("is partition 1 of"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn refuses_a_mounted_disk() {
    let _lock = LOOP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    require_environment();
    let disk = Disk::new("256M", true);
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&disk.path)
        .output()
        .expect("run mkfs.ext4");
    assert!(mkfs.status.success(), "mkfs.ext4: {}", text(&mkfs.stderr));
    let mount_point = tempfile::tempdir().unwrap();
    let mount = Command::new("mount")
        .arg(&disk.path)
        .arg(mount_point.path())
        .output()
        .expect("run mount");
    assert!(mount.status.success(), "mount: {}", text(&mount.stderr));
    let out = helper(&["--write-to-disk"], &disk.path);
    let umount = Command::new("umount")
        .arg(mount_point.path())
        .status()
        .expect("run umount");
    assert!(umount.success());
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("is mounted on {}", mount_point.path().display())),
        "{stderr}"
    );
}
