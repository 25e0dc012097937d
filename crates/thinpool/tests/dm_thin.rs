//! VM tier, thin devices: lifecycle and errors, snapshot of a mounted origin under a writer,
//! resume after a failed snapshot message, a full pool, zeroing, 100 create/snapshot/delete
//! cycles. Needs a dm-thin kernel: `cargo xtask test`.

mod common;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{is_block_node_for, mkfs_ext4, read_at, write_at, Fixture, Mount, MIB};
use convoy_thinpool::{
    BlockSize, BlockZeroing, DataBlocks, Error, IdAllocator, NoSpacePolicy, PoolMode, Sectors,
    ThinId, ThinPool,
};

fn id(n: u64) -> ThinId {
    ThinId::new(n).unwrap()
}

fn small_blocks() -> BlockSize {
    BlockSize::new(Sectors(128)).unwrap()
}

fn sectors(bytes: u64) -> Sectors {
    Sectors(bytes / 512)
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_thin_lifecycle_and_errors() {
    let fx = Fixture::new("life", 64 * MIB, 8 * MIB);
    let pool = ThinPool::create(fx.config()).unwrap();
    pool.create_thin(id(1)).unwrap();
    let err = pool.create_thin(id(1)).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains("1 in pool ctp-life"), "{err}");

    let dev = pool
        .activate(id(1), "ctp-life-a", sectors(16 * MIB))
        .unwrap();
    assert_eq!(dev.path, Path::new("/dev/mapper/ctp-life-a"));
    assert!(is_block_node_for(&dev.path, dev.device));
    assert!(is_block_node_for(&dev.dm_path(), dev.device));
    write_at(&dev.path, MIB, b"hello thin").unwrap();
    assert_eq!(read_at(&dev.path, MIB, 10), b"hello thin");
    assert!(*pool.thin_usage("ctp-life-a").unwrap().mapped > 0);

    // Activation is idempotent for the same id and size; anything else under the name is not.
    assert_eq!(
        pool.activate(id(1), "ctp-life-a", sectors(16 * MIB))
            .unwrap(),
        dev
    );
    for (i, name, size) in [
        (1, "ctp-life-a", sectors(8 * MIB)),
        (1, fx.name.as_str(), sectors(MIB)),
    ] {
        let err = pool.activate(id(i), name, size).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{name}: {err}");
    }
    let err = pool
        .activate(id(1), "ctp-life-twice", sectors(16 * MIB))
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains("active as ctp-life-a"), "{err}");
    let err = pool
        .activate(id(2), "ctp-life-b", sectors(MIB))
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(!common::dm_names().contains(&"ctp-life-b".to_owned()));
    assert!(matches!(
        pool.activate(id(1), "bad name", sectors(MIB)),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        pool.activate(id(1), "ctp-life-c", Sectors(0)),
        Err(Error::InvalidSize { .. })
    ));

    // Busy while active or open.
    let err = pool.delete(id(1)).unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    let holder = File::open(&dev.path).unwrap();
    let err = pool.deactivate("ctp-life-a").unwrap_err();
    assert!(
        matches!(err, Error::Busy { ref device, .. } if device == "ctp-life-a"),
        "{err}"
    );
    drop(holder);

    pool.deactivate("ctp-life-a").unwrap();
    assert!(!dev.path.exists());
    assert!(matches!(
        pool.deactivate("ctp-life-a"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        pool.deactivate(&fx.name),
        Err(Error::NotFound { .. })
    ));
    pool.delete(id(1)).unwrap();
    let err = pool.delete(id(1)).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");

    // The highest id the kernel allows works.
    pool.create_thin(ThinId::MAX).unwrap();
    let top = pool
        .activate(ThinId::MAX, "ctp-life-max", sectors(MIB))
        .unwrap();
    assert_eq!(pool.list_active().unwrap(), vec![top]);
    pool.deactivate("ctp-life-max").unwrap();
    pool.delete(ThinId::MAX).unwrap();
}

