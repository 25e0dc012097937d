//! The original Convoy's store (`tests/fixtures/convoy-0.5.2`, written by Convoy 0.5.2 itself:
//! a 64 MiB ext4 volume, a full and an incremental backup) read by the legacy reader on a
//! `vfs://` folder and on S3 (s3s-fs in this process): list, inspect, restore. The restored
//! images are read with `debugfs` (e2fsprogs) and every file's SHA-256 compared with the list
//! taken from the volume at each snapshot. Then damaged copies: a corrupt block, a missing
//! block, a block list pointing outside the volume.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use convoy_backupstore::legacy::{format, LegacyError, LegacyStore};
use convoy_backupstore::{BackupRef, NoProgress};
use sha2::{Digest, Sha256};
use support::Env;

const FULL: &str = "backup-72875294608445fb";
const INCREMENTAL: &str = "backup-12f904136003451d";
const VOLUME_SIZE: u64 = 64 << 20;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/convoy-0.5.2")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// An environment holding a copy of the original's store.
async fn env_with_fixture(s3: bool) -> Env {
    let env = if s3 {
        Env::s3().await
    } else {
        Env::local().await
    };
    copy_tree(
        &fixture().join("convoy-objectstore"),
        &env.objects_root.join("convoy-objectstore"),
    );
    env
}

fn volume_dir(env: &Env) -> PathBuf {
    env.objects_root
        .join("convoy-objectstore/volumes/ap/pd/appdata")
}

/// `sha256sum` of every file listed in `list`, read from the ext4 image with debugfs.
fn check_files(image: &Path, list: &str) {
    let debugfs = ["/usr/sbin/debugfs", "/sbin/debugfs"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("debugfs (e2fsprogs) is needed to read the restored ext4 image");
    let text = std::fs::read_to_string(fixture().join(list)).unwrap();
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (want, path) = line.split_once("  ").expect("sha256sum line");
        let path = path.trim_start_matches('.');
        let out = Command::new(debugfs)
            .args(["-R", &format!("cat {path}")])
            .arg(image)
            .output()
            .unwrap();
        assert!(out.status.success(), "debugfs cat {path} failed");
        let got: String = Sha256::digest(&out.stdout)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, want, "{path} differs in the image restored for {list}");
        checked += 1;
    }
    assert!(checked >= 21, "only {checked} files checked");
}

async fn restore_to_file(store: &LegacyStore, backup: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    let file = std::fs::File::create(&image).unwrap();
    file.set_len(VOLUME_SIZE).unwrap();
    let r = BackupRef::new("appdata", backup).unwrap();
    store
        .restore(&r, Arc::new(file), &NoProgress)
        .await
        .unwrap();
    (dir, image)
}

async fn lists_and_restores_the_originals_backups(s3: bool) {
    let env = env_with_fixture(s3).await;
    let store = LegacyStore::open(&env.dest, &env.opts).unwrap();
    assert_eq!(store.volumes().await.unwrap(), ["appdata"]);
    let mut list = store.list(None).await.unwrap();
    list.sort_by(|a, b| a.created_time.cmp(&b.created_time));
    let names: Vec<_> = list.iter().map(|b| b.backup_uuid.as_str()).collect();
    assert_eq!(names, [FULL, INCREMENTAL]);
    let full = &list[0];
    assert_eq!(
        full.backup_url,
        format!("{}?backup={FULL}&volume=appdata", env.dest)
    );
    assert_eq!(full.driver_name, "devicemapper");
    assert_eq!(full.volume_size, VOLUME_SIZE);
    assert_eq!(full.snapshot_name, "appdata-s1");
    assert_eq!(full.created_time, "Tue Dec 01 22:08:28 +0000 2026");
    assert_eq!(full.volume_created_at, "Tue Dec 01 22:07:47 +0000 2026");
    assert_eq!(store.list(Some("other")).await.unwrap().len(), 0);

    let (_d1, image) = restore_to_file(&store, FULL).await;
    check_files(&image, "appdata-full.sha256");
    let (_d2, image) = restore_to_file(&store, INCREMENTAL).await;
    check_files(&image, "appdata-incremental.sha256");

    // The `\u0026` form the original printed opens the same backup.
    let pasted = format!("{}?backup={INCREMENTAL}\\u0026volume=appdata", env.dest);
    let (store2, r) = convoy_backupstore::legacy::open_backup(&pasted, &env.opts).unwrap();
    assert_eq!(
        store2.inspect(&r).await.unwrap().info.snapshot_name,
        "appdata-s2"
    );

    let missing = BackupRef::new("appdata", "backup-0000000000000000").unwrap();
    assert!(matches!(
        store.inspect(&missing).await,
        Err(LegacyError::NotFound { .. })
    ));
}

