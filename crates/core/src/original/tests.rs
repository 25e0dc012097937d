use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use super::*;
use crate::saved_config::original_saved_config;

const DM_CFG: &str = r#"{"Root":"/var/lib/rancher/convoy/devicemapper","DataDevice":"/dev/vdb","MetadataDevice":"/dev/vdc","ThinpoolDevice":"/dev/mapper/convoy-pool","ThinpoolSize":6442450944,"ThinpoolBlockSize":4096,"DefaultVolumeSize":2147483648,"LastDevID":3}"#;

const DAEMON_CFG: &str = r#"{"Root":"/var/lib/rancher/convoy","DriverList":["devicemapper"],"DefaultDriver":"devicemapper","MountNamespaceFD":"","IgnoreDockerDelete":false,"CreateOnDockerMount":false,"CmdTimeout":""}"#;

fn volume_json(name: &str, dev_id: i64, size: i64, snaps: &[(&str, i64)]) -> String {
    let snaps: Vec<String> = snaps
        .iter()
        .map(|(n, id)| {
            format!(
                r#""{n}":{{"Name":"{n}","CreatedTime":"Tue Dec 01 22:05:30 +0000 2026","DevID":{id},"Activated":false}}"#
            )
        })
        .collect();
    format!(
        r#"{{"Name":"{name}","DevID":{dev_id},"Size":{size},"Base":"","MountPoint":"/var/lib/rancher/convoy/devicemapper/mounts/{name}","CreatedTime":"Tue Dec 01 22:05:16 +0000 2026","Snapshots":{{{}}}}}"#,
        snaps.join(",")
    )
}

const GIB2: i64 = 2 << 30;
const BLOCK: u64 = 4096 * 512;

fn dm_dir(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn state(files: &[(&str, String)]) -> DmState {
    let dir = dm_dir(files);
    read_dm_state(dir.path()).unwrap().unwrap()
}

fn ids(list: &[u64]) -> BTreeSet<u64> {
    list.iter().copied().collect()
}

fn refusal(r: Result<impl std::fmt::Debug>, needle: &str) {
    let e = r.expect_err("must be refused").to_string();
    assert!(e.contains(needle), "{e}");
    assert!(e.contains("nothing was changed"), "{e}");
}

#[test]
fn the_original_saved_setup_becomes_convoys_config() {
    let root = tempfile::tempdir().unwrap();
    assert!(original_saved_config(root.path()).unwrap().is_none());
    // convoy's own convoy.cfg is not the original's.
    fs::write(
        root.path().join("convoy.cfg"),
        r#"{"root":"/x","drivers":["vfs"],"driver_opts":{}}"#,
    )
    .unwrap();
    assert!(original_saved_config(root.path()).unwrap().is_none());

    fs::write(root.path().join("convoy.cfg"), DAEMON_CFG).unwrap();
    refusal(
        original_saved_config(root.path()),
        "devicemapper.cfg is missing",
    );
    fs::create_dir(root.path().join("devicemapper")).unwrap();
    fs::write(root.path().join("devicemapper/devicemapper.cfg"), DM_CFG).unwrap();
    let config = original_saved_config(root.path()).unwrap().unwrap();
    assert_eq!(config.drivers, vec!["devicemapper".to_owned()]);
    assert_eq!(config.root, root.path());
    let opts: Vec<(&str, &str)> = config
        .driver_opts
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        opts,
        vec![
            ("dm.datadev", "/dev/vdb"),
            ("dm.defaultvolumesize", "2147483648"),
            ("dm.metadatadev", "/dev/vdc"),
            ("dm.thinpoolblocksize", "4096"),
            ("dm.thinpoolname", "convoy-pool"),
        ]
    );
    // The options are convoy's: they parse.
    crate::dm::DmOptions::parse(&config.driver_opts).unwrap();
}

