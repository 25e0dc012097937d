//! VM tier: browsing block backups with the CLI (`convoy backup mount/umount/mounts`) on a
//! real pool: an ext4 volume backed up to `vfs://` and to S3 (`convoy-test-s3`), each backup
//! mounted read-only and every file compared with the snapshot; writes fail with EROFS; a
//! second mount at the same place and a delete of the mounted backup are refused; umount
//! leaves nothing; a daemon killed with SIGKILL while a backup is mounted cleans up at its
//! next start; an xfs backup is browsed while its own volume is mounted (same UUID).

mod cli_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cli_support::TestDaemon;
use convoy_e2e::{noise, tree_files as files, DmDisks, S3Process};

/// Fills a mounted volume: small text files in a tree, a 10 MiB file, a 3 MiB random one.
fn fill(at: &Path, seed: u64) {
    std::fs::create_dir_all(at.join("etc/deep")).unwrap();
    for i in 0..20u64 {
        std::fs::write(
            at.join(format!("etc/deep/conf{i}.txt")),
            format!("line {i} of seed {seed}\n").repeat(50),
        )
        .unwrap();
    }
    std::fs::write(at.join("ten_mib.bin"), noise(seed, 10 << 20)).unwrap();
    std::fs::write(at.join("etc/random.bin"), noise(seed + 1, 3 << 20)).unwrap();
}

fn is_mount_point(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == dir.to_str())
}

/// Mounts `url` at a new directory `name` under the daemon's dir, checks it against `want`
/// and the refusals, and answers the mount point (still mounted).
fn browse_and_check(
    d: &TestDaemon,
    url: &str,
    name: &str,
    want: &BTreeMap<PathBuf, Vec<u8>>,
) -> PathBuf {
    let dir = d.dir.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    let shown = d.ok(&["backup", "mount", url, dir.to_str().unwrap()]);
    assert_eq!(shown, dir.to_str().unwrap());
    assert!(is_mount_point(&dir), "{} is not mounted", dir.display());
    assert_eq!(&files(&dir), want, "browsed files differ from the snapshot");
    let e = std::fs::write(dir.join("ten_mib.bin"), b"x").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ReadOnlyFilesystem, "{e}");
    let e = d.fail(&["backup", "mount", url, dir.to_str().unwrap()]);
    assert!(e.contains("mount"), "{e}");
    let e = d.fail(&["backup", "delete", url]);
    assert!(e.contains("backup umount"), "{e}");
    dir
}

