//! VM tier: expand (online with a writer running, and offline), clone, revert and restore
//! with grow, on the real kernel. Small volumes (64–192 MiB), a few MiB of data.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{run, write_file, Fixture, MIB};
use convoy_core::{CreateVolumeRequest, ErrorKind, NoProgress, StoreOptions};

fn named(name: &str, size: Option<u64>) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: Some(name.into()),
        size,
        ..Default::default()
    }
}

/// Total bytes of the filesystem mounted at `at`.
fn fs_size(at: &Path) -> u64 {
    let out = run("df", &["-B1", "--output=size", at.to_str().unwrap()]);
    out.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// Appends 64 KiB records (record i filled with byte i % 251) to `path` until `stop`, with an
/// fsync every 16; returns how many were written.
fn writer(path: std::path::PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        let mut n = 0u64;
        // Bounded: at most 8 MiB, whatever the timing.
        while !stop.load(Ordering::Relaxed) && n < 128 {
            f.write_all(&vec![(n % 251) as u8; 64 * 1024]).unwrap();
            n += 1;
            if n.is_multiple_of(16) {
                f.sync_all().unwrap();
            }
        }
        f.sync_all().unwrap();
        n
    })
}

fn check_writer_file(path: &Path, records: u64) {
    let data = std::fs::read(path).unwrap();
    assert_eq!(data.len() as u64, records * 64 * 1024);
    for (i, chunk) in data.chunks(64 * 1024).enumerate() {
        assert!(
            chunk.iter().all(|b| *b == (i as u64 % 251) as u8),
            "record {i} changed"
        );
    }
}

