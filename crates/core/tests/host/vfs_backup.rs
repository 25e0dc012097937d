//! Host tier: vfs backups and restores through a `vfs://` block store — round trip of a tree,
//! dedup of unchanged files, refusal of hostile images and of devicemapper backups.

use convoy_testkit::noise;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use convoy_backupstore::{BackupMeta, BackupTarget, NoProgress as StoreNoProgress, TargetOptions};
use convoy_core::{BackupKind, CreateVolumeRequest, ErrorKind, NoProgress, VolumeManager};

use crate::common::{named, vfs_config as config};

fn restore_req(name: &str, url: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        backup_url: Some(url.to_owned()),
        ..named(name)
    }
}

/// Everything comparable about a tree: kind, mode, content or target, per relative path.
fn describe(root: &Path) -> BTreeMap<PathBuf, String> {
    fn go(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in fs::read_dir(root.join(rel)).unwrap() {
            let entry = entry.unwrap();
            let rel = rel.join(entry.file_name());
            let meta = fs::symlink_metadata(root.join(&rel)).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let d = if meta.is_dir() {
                go(root, &rel, out);
                format!("dir {mode:o}")
            } else if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(root.join(&rel)).unwrap().display())
            } else {
                let data = fs::read(root.join(&rel)).unwrap();
                let mtime = meta.modified().unwrap();
                format!(
                    "file {mode:o} {} {:x} {mtime:?}",
                    data.len(),
                    data.iter()
                        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)))
                )
            };
            out.insert(rel, d);
        }
    }
    let mut out = BTreeMap::new();
    go(root, Path::new(""), &mut out);
    out
}

