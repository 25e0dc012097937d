//! VM tier: the CLI scenario with the devicemapper driver on a real pool (loop devices over
//! sparse files): create with a size, mount and write, snapshot, back up to a `vfs://` folder
//! (full, then incremental), restore both into new volumes and read them back, Docker mounts,
//! daemon restart, delete everything.

mod cli_support;

use std::path::Path;

use cli_support::{docker_id, TestDaemon};
use convoy_e2e::DmDisks;

fn read(path: &str, file: &str) -> String {
    std::fs::read_to_string(Path::new(path).join(file))
        .unwrap_or_else(|e| panic!("{path}/{file}: {e}"))
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_cli_devicemapper_volume_lifecycle() {
    let disks = DmDisks::new("cvt", 4 << 30, 64 << 20);
    let tag = disks.tag.clone();
    let mut d = TestDaemon::start_with(&[], |_| disks.daemon_flags(&["dm.defaultvolumesize=256M"]));

    let info = d.json(&["info"]);
    assert_eq!(info["General"]["DefaultDriver"], "devicemapper", "{info}");
    for key in [
        "Driver",
        "Root",
        "DataDevice",
        "MetadataDevice",
        "ThinpoolDevice",
        "ThinpoolSize",
        "ThinpoolBlockSize",
        "DefaultVolumeSize",
    ] {
        assert!(
            info["devicemapper"].get(key).is_some(),
            "info devicemapper.{key} missing: {info}"
        );
    }
    assert_eq!(
        info["devicemapper"]["DefaultVolumeSize"],
        (256u64 << 20).to_string()
    );

    let vol = format!("{tag}-vol");
    assert_eq!(d.ok(&["create", &vol, "--size", "512M"]), vol);
    let inspect = d.json(&["inspect", &vol]);
    for key in ["DevID", "Device", "MountPoint", "Size"] {
        assert!(
            inspect["DriverInfo"].get(key).is_some(),
            "DriverInfo.{key} missing: {inspect}"
        );
    }
    assert_eq!(inspect["DriverInfo"]["Size"], (512u64 << 20).to_string());
    let small = format!("{tag}-small");
    d.ok(&["create", &small]);
    assert_eq!(
        d.json(&["inspect", &small])["DriverInfo"]["Size"],
        (256u64 << 20).to_string()
    );

    let mount_point = d.ok(&["mount", &vol]);
    std::fs::write(Path::new(&mount_point).join("one"), b"first").unwrap();
    let snap1 = format!("{tag}-s1");
    // The thin snapshot is taken with the volume mounted (the driver flushes and freezes it).
    assert_eq!(d.ok(&["snapshot", "create", &vol, "--name", &snap1]), snap1);
    let snap = d.json(&["snapshot", "inspect", &snap1]);
    assert!(
        snap["DriverInfo"].get("DevID").is_some() && snap["DriverInfo"].get("Size").is_some(),
        "{snap}"
    );

    let dest = format!("vfs://{}", d.dir.path().join("backups").display());
    // The CLI streams the daemon's progress; not a terminal here, so plain lines on stderr.
    let out = d.convoy(&["backup", "create", &snap1, "--dest", &dest]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("bytes to process") && stderr.contains(": done after"),
        "{stderr}"
    );
    let backup1 = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        backup1.contains("backup=") && backup1.contains(&format!("volume={vol}")),
        "{backup1}"
    );
    std::fs::write(Path::new(&mount_point).join("two"), b"second").unwrap();
    let snap2 = format!("{tag}-s2");
    d.ok(&["snapshot", "create", &vol, "--name", &snap2]);
    let backup2 = d.ok(&["backup", "create", &snap2, "--dest", &dest]);
    assert_ne!(backup1, backup2);

    let list = d.json(&["backup", "list", &dest]);
    assert!(
        list.get(&backup1).is_some() && list.get(&backup2).is_some(),
        "{list}"
    );
    let listed = d.json(&["backup", "list", &dest, "--volume-name", &vol]);
    assert_eq!(listed.as_object().unwrap().len(), 2, "{listed}");
    let info1 = d.json(&["backup", "inspect", &backup1]);
    assert_eq!(info1["BackupURL"], backup1.as_str());
    assert_eq!(info1["VolumeName"], vol.as_str());
    assert_eq!(info1["SnapshotName"], snap1.as_str());
    assert_eq!(info1["VolumeSize"], (512u64 << 20).to_string());

    // Restore both backups into new volumes and read them back.
    let r1 = format!("{tag}-r1");
    let r2 = format!("{tag}-r2");
    assert_eq!(d.ok(&["create", &r1, "--backup", &backup1]), r1);
    assert_eq!(d.ok(&["create", &r2, "--backup", &backup2]), r2);
    let err = d.fail(&[
        "create",
        &format!("{tag}-r3"),
        "--backup",
        &backup1,
        "--size",
        "1G",
    ]);
    assert!(!err.is_empty());
    let m1 = d.ok(&["mount", &r1]);
    let m2 = d.ok(&["mount", &r2]);
    assert_eq!(read(&m1, "one"), "first");
    assert!(!Path::new(&m1).join("two").exists());
    assert_eq!(
        (read(&m2, "one"), read(&m2, "two")),
        ("first".into(), "second".into())
    );
    d.ok(&["umount", &r1]);
    d.ok(&["umount", &r2]);

    // Docker mounts of the same volume, reference-counted, across a daemon restart.
    let (a, b) = (docker_id(), docker_id());
    d.ok(&["umount", &vol]);
    let m = d.docker(
        "/VolumeDriver.Mount",
        &format!("{{\"Name\":\"{vol}\",\"ID\":\"{a}\"}}\n"),
    );
    let docker_path = m["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(read(&docker_path, "two"), "second");
    d.docker(
        "/VolumeDriver.Mount",
        &format!("{{\"Name\":\"{vol}\",\"ID\":\"{b}\"}}\n"),
    );
    d.restart();
    let list = d.json(&["list"]);
    for name in [&vol, &small, &r1, &r2] {
        assert!(
            list.get(name.as_str()).is_some(),
            "{name} lost in restart: {list}"
        );
    }
    assert_eq!(list[&vol]["MountPoint"], docker_path.as_str());
    d.docker(
        "/VolumeDriver.Unmount",
        &format!("{{\"Name\":\"{vol}\",\"ID\":\"{a}\"}}\n"),
    );
    assert_eq!(
        d.json(&["inspect", &vol])["MountPoint"],
        docker_path.as_str()
    );
    d.docker(
        "/VolumeDriver.Unmount",
        &format!("{{\"Name\":\"{vol}\",\"ID\":\"{b}\"}}\n"),
    );
    assert_eq!(d.json(&["inspect", &vol])["MountPoint"], "");

    // Delete everything.
    d.ok(&["backup", "delete", &backup1]);
    assert!(d.fail(&["backup", "inspect", &backup1]).len() > 3);
    d.ok(&["backup", "delete", &backup2]);
    d.ok(&["snapshot", "delete", &snap1]);
    d.ok(&["snapshot", "delete", &snap2]);
    d.ok(&["delete", &vol, &small, &r1, &r2]);
    assert_eq!(d.json(&["list"]), serde_json::json!({}));
    d.stop();
}