async fn expand_with_writer(fs: &str) {
    let fx = Fixture::new(&format!("grow-{fs}"), 4096, fs, 1024 * MIB);
    // mkfs.xfs wants at least 300 MB.
    let base = if fs == "xfs" { 320 * MIB } else { 64 * MIB };
    let m = fx.open().await;
    m.create_volume(named("gv", Some(base)), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume("gv", None).await.unwrap();
    write_file(&at.join("before"), 7, 4 * MIB as usize);
    let before = std::fs::read(at.join("before")).unwrap();
    let old_fs = fs_size(&at);
    assert!(old_fs <= base, "{fs}: {old_fs}");

    // Refused: a shrink, a size create would refuse; nothing changes.
    let e = m.expand_volume("gv", base - 32 * MIB).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("only grow"), "{e}");
    let e = m.expand_volume("gv", u64::MAX).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("too large"), "{e}");

    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(at.join("w"), stop.clone());
    let t = std::time::Instant::now();
    let v = m.expand_volume("gv", base + 64 * MIB).await.unwrap();
    eprintln!("{fs}: online expand +64 MiB took {:?}", t.elapsed());
    stop.store(true, Ordering::Relaxed);
    let records = w.join().unwrap();
    assert_eq!(v.driver_info["Size"], (base + 64 * MIB).to_string());
    assert_eq!(
        m.inspect_volume("gv").await.unwrap().driver_info["Size"],
        (base + 64 * MIB).to_string()
    );
    let new_fs = fs_size(&at);
    // (df leaves xfs's internal log out: compare with what it showed before.)
    assert!(
        new_fs >= old_fs + 48 * MIB,
        "{fs}: filesystem not grown: {new_fs}"
    );
    // The new space is usable: a file larger than the old free space would have allowed is
    // not needed to prove it; df above reads the kernel's own count. No byte changed.
    assert_eq!(std::fs::read(at.join("before")).unwrap(), before, "{fs}");
    check_writer_file(&at.join("w"), records);
    let dev = Path::new(&v.driver_info["Device"]).to_path_buf();
    let dev_size: u64 = run("blockdev", &["--getsize64", dev.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(dev_size, base + 64 * MIB);

    // Offline: unmounted, grown through a private mount.
    m.umount_volume("gv").await.unwrap();
    let t = std::time::Instant::now();
    m.expand_volume("gv", base + 128 * MIB - 1).await.unwrap();
    eprintln!("{fs}: offline expand +64 MiB took {:?}", t.elapsed());
    // The same size again changes nothing.
    m.expand_volume("gv", base + 128 * MIB).await.unwrap();
    drop(m);
    let m = fx.open().await;
    assert!(
        m.reconcile_report().is_empty(),
        "{:?}",
        m.reconcile_report()
    );
    let v = m.inspect_volume("gv").await.unwrap();
    assert_eq!(v.driver_info["Size"], (base + 128 * MIB).to_string());
    assert_eq!(
        v.driver_info["RequestedSize"],
        (base + 128 * MIB - 1).to_string()
    );
    let at = m.mount_volume("gv", None).await.unwrap();
    assert!(fs_size(&at) >= old_fs + 112 * MIB, "{fs}");
    assert_eq!(std::fs::read(at.join("before")).unwrap(), before, "{fs}");
    check_writer_file(&at.join("w"), records);
    m.umount_volume("gv").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_expand_mounted_ext4_with_a_writer() {
    expand_with_writer("ext4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_expand_mounted_xfs_with_a_writer() {
    expand_with_writer("xfs").await;
}

async fn clone_and_revert(fs: &str) {
    let fx = Fixture::new(&format!("clone-{fs}"), 4096, fs, 1024 * MIB);
    let base = if fs == "xfs" { 320 * MIB } else { 64 * MIB };
    let m = fx.open().await;
    m.create_volume(named("origin", Some(base)), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume("origin", None).await.unwrap();
    std::fs::write(at.join("f"), b"one").unwrap();
    let t = std::time::Instant::now();
    m.create_snapshot("origin", Some("s1".into()))
        .await
        .unwrap();
    eprintln!("{fs}: snapshot of a mounted volume took {:?}", t.elapsed());
    std::fs::write(at.join("f"), b"two").unwrap();

    // A clone of the snapshot and one of the live (mounted) volume, mounted next to it.
    let t = std::time::Instant::now();
    let c1 = m
        .create_volume(
            CreateVolumeRequest {
                from_snapshot: Some("s1".into()),
                ..named("c1", None)
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
    eprintln!("{fs}: clone of a snapshot took {:?}", t.elapsed());
    assert_eq!(c1.driver_info["Size"], base.to_string());
    assert_eq!(
        c1.driver_info.get("Filesystem").map(String::as_str),
        Some(fs)
    );
    let t = std::time::Instant::now();
    m.create_volume(
        CreateVolumeRequest {
            from_volume: Some("origin".into()),
            ..named("c2", None)
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    eprintln!("{fs}: clone of a mounted volume took {:?}", t.elapsed());
    let e = m
        .create_volume(
            CreateVolumeRequest {
                from_snapshot: Some("s1".into()),
                ..named("c3", Some(base + 64 * MIB))
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("size of its source"), "{e}");
    let p1 = m.mount_volume("c1", None).await.unwrap();
    let p2 = m.mount_volume("c2", None).await.unwrap();
    assert_eq!(std::fs::read(p1.join("f")).unwrap(), b"one");
    assert_eq!(std::fs::read(p2.join("f")).unwrap(), b"two");
    std::fs::write(p1.join("f"), b"c1").unwrap();
    std::fs::write(p2.join("f"), b"c2").unwrap();
    std::fs::write(at.join("f"), b"three").unwrap();
    for p in [&at, &p1, &p2] {
        run("sync", &["-f", p.to_str().unwrap()]);
    }
    assert_eq!(std::fs::read(p1.join("f")).unwrap(), b"c1");
    assert_eq!(std::fs::read(p2.join("f")).unwrap(), b"c2");
    assert_eq!(std::fs::read(at.join("f")).unwrap(), b"three");
    m.umount_volume("c1").await.unwrap();
    m.umount_volume("c2").await.unwrap();
    m.delete_volume("c2", false).await.unwrap();

    // Revert: refused while mounted, then the snapshot's data; the snapshot stays.
    let e = m.revert_snapshot("s1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.to_string().contains("unmount it"), "{e}");
    m.umount_volume("origin").await.unwrap();
    let old_id = m.inspect_volume("origin").await.unwrap().driver_info["DevID"].clone();
    let t = std::time::Instant::now();
    let v = m.revert_snapshot("s1").await.unwrap();
    eprintln!("{fs}: revert took {:?}", t.elapsed());
    assert_ne!(v.driver_info["DevID"], old_id);
    assert!(v.snapshots.contains_key("s1"));
    let at = m.mount_volume("origin", None).await.unwrap();
    assert_eq!(std::fs::read(at.join("f")).unwrap(), b"one");
    // The clone of s1 is untouched by the revert.
    let p1 = m.mount_volume("c1", None).await.unwrap();
    assert_eq!(std::fs::read(p1.join("f")).unwrap(), b"c1");
    drop(m);
    let m = fx.open().await;
    assert!(
        m.reconcile_report().is_empty(),
        "{:?}",
        m.reconcile_report()
    );
    let ids: Vec<u32> = fx
        .pool()
        .list_active()
        .unwrap()
        .iter()
        .map(|d| d.id.get())
        .collect();
    assert!(
        !ids.contains(&old_id.parse().unwrap()),
        "old data still active"
    );
    m.umount_volume("origin").await.unwrap();
    m.umount_volume("c1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_clone_and_revert_ext4() {
    clone_and_revert("ext4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_clone_and_revert_xfs() {
    clone_and_revert("xfs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_restore_with_grow() {
    let fx = Fixture::new("rgrow", 4096, "ext4", 512 * MIB);
    let st = StoreOptions::default();
    let m = fx.open().await;
    m.create_volume(named("src", Some(64 * MIB)), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume("src", None).await.unwrap();
    write_file(&at.join("d"), 3, 2 * MIB as usize);
    let data = std::fs::read(at.join("d")).unwrap();
    m.create_snapshot("src", Some("sn".into())).await.unwrap();
    let url = m
        .create_backup("sn", &fx.backups(), &st, Arc::new(NoProgress))
        .await
        .unwrap();
    let restore = |name: &str, grow: bool| CreateVolumeRequest {
        backup_url: Some(url.clone()),
        grow,
        ..named(name, Some(128 * MIB))
    };
    // A different size without --grow fails, as the original's.
    let e = m
        .create_volume(restore("r1", false), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("--grow"), "{e}");
    // --grow with a smaller size still fails.
    let e = m
        .create_volume(
            CreateVolumeRequest {
                size: Some(32 * MIB),
                ..restore("r1", true)
            },
            Arc::new(NoProgress),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let t = std::time::Instant::now();
    let v = m
        .create_volume(restore("r1", true), Arc::new(NoProgress))
        .await
        .unwrap();
    eprintln!("restore with grow took {:?}", t.elapsed());
    assert_eq!(v.driver_info["Size"], (128 * MIB).to_string());
    let p = m.mount_volume("r1", None).await.unwrap();
    assert!(fs_size(&p) > 100 * MIB, "{}", fs_size(&p));
    assert_eq!(std::fs::read(p.join("d")).unwrap(), data);
    m.umount_volume("r1").await.unwrap();
    m.umount_volume("src").await.unwrap();
}