async fn damaged_stores_fail_clearly(s3: bool) {
    let env = env_with_fixture(s3).await;
    let store = LegacyStore::open(&env.dest, &env.opts).unwrap();
    let r = BackupRef::new("appdata", INCREMENTAL).unwrap();
    let blocks = volume_dir(&env).join("blocks");
    let sink = || Arc::new(tempfile::tempfile().unwrap());

    // A block whose content is not what its name says.
    let corrupt = "556d2b18df75c3f82ce277a521335421a4c69711b0c968737ec8906c5b8654c6";
    let file = blocks.join(format!("55/6d/{corrupt}.blk"));
    let good = std::fs::read(&file).unwrap();
    std::fs::write(
        &file,
        format::encode_block(&vec![1u8; format::BLOCK_SIZE as usize]),
    )
    .unwrap();
    match store.restore(&r, sink(), &NoProgress).await {
        Err(LegacyError::CorruptBlock {
            offset, checksum, ..
        }) => assert_eq!((offset, checksum.as_str()), (0, corrupt)),
        other => panic!("expected a corrupt block, got {other:?}"),
    }
    std::fs::write(&file, &good).unwrap();

    // A missing block.
    let gone = "4ca864d40e03e33d8bb63786b097d7ee09ef8fdd7e44f198a67ec7f22128927d";
    std::fs::remove_file(blocks.join(format!("4c/a8/{gone}.blk"))).unwrap();
    let err = store.restore(&r, sink(), &NoProgress).await.unwrap_err();
    match &err {
        LegacyError::MissingBlock {
            offset, checksum, ..
        } => assert_eq!((*offset, checksum.as_str()), (10485760, gone)),
        other => panic!("expected a missing block, got {other:?}"),
    }
    assert!(err.to_string().contains(INCREMENTAL), "{err}");

    // A block list reaching past the volume's size.
    let cfg = volume_dir(&env).join(format!("backups/backup_{FULL}.cfg"));
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("65011712", "67108864")).unwrap();
    let full = BackupRef::new("appdata", FULL).unwrap();
    let err = store.inspect(&full).await.unwrap_err();
    assert!(
        matches!(err, LegacyError::BadConfig { .. }) && err.to_string().contains("67108864"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn vfs_lists_and_restores_the_originals_backups() {
    lists_and_restores_the_originals_backups(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_lists_and_restores_the_originals_backups() {
    lists_and_restores_the_originals_backups(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn vfs_damaged_stores_fail_clearly() {
    damaged_stores_fail_clearly(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_damaged_stores_fail_clearly() {
    damaged_stores_fail_clearly(true).await;
}

#[tokio::test]
async fn a_folder_without_an_original_store_is_empty_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("nothing-here");
    let store = LegacyStore::open(
        &format!("vfs://{}", dest.display()),
        &convoy_backupstore::TargetOptions::default(),
    )
    .unwrap();
    assert!(store.list(None).await.unwrap().is_empty());
    assert!(!dest.exists(), "the reader created {}", dest.display());
}
