//! VM tier: taking over a host from the original Convoy in place. The test lays down what the
//! original 0.5 daemon leaves behind on stopping (a pool made with its table, volumes active
//! under their own names, one mounted with data, a snapshot made the way it made them, and its
//! JSON records under the root), then starts convoy on that root with no flags: the original's
//! volumes and snapshots are convoy's, with their thin ids, data and mount; its records are kept
//! aside. A pool holding a thin id no record names is refused first, changing nothing.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{run, write_file, Fixture, MIB};
use convoy_core::{CreateVolumeRequest, ManagerConfig, NoProgress, VolumeManager};

const VOLUME: u64 = 64 * MIB;
const CREATED: &str = "Tue Dec 01 22:05:16 +0000 2026";

fn major_minor(name: &str) -> String {
    run(
        "dmsetup",
        &[
            "info",
            "-c",
            "--noheadings",
            "-o",
            "major,minor",
            "--separator",
            ":",
            name,
        ],
    )
    .trim()
    .to_owned()
}

fn message(pool: &str, text: &str) {
    run("dmsetup", &["message", pool, "0", text]);
}

/// The original's volume file.
fn volume_record(name: &str, dev_id: u32, mount: Option<&Path>, snaps: &[(&str, u32)]) -> String {
    let snaps: Vec<String> = snaps
        .iter()
        .map(|(n, id)| {
            format!(
                r#""{n}":{{"Name":"{n}","CreatedTime":"{CREATED}","DevID":{id},"Activated":false}}"#
            )
        })
        .collect();
    format!(
        r#"{{"Name":"{name}","DevID":{dev_id},"Size":{VOLUME},"Base":"","MountPoint":"{}","CreatedTime":"{CREATED}","Snapshots":{{{}}}}}"#,
        mount.map(|m| m.display().to_string()).unwrap_or_default(),
        snaps.join(",")
    )
}

/// What the original daemon leaves under its root and in the kernel.
struct Original {
    root: PathBuf,
    mount: PathBuf,
    /// The file in the mounted volume as it was when the snapshot was made, and now.
    at_snapshot: Vec<u8>,
    now: Vec<u8>,
}

fn lay_down_the_original(fx: &Fixture) -> Original {
    let root = fx.root();
    let dm_dir = root.join("devicemapper");
    let mount = dm_dir.join("mounts").join("o-vol");
    fs::create_dir_all(&mount).unwrap();
    let pool = fx.pool_name.as_str();
    let data_sectors = 512 * MIB / 512;
    // The original's pool table: 128-sector blocks here, low water mark 32768, no zeroing.
    run(
        "dmsetup",
        &[
            "create",
            pool,
            "--table",
            &format!(
                "0 {data_sectors} thin-pool {} {} 128 32768 1 skip_block_zeroing",
                fx.meta.path().display(),
                fx.data.path().display()
            ),
        ],
    );
    let pool_dev = major_minor(pool);
    let thin = |name: &str, id: u32| {
        run(
            "dmsetup",
            &[
                "create",
                name,
                "--table",
                &format!("0 {} thin {pool_dev} {id}", VOLUME / 512),
            ],
        );
    };
    message(pool, "create_thin 1");
    thin("o-vol", 1);
    run("mkfs.ext4", &["-q", "/dev/mapper/o-vol"]);
    run("mount", &["/dev/mapper/o-vol", mount.to_str().unwrap()]);
    write_file(&mount.join("f"), 7, MIB as usize);
    run("sync", &[]);
    let at_snapshot = fs::read(mount.join("f")).unwrap();
    // A snapshot the way the original made one: suspend, create_snap, resume.
    run("dmsetup", &["suspend", "o-vol"]);
    message(pool, "create_snap 2 1");
    run("dmsetup", &["resume", "o-vol"]);
    write_file(&mount.join("f"), 8, MIB as usize);
    run("sync", &[]);
    let now = fs::read(mount.join("f")).unwrap();
    assert_ne!(now, at_snapshot);
    // A second volume, active (the original activated every volume) and not mounted.
    message(pool, "create_thin 3");
    thin("o-idle", 3);
    run("mkfs.ext4", &["-q", "/dev/mapper/o-idle"]);

    fs::write(
        root.join("convoy.cfg"),
        format!(
            r#"{{"Root":"{}","DriverList":["devicemapper"],"DefaultDriver":"devicemapper","MountNamespaceFD":"","IgnoreDockerDelete":false,"CreateOnDockerMount":false,"CmdTimeout":""}}"#,
            root.display()
        ),
    )
    .unwrap();
    fs::write(
        dm_dir.join("devicemapper.cfg"),
        format!(
            r#"{{"Root":"{}","DataDevice":"{}","MetadataDevice":"{}","ThinpoolDevice":"/dev/mapper/{pool}","ThinpoolSize":{},"ThinpoolBlockSize":128,"DefaultVolumeSize":{VOLUME},"LastDevID":3}}"#,
            dm_dir.display(),
            fx.data.path().display(),
            fx.meta.path().display(),
            512 * MIB
        ),
    )
    .unwrap();
    fs::write(
        dm_dir.join("devicemapper_volume_o-vol.json"),
        volume_record("o-vol", 1, Some(&mount), &[("o-s1", 2)]),
    )
    .unwrap();
    fs::write(
        dm_dir.join("devicemapper_volume_o-idle.json"),
        volume_record("o-idle", 3, None, &[]),
    )
    .unwrap();
    Original {
        root,
        mount,
        at_snapshot,
        now,
    }
}

