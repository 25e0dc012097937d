//! Host tier (root): browsing a directory-volume backup with `mount_backup` — the tree shown
//! read-only and identical to the snapshot, refusals while it is mounted (a second mount at
//! the same place, a delete of the backup, a write), umount leaving nothing behind, and the
//! start-up clean-up of a mount a dead daemon left.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common;

use common::{noise, vfs_config as config};
use convoy_core::{CreateVolumeRequest, ErrorKind, NoProgress, VolumeManager};

/// Root, told by who owns a file this process creates (unsafe code, `geteuid`, is not allowed).
fn is_root() -> bool {
    let f = tempfile::NamedTempFile::new().expect("temp file");
    f.as_file().metadata().expect("stat").uid() == 0
}

/// Kind, mode and content (or link target) of every path under `root`.
fn describe(root: &Path) -> BTreeMap<PathBuf, String> {
    fn go(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in fs::read_dir(root.join(rel)).unwrap() {
            let rel = rel.join(entry.unwrap().file_name());
            let meta = fs::symlink_metadata(root.join(&rel)).unwrap();
            let mode = meta.mode() & 0o7777;
            let d = if meta.is_dir() {
                go(root, &rel, out);
                format!("dir {mode:o}")
            } else if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(root.join(&rel)).unwrap().display())
            } else {
                let data = fs::read(root.join(&rel)).unwrap();
                format!("file {mode:o} {} {}", data.len(), fnv(&data))
            };
            out.insert(rel, d);
        }
    }
    let mut out = BTreeMap::new();
    go(root, Path::new(""), &mut out);
    out
}

fn fnv(data: &[u8]) -> String {
    data.iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        })
        .to_string()
}

/// Whether `dir` is a mount point, from /proc/self/mountinfo.
fn is_mount_point(dir: &Path) -> bool {
    let real = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(real.to_str().unwrap()))
}

#[tokio::test]
async fn vfs_browse_shows_the_backup_read_only_and_cleans_up() {
    assert!(
        is_root(),
        "bind mounts need root: run the host tier as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    m.create_volume(
        CreateVolumeRequest {
            name: Some("vol1".into()),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let at = m.mount_volume("vol1", None).await.unwrap();
    fs::create_dir_all(at.join("docs/deep/er")).unwrap();
    fs::write(at.join("docs/readme.txt"), b"browse me").unwrap();
    fs::write(at.join("docs/deep/er/big.bin"), noise(7, 3 << 20)).unwrap();
    std::os::unix::fs::symlink("docs/readme.txt", at.join("link")).unwrap();
    m.create_snapshot("vol1", Some("s1".into())).await.unwrap();
    let want = describe(&at);
    // The volume changes after the snapshot: the browse shows the snapshot, not this.
    fs::write(at.join("docs/readme.txt"), b"changed later").unwrap();

    let dest = format!("vfs://{}", dir.path().join("backups").display());
    let report = m
        .create_backup_report("s1", &dest, &Default::default(), Arc::new(NoProgress))
        .await
        .unwrap();
    let url = report.backup_url.clone();
    let store = Default::default();

    // Bad mount points are refused with what to do.
    let e = m
        .mount_backup(&url, Path::new("relative/dir"), &store)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let missing = dir.path().join("missing");
    let e = m.mount_backup(&url, &missing, &store).await.unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    let e = m
        .mount_backup(&format!("{dest}?volume=vol1"), &at, &store)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mount = m.mount_backup(&url, &mnt, &store).await.unwrap();
    assert_eq!(mount.filesystem, "tree");
    assert_eq!(mount.device, None);
    assert_eq!(mount.mount_point, fs::canonicalize(&mnt).unwrap());
    assert!(is_mount_point(&mnt));
    assert_eq!(describe(&mnt), want);
    assert_eq!(fs::read(mnt.join("docs/readme.txt")).unwrap(), b"browse me");
    assert_eq!(m.list_backup_mounts(), vec![mount.clone()]);

    // Read-only: a write fails with EROFS and changes nothing.
    let e = fs::write(mnt.join("docs/readme.txt"), b"overwrite").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = fs::write(mnt.join("new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // A second mount at the same place, and a delete of the backup, are refused.
    let e = m.mount_backup(&url, &mnt, &store).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    let e = m.delete_backup(&url, &store).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    assert!(e.to_string().contains("backup umount"), "{e}");
    // The same backup may be browsed at a second place at once.
    let mnt2 = dir.path().join("mnt2");
    fs::create_dir(&mnt2).unwrap();
    m.mount_backup(&url, &mnt2, &store).await.unwrap();
    assert_eq!(describe(&mnt2), want);
    assert_eq!(m.list_backup_mounts().len(), 2);
    m.umount_backup(&mnt2).await.unwrap();

    m.umount_backup(&mnt).await.unwrap();
    assert!(!is_mount_point(&mnt));
    assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0);
    assert!(m.list_backup_mounts().is_empty());
    let e = m.umount_backup(&mnt).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let browse_dir = dir.path().join("root/browse");
    let left: Vec<_> = fs::read_dir(&browse_dir)
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");

    // A manager that goes away with a mount in place (a daemon killed): the next start
    // unmounts it and removes its work directory and record.
    m.mount_backup(&url, &mnt, &store).await.unwrap();
    assert!(is_mount_point(&mnt));
    drop(m);
    let m = VolumeManager::open(config(dir.path())).await.unwrap();
    let said = m.reconcile_report().join("\n");
    assert!(said.contains("left mounted by the last run"), "{said}");
    assert!(said.contains("unmounted"), "{said}");
    assert!(!is_mount_point(&mnt));
    let left: Vec<_> = fs::read_dir(&browse_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(m.list_backup_mounts().is_empty());
    // Nothing is held any more: the backup can be deleted.
    m.delete_backup(&url, &store).await.unwrap();
    match fs::metadata(mnt.join("docs")) {
        Err(e) => assert_eq!(e.kind(), IoKind::NotFound),
        Ok(_) => panic!("the mount point still shows the tree"),
    }
}
