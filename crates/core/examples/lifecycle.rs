//! Embedding convoy-core: create a volume, write to it, snapshot it, back it up, restore the
//! backup into a new volume and check that both hold the same bytes.
//!
//! ```text
//! cargo run -p convoy-core --example lifecycle -- DATA_DEV METADATA_DEV ROOT_DIR BACKUP_DEST
//! # e.g. /dev/loop0 /dev/loop1 /tmp/convoy-root vfs:///tmp/convoy-backups
//! ```
//!
//! Needs root and a kernel with dm-thin (the VM tier runs it: `tests/dm_example.rs`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use convoy_core::{CreateVolumeRequest, ManagerConfig, NoProgress, StoreOptions, VolumeManager};

/// What the example did.
#[derive(Debug)]
pub struct Outcome {
    /// The backup's URL.
    pub backup_url: String,
    /// Name of the volume restored from it.
    pub restored: String,
}

fn read_all(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut v)?;
    Ok(v)
}

/// The whole life cycle. `pool_name` lets tests run it next to other pools.
pub async fn run(
    data_dev: &str,
    metadata_dev: &str,
    root: PathBuf,
    dest: &str,
    pool_name: &str,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    // 1. Open the manager on a devicemapper pool (created on first use).
    let config = ManagerConfig {
        root,
        drivers: vec!["devicemapper".into()],
        driver_opts: BTreeMap::from([
            ("dm.datadev".into(), data_dev.into()),
            ("dm.metadatadev".into(), metadata_dev.into()),
            ("dm.thinpoolname".into(), pool_name.into()),
            ("dm.defaultvolumesize".into(), "64m".into()),
        ]),
    };
    let manager = VolumeManager::open(config.clone()).await?;

    // 2. Create and mount a volume, write a file.
    let volume = manager
        .create_volume(
            CreateVolumeRequest {
                name: Some("example".into()),
                ..Default::default()
            },
            Arc::new(NoProgress),
        )
        .await?;
    let at = manager.mount_volume(&volume.name, None).await?;
    std::fs::write(at.join("hello.txt"), b"hello from convoy-core\n")?;
    println!("volume {} mounted at {}", volume.name, at.display());

    // 3. Snapshot it (the filesystem is flushed and frozen for the instant of the snapshot).
    let snapshot = manager.create_snapshot(&volume.name, None).await?;
    println!("snapshot {}", snapshot.name);

    // 4. Back the snapshot up.
    let store = StoreOptions::default();
    let backup_url = manager
        .create_backup(&snapshot.name, dest, &store, Arc::new(NoProgress))
        .await?;
    println!("backup {backup_url}");

    // 5. Restore it into a new volume and compare.
    let restored = manager
        .create_volume(
            CreateVolumeRequest {
                name: Some("example-restored".into()),
                backup_url: Some(backup_url.clone()),
                ..Default::default()
            },
            Arc::new(NoProgress),
        )
        .await?;
    let restored_at = manager
        .mount_volume(&restored.name, Some(config.root.join("restored-mount")))
        .await?;
    let original = read_all(&at.join("hello.txt"))?;
    let copy = read_all(&restored_at.join("hello.txt"))?;
    if original != copy {
        return Err("the restored file differs from the original".into());
    }
    println!("restored {} holds the same file", restored.name);

    // 6. Clean up the volumes (the backup stays).
    for name in [&restored.name, &volume.name] {
        manager.umount_volume(name).await?;
        manager.delete_volume(name, false).await?;
    }
    Ok(Outcome {
        backup_url,
        restored: restored.name,
    })
}

#[tokio::main]
#[allow(dead_code)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 4 {
        eprintln!("usage: lifecycle DATA_DEV METADATA_DEV ROOT_DIR BACKUP_DEST");
        std::process::exit(2);
    }
    if let Err(e) = run(
        &args[0],
        &args[1],
        PathBuf::from(&args[2]),
        &args[3],
        "convoy-example",
    )
    .await
    {
        eprintln!("lifecycle failed: {e}");
        std::process::exit(1);
    }
}