/// `convoy daemon` with no flags on the original's root: its saved setup.
fn no_flags(root: &Path) -> ManagerConfig {
    ManagerConfig {
        root: root.to_path_buf(),
        drivers: Vec::new(),
        driver_opts: BTreeMap::new(),
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
async fn dm_adopt_the_original_convoys_volumes_in_place() {
    let fx = Fixture::new("adopt", 128, "ext4", 512 * MIB);
    let o = lay_down_the_original(&fx);
    let pool = fx.pool_name.clone();
    let dm_dir = o.root.join("devicemapper");

    // A thin id that no record names: refused, nothing changed.
    message(&pool, "create_thin 9");
    let files_before = listing(&dm_dir);
    let cfg_before = fs::read(o.root.join("convoy.cfg")).unwrap();
    let e = VolumeManager::open(no_flags(&o.root))
        .await
        .expect_err("a stray thin id must stop the adoption");
    let msg = e.to_string();
    assert!(
        msg.contains("thin id(s) 9") && msg.contains("0 \"delete ID\""),
        "{msg}"
    );
    assert_eq!(listing(&dm_dir), files_before);
    assert_eq!(fs::read(o.root.join("convoy.cfg")).unwrap(), cfg_before);
    assert!(listing(&dm_dir.join("volumes")).is_empty());
    assert!(Path::new("/dev/mapper/o-vol").exists());
    assert_eq!(fs::read(o.mount.join("f")).unwrap(), o.now);

    // Removed as the message says, the adoption goes through.
    message(&pool, "delete 9");
    let m = VolumeManager::open(no_flags(&o.root)).await.unwrap();
    let report = m.reconcile_report().join("\n");
    for part in [
        "adopted the original Convoy's volume o-vol (thin id 1, 1 snapshot(s), mounted at",
        "adopted the original Convoy's volume o-idle (thin id 3, 0 snapshot(s))",
        "renamed o-vol",
        "renamed o-idle",
    ] {
        assert!(report.contains(part), "{part}:\n{report}");
    }
    assert!(!report.contains("orphan"), "{report}");
    // Its records are kept aside; convoy's convoy.cfg replaces the original's.
    let kept = o.root.join("convoy-0.5-adopted");
    assert_eq!(
        listing(&kept.join("devicemapper")),
        [
            "devicemapper.cfg",
            "devicemapper_volume_o-idle.json",
            "devicemapper_volume_o-vol.json"
        ]
    );
    assert_eq!(fs::read(kept.join("convoy.cfg")).unwrap(), cfg_before);
    assert!(!dm_dir.join("devicemapper.cfg").exists());

    // The volumes, their ids, times and mount; the data, never unmounted.
    let v = m.inspect_volume("o-vol").await.unwrap();
    assert_eq!(v.driver_info["DevID"], "1");
    assert_eq!(v.created_time, CREATED);
    assert_eq!(v.mount_point.as_deref(), Some(o.mount.as_path()));
    assert_eq!(v.snapshots["o-s1"].created_time, CREATED);
    assert_eq!(fs::read(o.mount.join("f")).unwrap(), o.now);
    assert_eq!(m.mount_volume("o-vol", None).await.unwrap(), o.mount);
    assert!(!Path::new("/dev/mapper/o-vol").exists());
    assert_eq!(
        m.inspect_volume("o-idle").await.unwrap().driver_info["DevID"],
        "3"
    );

    // The snapshot holds the data of its time: backed up and restored into a new volume.
    let url = m
        .create_backup(
            "o-s1",
            &fx.backups(),
            &Default::default(),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
    m.create_volume(
        CreateVolumeRequest {
            name: Some("o-back".into()),
            backup_url: Some(url),
            ..Default::default()
        },
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    let at = m.mount_volume("o-back", None).await.unwrap();
    assert_eq!(fs::read(at.join("f")).unwrap(), o.at_snapshot);
    // New objects take thin ids the original did not use.
    let ids: Vec<String> = m
        .list_volumes(None)
        .await
        .unwrap()
        .iter()
        .map(|v| v.driver_info["DevID"].clone())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(!["1", "2", "3"]
        .contains(&m.inspect_volume("o-back").await.unwrap().driver_info["DevID"].as_str()));

    // A restart finds convoy's own setup and records: nothing more to adopt.
    drop(m);
    let m = VolumeManager::open(no_flags(&o.root)).await.unwrap();
    let report = m.reconcile_report().join("\n");
    assert!(!report.contains("adopted"), "{report}");
    assert_eq!(fs::read(o.mount.join("f")).unwrap(), o.now);

    // The adopted volume is convoy's to delete, its snapshot with it.
    for name in ["o-back", "o-vol"] {
        m.umount_volume(name).await.unwrap();
        m.delete_volume(name, false).await.unwrap();
    }
    m.delete_volume("o-idle", false).await.unwrap();
    assert!(m.list_volumes(None).await.unwrap().is_empty());
}