/// Deterministic content of writer file `i`.
fn content(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const FILE_LEN: usize = 256 * 1024;

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_snapshot_of_mounted_origin_under_writer() {
    let fx = Fixture::new("snapw", 512 * MIB, 16 * MIB);
    let pool = ThinPool::create(fx.config()).unwrap();
    pool.create_thin(id(1)).unwrap();
    let size = sectors(256 * MIB);
    let origin = pool.activate(id(1), "ctp-snapw-origin", size).unwrap();
    mkfs_ext4(&origin.path);
    let mnt = Mount::new(&origin.path, &fx.subdir("origin"), "noatime");

    // Files synced before the snapshot.
    std::fs::create_dir(mnt.dir.join("a")).unwrap();
    for i in 0..16 {
        std::fs::write(mnt.dir.join(format!("a/{i}")), content(1000 + i, FILE_LEN)).unwrap();
    }
    common::run("sync", &[]);

    // A writer that keeps creating files, each written in 4 KiB pieces and fsynced.
    std::fs::create_dir(mnt.dir.join("b")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, started, completed) = (stop.clone(), started.clone(), completed.clone());
        let dir = mnt.dir.join("b");
        thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                started.store(i + 1, Ordering::SeqCst);
                let mut f = File::create(dir.join(i.to_string())).unwrap();
                for chunk in content(i, FILE_LEN).chunks(4096) {
                    f.write_all(chunk).unwrap();
                }
                f.sync_all().unwrap();
                completed.store(i + 1, Ordering::SeqCst);
                i += 1;
            }
        })
    };
    while completed.load(Ordering::SeqCst) < 3 {
        thread::sleep(Duration::from_millis(10));
    }
    let completed_before = completed.load(Ordering::SeqCst);
    pool.create_snap(id(2), id(1)).unwrap();
    let started_after = started.load(Ordering::SeqCst);
    // The origin was resumed: the writer goes on.
    while completed.load(Ordering::SeqCst) < started_after + 2 {
        thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    // The snapshot is a clean filesystem...
    let snap = pool.activate(id(2), "ctp-snapw-snap", size).unwrap();
    let fsck = Command::new("e2fsck")
        .args(["-f", "-n"])
        .arg(&snap.path)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck of the snapshot: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    // ...holding exactly what the origin held at that moment.
    let smnt = Mount::new(&snap.path, &fx.subdir("snap"), "ro");
    for i in 0..16 {
        let name = format!("a/{i}");
        assert_eq!(
            std::fs::read(smnt.dir.join(&name)).unwrap(),
            std::fs::read(mnt.dir.join(&name)).unwrap(),
            "{name} differs"
        );
    }
    for i in 0..completed_before {
        let got = std::fs::read(smnt.dir.join(format!("b/{i}"))).unwrap();
        assert!(
            got == content(i, FILE_LEN),
            "b/{i} (fsynced before the snapshot) differs"
        );
    }
    for entry in std::fs::read_dir(smnt.dir.join("b")).unwrap() {
        let entry = entry.unwrap();
        let i: u64 = entry.file_name().to_str().unwrap().parse().unwrap();
        assert!(i < started_after, "b/{i} was started after the snapshot");
        let got = std::fs::read(entry.path()).unwrap();
        assert!(
            content(i, FILE_LEN).starts_with(&got),
            "b/{i} in the snapshot is not a prefix of what was written"
        );
    }
    let status = pool.status().unwrap();
    assert_eq!(status.mode, PoolMode::ReadWrite);
    drop(smnt);
    drop(mnt);
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_failed_snapshot_resumes_origin() {
    let fx = Fixture::new("snapfail", 64 * MIB, 8 * MIB);
    let pool = ThinPool::create(fx.config()).unwrap();
    pool.create_thin(id(1)).unwrap();
    pool.create_thin(id(2)).unwrap();
    let origin = pool
        .activate(id(1), "ctp-snapfail-o", sectors(4 * MIB))
        .unwrap();

    // The origin is suspended, the message fails (id 2 exists): the origin must be resumed.
    let err = pool.create_snap(id(2), id(1)).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    let active = pool.list_active().unwrap();
    assert_eq!(active.len(), 1);
    assert!(!active[0].suspended, "origin left suspended");
    write_at(&origin.path, 0, b"still writable").unwrap();

    let err = pool.create_snap(id(5), id(9)).unwrap_err();
    assert!(
        matches!(err, Error::NotFound { ref name, .. } if name.starts_with("9 ")),
        "{err}"
    );
    assert!(!pool.list_active().unwrap()[0].suspended);

    // A device left suspended (a crash mid-snapshot) is found and resumed.
    common::run("dmsetup", &["suspend", "ctp-snapfail-o"]);
    assert!(pool.list_active().unwrap()[0].suspended);
    assert_eq!(pool.resume_suspended().unwrap(), ["ctp-snapfail-o"]);
    assert!(!pool.list_active().unwrap()[0].suspended);

    // A snapshot of an inactive origin needs no suspend.
    pool.deactivate("ctp-snapfail-o").unwrap();
    pool.create_snap(id(3), id(1)).unwrap();
    let snap = pool
        .activate(id(3), "ctp-snapfail-s", sectors(4 * MIB))
        .unwrap();
    assert_eq!(read_at(&snap.path, 0, 14), b"still writable");
    assert!(pool.resume_suspended().unwrap().is_empty());
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_full_pool_errors_then_recovers() {
    // 8 MiB of data in 64 KiB blocks: 128 blocks.
    let fx = Fixture::new("full", 8 * MIB, 8 * MIB);
    let pool = ThinPool::create(fx.config().with_block_size(small_blocks())).unwrap();
    pool.create_thin(id(1)).unwrap();
    let dev = pool
        .activate(id(1), "ctp-full-a", sectors(32 * MIB))
        .unwrap();

    // Writing more than the pool holds fails (it does not hang).
    let out = Command::new("dd")
        .args([
            "if=/dev/zero",
            "bs=1M",
            "count=16",
            "oflag=direct",
            "conv=fsync",
        ])
        .arg(format!("of={}", dev.path.display()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "dd into a full pool succeeded");
    let status = pool.status().unwrap();
    assert_eq!(status.mode, PoolMode::OutOfDataSpace);
    assert_eq!(status.no_space_policy, NoSpacePolicy::Error);
    assert_eq!(status.data.used, status.data.total);

    // Changes are refused with PoolFull, naming the pool.
    for err in [
        pool.create_thin(id(2)).unwrap_err(),
        pool.create_snap(id(2), id(1)).unwrap_err(),
    ] {
        assert!(
            matches!(err, Error::PoolFull { ref pool, .. } if pool == "ctp-full"),
            "{err}"
        );
        assert!(err.to_string().contains("128 of 128"), "{err}");
    }

    // Deleting the device frees the space; the pool works again.
    pool.deactivate("ctp-full-a").unwrap();
    pool.delete(id(1)).unwrap();
    let status = pool.status().unwrap();
    assert_eq!(status.mode, PoolMode::ReadWrite);
    assert_eq!(status.data.used, DataBlocks(0));
    pool.create_thin(id(2)).unwrap();
    let dev = pool
        .activate(id(2), "ctp-full-b", sectors(4 * MIB))
        .unwrap();
    let data = vec![0x42u8; MIB as usize];
    write_at(&dev.path, 0, &data).unwrap();
    assert_eq!(read_at(&dev.path, 0, data.len()), data);
}

/// Write a pattern over a whole 64-block pool through one device, delete it, provision every
/// block of a new device with a 4 KiB write, and count pattern bytes readable through it.
fn old_pattern_bytes_visible(tag: &str, zeroing: BlockZeroing) -> usize {
    const PATTERN: u8 = 0xa5;
    let fx = Fixture::new(tag, 4 * MIB, 8 * MIB);
    let config = fx
        .config()
        .with_block_size(small_blocks())
        .with_zeroing(zeroing);
    let pool = ThinPool::create(config).unwrap();
    pool.create_thin(id(1)).unwrap();
    let a = pool
        .activate(id(1), &format!("ctp-{tag}-a"), sectors(4 * MIB))
        .unwrap();
    write_at(&a.path, 0, &vec![PATTERN; 4 * MIB as usize]).unwrap();
    pool.deactivate(&a.name).unwrap();
    pool.delete(id(1)).unwrap();

    pool.create_thin(id(2)).unwrap();
    let b = pool
        .activate(id(2), &format!("ctp-{tag}-b"), sectors(4 * MIB))
        .unwrap();
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&b.path)
            .unwrap();
        for block in 0..64u64 {
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::Start(block * 64 * 1024)).unwrap();
            f.write_all(&[0x11u8; 4096]).unwrap();
        }
        f.sync_all().unwrap();
    }
    assert_eq!(pool.status().unwrap().data.used, DataBlocks(64));
    let raw = read_at(&b.path, 0, 4 * MIB as usize);
    for block in raw.chunks(64 * 1024) {
        assert!(block[..4096].iter().all(|&x| x == 0x11));
    }
    raw.iter().filter(|&&x| x == PATTERN).count()
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_deleted_data_never_readable_through_new_device() {
    assert_eq!(old_pattern_bytes_visible("zero", BlockZeroing::Zero), 0);
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_skip_zeroing_exposes_old_data() {
    // The documented trade-off, and proof that the zeroing test above can fail.
    assert!(old_pattern_bytes_visible("skipzero", BlockZeroing::Skip) > 0);
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_hundred_create_snapshot_delete_cycles() {
    let fx = Fixture::new("cycles", 64 * MIB, 8 * MIB);
    let pool = ThinPool::create(fx.config().with_block_size(small_blocks())).unwrap();
    let mut ids = IdAllocator::new([]);
    for cycle in 0..100u32 {
        let a = ids.allocate().unwrap();
        pool.create_thin(a).unwrap();
        let dev = pool.activate(a, "ctp-cycles-a", sectors(MIB)).unwrap();
        let stamp = format!("cycle {cycle:03}");
        write_at(&dev.path, 0, stamp.as_bytes()).unwrap();
        let b = ids.allocate().unwrap();
        pool.create_snap(b, a).unwrap();
        let snap = pool.activate(b, "ctp-cycles-b", sectors(MIB)).unwrap();
        assert_eq!(read_at(&snap.path, 0, stamp.len()), stamp.as_bytes());
        pool.deactivate("ctp-cycles-a").unwrap();
        pool.deactivate("ctp-cycles-b").unwrap();
        pool.delete(a).unwrap();
        pool.delete(b).unwrap();
        ids.release(a);
        ids.release(b);
    }
    let status = pool.status().unwrap();
    assert_eq!(status.data.used, DataBlocks(0));
    assert!(pool.list_active().unwrap().is_empty());
    assert!(!common::dm_names()
        .iter()
        .any(|n| n.starts_with("ctp-cycles-")));
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_concurrent_operations_from_threads() {
    let fx = Fixture::new("threads", 64 * MIB, 8 * MIB);
    let pool = Arc::new(ThinPool::create(fx.config().with_block_size(small_blocks())).unwrap());
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let pool = pool.clone();
            thread::spawn(move || {
                let name = format!("ctp-threads-{t}");
                let stamp = vec![t as u8 + 1; 4096];
                for cycle in 0..10u64 {
                    let (a, b) = (id(t * 1000 + cycle * 2), id(t * 1000 + cycle * 2 + 1));
                    pool.create_thin(a).unwrap();
                    let dev = pool.activate(a, &name, sectors(MIB)).unwrap();
                    write_at(&dev.path, 0, &stamp).unwrap();
                    pool.create_snap(b, a).unwrap();
                    pool.deactivate(&name).unwrap();
                    let snap = pool.activate(b, &name, sectors(MIB)).unwrap();
                    assert_eq!(read_at(&snap.path, 0, 4096), stamp);
                    assert_eq!(pool.find_active(b).unwrap().len(), 1);
                    pool.deactivate(&name).unwrap();
                    pool.delete(a).unwrap();
                    pool.delete(b).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(pool.status().unwrap().data.used, DataBlocks(0));
    assert!(pool.list_active().unwrap().is_empty());
}