#[tokio::test]
async fn vfs_backup_restores_an_identical_tree() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    m.create_volume(named("vol1"), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume("vol1", None).await.unwrap();
    fs::create_dir_all(at.join("a/b/empty_dir")).unwrap();
    fs::write(at.join("a/small.txt"), b"hello").unwrap();
    fs::write(at.join("empty_file"), b"").unwrap();
    fs::write(at.join("a/b/big.bin"), noise(1, 5 * 1024 * 1024 + 123)).unwrap();
    // A mostly sparse file with data at both ends.
    let sparse = fs::File::create(at.join("sparse")).unwrap();
    sparse.set_len(3 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"end", (3 << 20) - 3).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"start", 0).unwrap();
    drop(sparse);
    // A file ending in a hole, last in the image: the restored image is short of it.
    let tail = fs::File::create(at.join("zz_tail_hole")).unwrap();
    tail.set_len(2 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&tail, b"head", 0).unwrap();
    drop(tail);
    fs::set_permissions(at.join("a/small.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(at.join("a/b"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(at.join("empty_file"), fs::Permissions::from_mode(0o4755)).unwrap();
    symlink("small.txt", at.join("a/rel_link")).unwrap();
    symlink("/etc/hostname", at.join("abs_link")).unwrap();
    symlink("nowhere", at.join("dangling")).unwrap();
    fs::set_permissions(&at, fs::Permissions::from_mode(0o751)).unwrap();

    m.create_snapshot("vol1", Some("s1".into())).await.unwrap();
    let dest = format!("vfs://{}", dir.path().join("backups").display());
    let report = m
        .create_backup_report("s1", &dest, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(report.kind, BackupKind::Full);
    let info = m
        .inspect_backup(&report.backup_url, &Default::default())
        .await
        .unwrap();
    assert_eq!(info.driver_name, "vfs");

    let restored = m
        .create_volume(
            restore_req("copy", &report.backup_url),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
    assert_eq!(restored.driver, "vfs");
    let copy = m.mount_volume("copy", None).await.unwrap();
    assert_eq!(describe(&copy), describe(&at));
    assert_eq!(
        fs::metadata(&copy).unwrap().permissions().mode() & 0o7777,
        0o751
    );
    // The sparse file stays sparse (holes are not written).
    let blocks =
        std::os::unix::fs::MetadataExt::blocks(&fs::metadata(copy.join("sparse")).unwrap());
    assert!(blocks * 512 < 1 << 20, "{blocks} blocks");
    // No leftovers.
    let vols = dir.path().join("vols");
    assert!(!vols.join("copy.partial").exists());
    assert_eq!(fs::read_dir(vols.join(".images")).unwrap().count(), 0);

    // The restored volume survives a restart; a second restore under a taken name fails.
    drop(m);
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    assert_eq!(
        describe(&m.mount_volume("copy", None).await.unwrap()),
        describe(&at)
    );
    let e = m
        .create_volume(
            restore_req("copy", &report.backup_url),
            Arc::new(NoProgress),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
}

#[tokio::test]
async fn vfs_later_backups_are_incremental_and_read_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    m.create_volume(named("vol1"), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume("vol1", None).await.unwrap();
    // 30 files of 300 KiB: two 256 KiB chunks each.
    for i in 0..30u64 {
        fs::write(at.join(format!("f{i:02}")), noise(i + 10, 300 << 10)).unwrap();
    }
    m.create_snapshot("vol1", Some("s1".into())).await.unwrap();
    let dest = format!("vfs://{}", dir.path().join("backups").display());
    let first = m
        .create_backup_report("s1", &dest, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(first.kind, BackupKind::Full);
    assert!(first.blocks_uploaded >= 60, "{first:?}");
    assert!(first.bytes_read >= 30 * (300 << 10), "{first:?}");
    let at_s1 = describe(&at);

    // Change one file (same size), delete one, add one.
    fs::write(at.join("f17"), noise(999, 300 << 10)).unwrap();
    fs::remove_file(at.join("f03")).unwrap();
    fs::write(at.join("new"), noise(1000, 100 << 10)).unwrap();
    m.create_snapshot("vol1", Some("s2".into())).await.unwrap();
    let second = m
        .create_backup_report("s2", &dest, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    eprintln!("first: {first:?}\nsecond: {second:?}");
    assert_eq!(second.kind, BackupKind::Incremental, "{second:?}");
    assert_eq!(second.parent_snapshot.as_deref(), Some("s1"));
    // Read: the head's room, f17's and f03's old places (the new file fits in one of them).
    // The 28 unchanged files (56 chunks) are not read at all.
    assert!(second.bytes_read <= 6 * (256 << 10), "{second:?}");
    assert!(second.blocks_uploaded <= 4, "{second:?}");
    let at_s2 = describe(&at);

    // Nothing changed: only the head is read.
    m.create_snapshot("vol1", Some("s3".into())).await.unwrap();
    let third = m
        .create_backup_report("s3", &dest, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(third.kind, BackupKind::Incremental, "{third:?}");
    assert!(third.bytes_read <= 2 * (256 << 10), "{third:?}");

    // Each backup restores to its own tree (no chunk of a deleted or older file leaks in).
    for (name, report, want) in [
        ("r1", &first, &at_s1),
        ("r2", &second, &at_s2),
        ("r3", &third, &at_s2),
    ] {
        m.create_volume(restore_req(name, &report.backup_url), Arc::new(NoProgress))
            .await
            .unwrap();
        let got = m.mount_volume(name, None).await.unwrap();
        assert_eq!(&describe(&got), want, "{name}");
    }

    // A layout is kept per snapshot and goes with it; a stray one is removed at start-up.
    let layouts = dir.path().join("vols/.layouts");
    assert_eq!(fs::read_dir(&layouts).unwrap().count(), 3);
    m.delete_snapshot("s1").await.unwrap();
    assert_eq!(fs::read_dir(&layouts).unwrap().count(), 2);
    fs::write(layouts.join("stray.json"), b"{}").unwrap();
    drop(m);
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    assert_eq!(fs::read_dir(&layouts).unwrap().count(), 2);

    // s1 is gone: the next backup is incremental against s3, the last one.
    fs::write(at.join("f20"), noise(2000, 300 << 10)).unwrap();
    m.create_snapshot("vol1", Some("s4".into())).await.unwrap();
    let fourth = m
        .create_backup_report("s4", &dest, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(fourth.parent_snapshot.as_deref(), Some("s3"), "{fourth:?}");
    m.create_volume(restore_req("r4", &fourth.backup_url), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(
        describe(&m.mount_volume("r4", None).await.unwrap()),
        describe(&at)
    );
}

#[tokio::test]
async fn vfs_a_snapshot_backed_up_twice_keeps_one_layout() {
    // The same snapshot to two destinations, the second with another parent: both backups
    // and a child of each restore correctly.
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    m.create_volume(named("vv"), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume("vv", None).await.unwrap();
    for i in 0..8u64 {
        fs::write(at.join(format!("f{i}")), noise(i, 200 << 10)).unwrap();
    }
    let a = format!("vfs://{}", dir.path().join("a").display());
    let b = format!("vfs://{}", dir.path().join("b").display());
    m.create_snapshot("vv", Some("s1".into())).await.unwrap();
    m.create_backup_report("s1", &a, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    fs::remove_file(at.join("f0")).unwrap();
    fs::write(at.join("f9"), noise(9, 50 << 10)).unwrap();
    m.create_snapshot("vv", Some("s2".into())).await.unwrap();
    let to_a = m
        .create_backup_report("s2", &a, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    let to_b = m
        .create_backup_report("s2", &b, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    assert_eq!(to_a.kind, BackupKind::Incremental);
    assert_eq!(to_b.kind, BackupKind::Full);
    let want = describe(&at);
    fs::write(at.join("f5"), noise(55, 10 << 10)).unwrap();
    m.create_snapshot("vv", Some("s3".into())).await.unwrap();
    let mut urls = vec![to_a.backup_url, to_b.backup_url];
    for dest in [&a, &b] {
        let r = m
            .create_backup_report("s3", dest, &Default::default(), Arc::new(NoProgress))
            .await
            .unwrap();
        assert_eq!(r.kind, BackupKind::Incremental, "{dest}");
        urls.push(r.backup_url);
    }
    let want3 = describe(&at);
    for (i, url) in urls.iter().enumerate() {
        let name = format!("r{i}");
        m.create_volume(restore_req(&name, url), Arc::new(NoProgress))
            .await
            .unwrap();
        let got = describe(&m.mount_volume(&name, None).await.unwrap());
        assert_eq!(
            got,
            if i < 2 { want.clone() } else { want3.clone() },
            "{url}"
        );
    }
}

/// Puts a hand-made image into the store as a backup of `volume` made by `driver`.
async fn upload(dest: &str, volume: &str, driver: &str, image: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("convoy-vfs-image-{}", uuid_like(image)));
    let mut padded = image.to_vec();
    padded.resize(image.len().div_ceil(65536) * 65536, 0);
    fs::write(&path, &padded).unwrap();
    let file = fs::File::open(&path).unwrap();
    fs::remove_file(&path).unwrap();
    let target = BackupTarget::open(dest, TargetOptions::default()).unwrap();
    let meta = BackupMeta {
        driver_name: driver.into(),
        volume_name: volume.into(),
        volume_uuid: "00000000-0000-0000-0000-000000000001".into(),
        volume_size: padded.len() as u64,
        volume_created_at: "x".into(),
        snapshot_name: "s".into(),
        snapshot_uuid: "00000000-0000-0000-0000-000000000002".into(),
        snapshot_created_at: "x".into(),
        backup_name: None,
    };
    let whole = std::iter::once(0..padded.len() as u64).collect::<Vec<_>>();
    let done = target
        .backup(Arc::new(file), &whole, None, meta, &StoreNoProgress)
        .await
        .unwrap();
    done.info.backup_url
}

fn uuid_like(data: &[u8]) -> String {
    let h = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016x}-{}", std::process::id())
}

/// An image in the documented format: magic, index length, JSON index, data at 64 KiB.
fn image(entries: serde_json::Value, data: &[u8]) -> Vec<u8> {
    let index = serde_json::json!({
        "version": 1, "align": 65536, "root_mode": 0o755, "entries": entries
    });
    let json = serde_json::to_vec(&index).unwrap();
    let mut out = b"CVYVFS1\n".to_vec();
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.resize(65536, 0);
    out.extend_from_slice(data);
    out
}

#[tokio::test]
async fn vfs_restore_refuses_hostile_images_and_other_drivers_backups() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    let dest = format!("vfs://{}", dir.path().join("backups").display());
    let o = outside.display().to_string();
    let cases = [
        (
            "dotdot",
            serde_json::json!([{"path": "../../outside/x", "kind": "file", "mode": 420,
                "size": 4, "offset": 65536}]),
            "\"..\" component",
        ),
        (
            "absolute",
            serde_json::json!([{"path": format!("{o}/x"), "kind": "file", "mode": 420,
                "size": 4, "offset": 65536}]),
            "absolute path",
        ),
        (
            "symlinkescape",
            serde_json::json!([
                {"path": "l", "kind": "symlink", "target": o},
                {"path": "l/x", "kind": "file", "mode": 420, "size": 4, "offset": 65536}]),
            "not inside a directory",
        ),
        (
            "duplicate",
            serde_json::json!([
                {"path": "d", "kind": "dir", "mode": 493},
                {"path": "d", "kind": "symlink", "target": o}]),
            "listed twice",
        ),
        (
            "outofimage",
            serde_json::json!([{"path": "x", "kind": "file", "mode": 420,
                "size": 4, "offset": 1_000_000_000}]),
            "outside the",
        ),
        (
            "notjson",
            serde_json::json!("garbage"),
            "index is not valid",
        ),
    ];
    for (name, entries, why) in cases {
        let url = upload(&dest, name, "vfs", &image(entries, b"evil")).await;
        let e = m
            .create_volume(restore_req(name, &url), Arc::new(NoProgress))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{name}: {e}");
        assert!(e.to_string().contains(why), "{name}: {e}");
        assert!(m.inspect_volume(name).await.is_err(), "{name}");
        let vols = dir.path().join("vols");
        assert!(!vols.join(name).exists(), "{name}");
        assert!(!vols.join(format!("{name}.partial")).exists(), "{name}");
        assert_eq!(fs::read_dir(vols.join(".images")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{name}");
        assert!(!dir.path().join("x").exists(), "{name}");
    }

    // Not an image at all.
    let url = upload(&dest, "noise", "vfs", &noise(5, 70000)).await;
    let e = m
        .create_volume(restore_req("noise", &url), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a vfs backup image"), "{e}");

    // A devicemapper backup is refused before anything is made.
    let url = upload(&dest, "blockvol", "devicemapper", &noise(6, 70000)).await;
    let e = m
        .create_volume(restore_req("blockvol", &url), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("devicemapper driver"), "{e}");
    assert!(!dir.path().join("vols/blockvol").exists());

    // A good hand-made image restores (the format is as documented).
    let url = upload(
        &dest,
        "good",
        "vfs",
        &image(
            serde_json::json!([
                {"path": "d", "kind": "dir", "mode": 493},
                {"path": "d/x", "kind": "file", "mode": 384, "size": 4, "offset": 65536},
                {"path": "l", "kind": "symlink", "target": o}]),
            b"good",
        ),
    )
    .await;
    m.create_volume(restore_req("good", &url), Arc::new(NoProgress))
        .await
        .unwrap();
    let good = m.mount_volume("good", None).await.unwrap();
    assert_eq!(fs::read(good.join("d/x")).unwrap(), b"good");
    assert_eq!(fs::read_link(good.join("l")).unwrap(), outside);
}

#[tokio::test]
async fn vfs_restore_refuses_a_nonempty_existing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    m.create_volume(named("vol1"), Arc::new(NoProgress))
        .await
        .unwrap();
    m.create_snapshot("vol1", Some("s1".into())).await.unwrap();
    let dest = format!("vfs://{}", dir.path().join("backups").display());
    let url = m
        .create_backup("s1", &dest, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    // A directory left behind by a reference-only delete is not overwritten or removed.
    let left = dir.path().join("vols/old");
    fs::create_dir_all(&left).unwrap();
    fs::write(left.join("keep"), b"data").unwrap();
    let e = m
        .create_volume(restore_req("old", &url), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert_eq!(fs::read(left.join("keep")).unwrap(), b"data");
}

#[tokio::test]
async fn vfs_backup_refuses_non_utf8_names_and_startup_removes_leftover_images() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    m.create_volume(named("vol1"), Arc::new(NoProgress))
        .await
        .unwrap();
    let at = m.mount_volume("vol1", None).await.unwrap();
    fs::write(at.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"x").unwrap();
    m.create_snapshot("vol1", Some("s1".into())).await.unwrap();
    let dest = format!("vfs://{}", dir.path().join("backups").display());
    let e = m
        .create_backup("s1", &dest, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("UTF-8"), "{e}");
    // The snapshot is not left busy.
    m.delete_snapshot("s1").await.unwrap();

    // A restore image left by a crash is removed at start-up.
    drop(m);
    let leftover = dir.path().join("vols/.images/gone.restore");
    fs::write(&leftover, b"half").unwrap();
    let _m = VolumeManager::open(config(dir.path())).await.unwrap();
    assert!(!leftover.exists());
}