#[test]
#[ignore = "needs a dm-thin kernel and nbd: run by cargo xtask test"]
fn dm_cli_browse_ext4_backups_on_vfs_and_s3() {
    let disks = DmDisks::new("cvb", 4 << 30, 64 << 20);
    let tag = disks.tag.clone();
    let s3_dir = tempfile::tempdir().unwrap();
    let s3 = S3Process::start(s3_dir.path());
    // The daemon inherits the S3 environment (no other test of this binary reads it).
    for (k, v) in s3.env() {
        std::env::set_var(k, v);
    }
    let mut d = TestDaemon::start_with(&[], |_| disks.daemon_flags(&[]));

    let vol = format!("{tag}-vol");
    d.ok(&["create", &vol, "--size", "1G"]);
    let at = PathBuf::from(d.ok(&["mount", &vol]));
    fill(&at, 1);
    let snap = format!("{tag}-s1");
    d.ok(&["snapshot", "create", &vol, "--name", &snap]);
    let want = files(&at);
    // Changed after the snapshot: a browse shows the snapshot.
    std::fs::write(at.join("etc/random.bin"), b"after").unwrap();

    let vfs_dest = format!("vfs://{}", d.dir.path().join("backups").display());
    let vfs_url = d.ok(&["backup", "create", &snap, "--dest", &vfs_dest]);
    let s3_url = d.ok(&["backup", "create", &snap, "--dest", &s3.dest("browse")]);

    let m1 = browse_and_check(&d, &vfs_url, "mnt-vfs", &want);
    let m2 = browse_and_check(&d, &s3_url, "mnt-s3", &want);
    let mounts = d.json(&["backup", "mounts"]);
    let one = &mounts[m2.to_str().unwrap()];
    assert_eq!(one["BackupURL"], s3_url.as_str(), "{mounts}");
    assert_eq!(one["Filesystem"], "ext4", "{mounts}");
    assert_eq!(one["MountPoint"], m2.to_str().unwrap(), "{mounts}");
    let dev = one["Device"].as_str().expect("a device").to_owned();
    assert!(dev.starts_with("/dev/nbd"), "{mounts}");
    assert!(mounts[m1.to_str().unwrap()].is_object(), "{mounts}");

    // Copy one file out, as a user would, and compare.
    let copy = d.dir.path().join("copied.bin");
    std::fs::copy(m2.join("ten_mib.bin"), &copy).unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), noise(1, 10 << 20));

    d.ok(&["backup", "umount", m1.to_str().unwrap()]);
    d.ok(&["backup", "umount", m2.to_str().unwrap()]);
    assert!(!is_mount_point(&m1) && !is_mount_point(&m2));
    assert!(d
        .json(&["backup", "mounts"])
        .as_object()
        .unwrap()
        .is_empty());
    d.fail(&["backup", "umount", m1.to_str().unwrap()]);
    let nbd = dev.trim_start_matches("/dev/");
    assert_eq!(
        std::fs::read_to_string(format!("/sys/block/{nbd}/size"))
            .unwrap()
            .trim(),
        "0",
        "{dev} still connected after umount"
    );

    // SIGKILL with a backup mounted: the next start unmounts it and disconnects its device.
    let m3 = d.dir.path().join("mnt-kill");
    std::fs::create_dir(&m3).unwrap();
    d.ok(&["backup", "mount", &s3_url, m3.to_str().unwrap()]);
    assert!(is_mount_point(&m3));
    d.kill9_and_restart();
    assert!(
        !is_mount_point(&m3),
        "the killed daemon's browse mount is still there"
    );
    assert!(d
        .json(&["backup", "mounts"])
        .as_object()
        .unwrap()
        .is_empty());
    assert!(
        d.log().contains("left mounted by the last run"),
        "{}",
        d.log()
    );
    // Nothing holds the backups any more.
    d.ok(&["backup", "delete", &vfs_url]);
    d.ok(&["backup", "delete", &s3_url]);
    d.ok(&["umount", &vol]);
    d.ok(&["delete", &vol]);
}

#[test]
#[ignore = "needs a dm-thin kernel and nbd: run by cargo xtask test"]
fn dm_cli_browse_xfs_next_to_its_mounted_volume() {
    let disks = DmDisks::new("cvx", 2 << 30, 64 << 20);
    let tag = disks.tag.clone();
    let d = TestDaemon::start_with(&[], |_| disks.daemon_flags(&["dm.fs=xfs"]));
    let vol = format!("{tag}-vol");
    // mkfs.xfs wants at least 300 MB.
    d.ok(&["create", &vol, "--size", "512M"]);
    let at = PathBuf::from(d.ok(&["mount", &vol]));
    fill(&at, 2);
    let snap = format!("{tag}-s1");
    d.ok(&["snapshot", "create", &vol, "--name", &snap]);
    let want = files(&at);
    let dest = format!("vfs://{}", d.dir.path().join("backups").display());
    let url = d.ok(&["backup", "create", &snap, "--dest", &dest]);
    // The volume stays mounted: the browse mounts a filesystem with the same UUID beside it.
    let m = browse_and_check(&d, &url, "mnt-xfs", &want);
    let mounts = d.json(&["backup", "mounts"]);
    assert_eq!(mounts[m.to_str().unwrap()]["Filesystem"], "xfs", "{mounts}");
    d.ok(&["backup", "umount", m.to_str().unwrap()]);
    assert!(!is_mount_point(&m));
    d.ok(&["umount", &vol]);
    d.ok(&["delete", &vol]);
}
