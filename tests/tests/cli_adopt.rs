//! VM tier: a host taken over from the original Convoy in place, through the `convoy` binary as
//! a user does it: what the original 0.5 daemon left (its pool table with 2 MiB blocks, a
//! mounted volume with a file, a snapshot made its way, its JSON records), then `convoy daemon`
//! started with the original daemon's own flags. The volume is listed, still mounted, its data
//! intact; its snapshot backs up and restores; a restart without flags reuses the setup.

mod cli_support;

use std::fs;
use std::path::Path;

use cli_support::TestDaemon;
use convoy_e2e::{run, DmDisks};

const VOLUME: u64 = 64 << 20;
const CREATED: &str = "Tue Dec 01 22:05:16 +0000 2026";

/// Lays down what the original daemon leaves on stopping, under `root`, on a pool it made.
fn the_original(root: &Path, pool: &str, vol: &str, snap: &str, data: &str, meta: &str) {
    let dm_dir = root.join("devicemapper");
    let mount = dm_dir.join("mounts").join(vol);
    fs::create_dir_all(&mount).unwrap();
    let sectors = 512u64 << 20 >> 9;
    run(
        "dmsetup",
        &[
            "create",
            pool,
            "--table",
            &format!("0 {sectors} thin-pool {meta} {data} 4096 32768 1 skip_block_zeroing"),
        ],
    );
    let pool_dev = run(
        "dmsetup",
        &[
            "info",
            "-c",
            "--noheadings",
            "-o",
            "major,minor",
            "--separator",
            ":",
            pool,
        ],
    );
    run("dmsetup", &["message", pool, "0", "create_thin 1"]);
    run(
        "dmsetup",
        &[
            "create",
            vol,
            "--table",
            &format!("0 {} thin {} 1", VOLUME / 512, pool_dev.trim()),
        ],
    );
    let dev = format!("/dev/mapper/{vol}");
    run("mkfs.ext4", &["-q", &dev]);
    run("mount", &[&dev, mount.to_str().unwrap()]);
    fs::write(mount.join("f"), "before the snapshot").unwrap();
    run("sync", &[]);
    run("dmsetup", &["suspend", vol]);
    run("dmsetup", &["message", pool, "0", "create_snap 2 1"]);
    run("dmsetup", &["resume", vol]);
    fs::write(mount.join("f"), "after the snapshot").unwrap();
    run("sync", &[]);

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
            r#"{{"Root":"{}","DataDevice":"{data}","MetadataDevice":"{meta}","ThinpoolDevice":"/dev/mapper/{pool}","ThinpoolSize":{},"ThinpoolBlockSize":4096,"DefaultVolumeSize":{VOLUME},"LastDevID":2}}"#,
            dm_dir.display(),
            512u64 << 20
        ),
    )
    .unwrap();
    fs::write(
        dm_dir.join(format!("devicemapper_volume_{vol}.json")),
        format!(
            r#"{{"Name":"{vol}","DevID":1,"Size":{VOLUME},"Base":"","MountPoint":"{}","CreatedTime":"{CREATED}","Snapshots":{{"{snap}":{{"Name":"{snap}","CreatedTime":"{CREATED}","DevID":2,"Activated":false}}}}}}"#,
            mount.display()
        ),
    )
    .unwrap();
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_cli_adopts_the_original_daemons_volumes_in_place() {
    let disks = DmDisks::new("cad", 512 << 20, 64 << 20);
    let tag = disks.tag.clone();
    let pool = disks.pool.clone();
    let (vol, snap) = (format!("{tag}-vol"), format!("{tag}-s1"));
    let mut d = TestDaemon::start_with(&[], |d| {
        the_original(
            &d.root,
            &pool,
            &vol,
            &snap,
            disks.data.as_str(),
            disks.meta.as_str(),
        );
        // The flags the original daemon ran with.
        disks.daemon_flags(&[])
    });
    let mount = d.root.join("devicemapper/mounts").join(&vol);

    let list = d.json(&["list"]);
    let v = &list[vol.as_str()];
    assert_eq!(v["DriverInfo"]["DevID"], "1", "{list}");
    assert_eq!(v["CreatedTime"], CREATED, "{list}");
    assert_eq!(v["MountPoint"], mount.display().to_string(), "{list}");
    assert_eq!(
        v["Snapshots"][snap.as_str()]["DriverInfo"]["DevID"],
        "2",
        "{list}"
    );
    assert_eq!(
        fs::read_to_string(mount.join("f")).unwrap(),
        "after the snapshot"
    );
    assert_eq!(d.ok(&["mount", &vol]), mount.display().to_string());
    assert!(d.log().contains("adopted the original Convoy's volume"));
    assert!(d
        .root
        .join("convoy-0.5-adopted/devicemapper/devicemapper.cfg")
        .exists());

    // The snapshot holds its time's data: backed up, restored into a new volume.
    let dest = format!("vfs://{}", d.dir.path().join("backups").display());
    let url = d.ok(&["backup", "create", &snap, "--dest", &dest]);
    let back = format!("{tag}-back");
    d.ok(&["create", &back, "--backup", &url]);
    let at = d.ok(&["mount", &back]);
    assert_eq!(
        fs::read_to_string(Path::new(&at).join("f")).unwrap(),
        "before the snapshot"
    );

    // A restart without flags reuses the setup convoy saved; nothing more to adopt.
    d.restart();
    let list = d.json(&["list"]);
    assert_eq!(list.as_object().unwrap().len(), 2, "{list}");
    assert_eq!(
        fs::read_to_string(mount.join("f")).unwrap(),
        "after the snapshot"
    );
    for name in [&back, &vol] {
        d.ok(&["umount", name]);
        d.ok(&["delete", name]);
    }
    assert!(d.json(&["list"]).as_object().unwrap().is_empty());
    d.stop();
}