#[test]
fn a_driver_convoy_lacks_is_refused() {
    let root = tempfile::tempdir().unwrap();
    fs::write(
        root.path().join("convoy.cfg"),
        DAEMON_CFG.replace(r#"["devicemapper"]"#, r#"["devicemapper","ebs"]"#),
    )
    .unwrap();
    fs::create_dir(root.path().join("devicemapper")).unwrap();
    fs::write(root.path().join("devicemapper/devicemapper.cfg"), DM_CFG).unwrap();
    refusal(original_saved_config(root.path()), "the ebs driver");
}

#[test]
fn volumes_and_snapshots_convert_with_their_ids_times_and_mounts() {
    let s = state(&[
        ("devicemapper.cfg", DM_CFG.into()),
        (
            "devicemapper_volume_vol1.json",
            volume_json("vol1", 1, GIB2, &[("s1", 2), ("s2", 3)]),
        ),
        (
            "devicemapper_volume_v2.json",
            volume_json("v2", 4, GIB2, &[]),
        ),
    ]);
    let recs = convert(&s, BLOCK, &ids(&[1, 2, 3, 4]), &ids(&[])).unwrap();
    assert_eq!(recs.len(), 2);
    let v = recs.iter().find(|r| r.name == "vol1").unwrap();
    assert_eq!(v.dev_id, Some(1));
    assert_eq!(v.size, GIB2 as u64);
    assert_eq!(v.state, ObjectState::Ready);
    assert_eq!(v.driver, "devicemapper");
    assert_eq!(v.created_time, "Tue Dec 01 22:05:16 +0000 2026");
    assert_eq!(
        v.mount_point.as_deref(),
        Some(Path::new(
            "/var/lib/rancher/convoy/devicemapper/mounts/vol1"
        ))
    );
    assert_eq!(v.filesystem.as_deref(), Some("ext4"));
    let snaps: Vec<(&str, Option<u32>)> = v
        .snapshots
        .values()
        .map(|s| (s.name.as_str(), s.dev_id))
        .collect();
    assert_eq!(snaps, vec![("s1", Some(2)), ("s2", Some(3))]);
    assert!(v.snapshots.values().all(|s| s.size == GIB2 as u64));
}

#[test]
fn what_cannot_be_adopted_safely_is_refused() {
    let cfg = ("devicemapper.cfg", DM_CFG.to_owned());
    let one = |json: String| state(&[cfg.clone(), ("devicemapper_volume_vol1.json", json)]);
    let pool = ids(&[1, 2, 3]);
    let none = ids(&[]);
    // A thin id the pool lacks.
    refusal(
        convert(&one(volume_json("vol1", 9, GIB2, &[])), BLOCK, &pool, &none),
        "does not hold",
    );
    // A thin id no record names (convoy would delete it as an orphan).
    refusal(
        convert(&one(volume_json("vol1", 1, GIB2, &[])), BLOCK, &pool, &none),
        "thin id(s) 2, 3 that no record",
    );
    // ... unless convoy's own records hold it.
    convert(
        &one(volume_json("vol1", 1, GIB2, &[])),
        BLOCK,
        &pool,
        &ids(&[2, 3]),
    )
    .unwrap();
    // Two objects on one thin id, one name twice.
    refusal(
        convert(
            &one(volume_json("vol1", 1, GIB2, &[("s1", 1)])),
            BLOCK,
            &pool,
            &none,
        ),
        "share thin id 1",
    );
    refusal(
        convert(
            &one(volume_json("vol1", 1, GIB2, &[("vol1", 2)])),
            BLOCK,
            &pool,
            &none,
        ),
        "used twice",
    );
    // A size that is not whole pool blocks, an image-based volume, a bad name.
    refusal(
        convert(
            &one(volume_json("vol1", 1, GIB2 + 512, &[])),
            BLOCK,
            &ids(&[1]),
            &none,
        ),
        "not a whole number",
    );
    refusal(
        convert(
            &one(volume_json("vol1", 1, GIB2, &[]).replace(r#""Base":"""#, r#""Base":"img""#)),
            BLOCK,
            &ids(&[1]),
            &none,
        ),
        "image img",
    );
    refusal(
        convert(
            &state(&[
                cfg.clone(),
                (
                    "devicemapper_volume_-x.json",
                    volume_json("-x", 1, GIB2, &[]),
                ),
            ]),
            BLOCK,
            &ids(&[1]),
            &none,
        ),
        "must start with a letter or digit",
    );
    // A file whose record names another volume.
    refusal(
        convert(
            &state(&[
                cfg.clone(),
                (
                    "devicemapper_volume_a1.json",
                    volume_json("b1", 1, GIB2, &[]),
                ),
            ]),
            BLOCK,
            &ids(&[1]),
            &none,
        ),
        "names volume \"b1\"",
    );
}

#[test]
fn reading_the_driver_directory() {
    assert!(read_dm_state(Path::new("/nonexistent/convoy"))
        .unwrap()
        .is_none());
    let empty = dm_dir(&[]);
    assert!(read_dm_state(empty.path()).unwrap().is_none());
    let lone = dm_dir(&[(
        "devicemapper_volume_v1.json",
        volume_json("v1", 1, GIB2, &[]),
    )]);
    refusal(read_dm_state(lone.path()), "pool file");
    let image = dm_dir(&[
        ("devicemapper.cfg", DM_CFG.into()),
        ("devicemapper_image_i1.json", "{}".into()),
    ]);
    refusal(read_dm_state(image.path()), "images");
    let torn = dm_dir(&[
        ("devicemapper.cfg", DM_CFG.into()),
        ("devicemapper_volume_v1.json", "{\"Name\":".into()),
    ]);
    refusal(read_dm_state(torn.path()), "cannot be parsed");
}

#[test]
fn another_pool_is_refused_naming_each_difference() {
    let cfg: DmConfig = serde_json::from_str(DM_CFG).unwrap();
    check_same_pool(
        Path::new("x"),
        &cfg,
        "convoy-pool",
        Path::new("/dev/vdb"),
        Path::new("/dev/vdc"),
        4096,
    )
    .unwrap();
    let e = check_same_pool(
        Path::new("x"),
        &cfg,
        "other",
        Path::new("/dev/vdb"),
        Path::new("/dev/vdd"),
        128,
    )
    .unwrap_err()
    .to_string();
    for part in [
        "pool convoy-pool (dm.thinpoolname=other)",
        "metadata device /dev/vdc (dm.metadatadev=/dev/vdd)",
        "block size 4096 sectors (dm.thinpoolblocksize=128)",
    ] {
        assert!(e.contains(part), "{part}: {e}");
    }
    assert!(!e.contains("data device /dev/vdb"), "{e}");
}

#[test]
fn retired_files_are_kept_once_in_the_adopted_directory() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("devicemapper")).unwrap();
    let rel = Path::new("devicemapper/devicemapper.cfg");
    fs::write(root.path().join(rel), "first").unwrap();
    preserve(root.path(), rel).unwrap();
    fs::write(root.path().join(rel), "second").unwrap();
    retire(root.path(), rel).unwrap();
    assert!(!root.path().join(rel).exists());
    assert_eq!(
        fs::read_to_string(root.path().join(ADOPTED_DIR).join(rel)).unwrap(),
        "first"
    );
    // Retiring again (a repeated adoption) is harmless.
    retire(root.path(), rel).unwrap();
}
