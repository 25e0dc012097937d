//! The Docker volume plugin endpoints, replaying exactly what dockerd sends: no `Content-Type`,
//! JSON bodies ending in `\n`, `Opts: null`, two Mount/Unmount pairs per `docker run` with random
//! IDs and a `Get` after every call. Plus malformed input and the `/v1` API's errors.

mod cli_support;

use cli_support::{docker_id, is_root, TestDaemon};
use serde_json::json;

fn get(d: &TestDaemon, name: &str) -> serde_json::Value {
    d.docker("/VolumeDriver.Get", &format!("{{\"Name\":\"{name}\"}}\n"))
}

fn mount_point(d: &TestDaemon, name: &str) -> String {
    d.json(&["inspect", name])["MountPoint"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn docker_plugin_replays_a_dockerd_volume_lifecycle() {
    let d = TestDaemon::start(&[]);
    assert_eq!(
        d.docker("/Plugin.Activate", ""),
        json!({"Implements": ["VolumeDriver"]})
    );
    assert_eq!(
        d.docker("/VolumeDriver.Capabilities", "{}\n"),
        json!({"Capabilities": {"Scope": "local"}})
    );

    // docker volume create -d convoy -o size=1G v1; then an implicit create with Opts null.
    let created = d.docker(
        "/VolumeDriver.Create",
        "{\"Name\":\"v1\",\"Opts\":{\"size\":\"1G\"}}\n",
    );
    assert_eq!(created, json!({"Err": ""}));
    assert_eq!(
        d.docker("/VolumeDriver.Create", "{\"Name\":\"v2\",\"Opts\":null}\n"),
        json!({"Err": ""})
    );
    // Create is idempotent.
    assert_eq!(
        d.docker("/VolumeDriver.Create", "{\"Name\":\"v1\",\"Opts\":null}\n"),
        json!({"Err": ""})
    );
    assert_eq!(d.json(&["inspect", "v1"])["Name"], "v1");

    let got = get(&d, "v1");
    assert_eq!(got["Err"], "");
    assert_eq!(got["Volume"]["Name"], "v1");
    assert_eq!(got["Volume"]["Mountpoint"], "");
    assert_eq!(got["Volume"]["Status"]["DockerMounts"], 0);

    let list = d.docker("/VolumeDriver.List", "{}\n");
    let names: Vec<_> = list["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Name"].clone())
        .collect();
    assert_eq!(names, [json!("v1"), json!("v2")], "{list}");

    // One `docker run -v v1:/data`: two Mount/Unmount pairs with random IDs, Get after each.
    for _run in 0..2 {
        let (first, second) = (docker_id(), docker_id());
        let m1 = d.docker(
            "/VolumeDriver.Mount",
            &format!("{{\"Name\":\"v1\",\"ID\":\"{first}\"}}\n"),
        );
        assert_eq!(m1["Err"], "", "{m1}");
        let path = m1["Mountpoint"].as_str().unwrap().to_string();
        assert!(std::path::Path::new(&path).is_dir(), "{path}");
        assert_eq!(get(&d, "v1")["Volume"]["Mountpoint"], path.as_str());
        let m2 = d.docker(
            "/VolumeDriver.Mount",
            &format!("{{\"Name\":\"v1\",\"ID\":\"{second}\"}}\n"),
        );
        assert_eq!(m2["Mountpoint"], path.as_str());
        assert_eq!(get(&d, "v1")["Volume"]["Status"]["DockerMounts"], 2);
        assert_eq!(
            d.docker("/VolumeDriver.Path", "{\"Name\":\"v1\"}\n")["Mountpoint"],
            path.as_str()
        );
        std::fs::write(std::path::Path::new(&path).join("f"), b"x").unwrap();

        // The first ID leaves: still mounted for the second.
        let u1 = d.docker(
            "/VolumeDriver.Unmount",
            &format!("{{\"Name\":\"v1\",\"ID\":\"{first}\"}}\n"),
        );
        assert_eq!(u1, json!({"Err": ""}));
        assert_eq!(get(&d, "v1")["Volume"]["Mountpoint"], path.as_str());
        assert_eq!(mount_point(&d, "v1"), path);
        // The last ID leaves: unmounted.
        let u2 = d.docker(
            "/VolumeDriver.Unmount",
            &format!("{{\"Name\":\"v1\",\"ID\":\"{second}\"}}\n"),
        );
        assert_eq!(u2, json!({"Err": ""}));
        assert_eq!(get(&d, "v1")["Volume"]["Mountpoint"], "");
        assert_eq!(mount_point(&d, "v1"), "");
    }
    // An Unmount with an ID that never mounted changes nothing.
    assert_eq!(
        d.docker(
            "/VolumeDriver.Unmount",
            &format!("{{\"Name\":\"v1\",\"ID\":\"{}\"}}\n", docker_id())
        ),
        json!({"Err": ""})
    );

    // docker volume rm v1: Get then Remove; then the volume is gone.
    assert_eq!(get(&d, "v1")["Err"], "");
    assert_eq!(
        d.docker("/VolumeDriver.Remove", "{\"Name\":\"v1\"}\n"),
        json!({"Err": ""})
    );
    let gone = get(&d, "v1");
    assert!(gone["Err"].as_str().unwrap().contains("v1"), "{gone}");
    assert!(gone.get("Volume").is_none(), "{gone}");
    assert!(d.fail(&["inspect", "v1"]).contains("v1"));
    // Remove again is harmless.
    assert_eq!(
        d.docker("/VolumeDriver.Remove", "{\"Name\":\"v1\"}\n"),
        json!({"Err": ""})
    );
}

#[test]
fn docker_mount_references_survive_a_daemon_restart() {
    let mut d = TestDaemon::start(&[]);
    assert_eq!(
        d.docker("/VolumeDriver.Create", "{\"Name\":\"vol\",\"Opts\":null}\n"),
        json!({"Err": ""})
    );
    let (a, b) = (docker_id(), docker_id());
    d.docker(
        "/VolumeDriver.Mount",
        &format!("{{\"Name\":\"vol\",\"ID\":\"{a}\"}}\n"),
    );
    let path = d.docker(
        "/VolumeDriver.Mount",
        &format!("{{\"Name\":\"vol\",\"ID\":\"{b}\"}}\n"),
    )["Mountpoint"]
        .clone();

    // A mounted volume cannot be removed under Docker's feet.
    let busy = d.docker("/VolumeDriver.Remove", "{\"Name\":\"vol\"}\n");
    assert!(busy["Err"].as_str().unwrap().contains("2 Docker"), "{busy}");

    d.restart();
    // After a plugin restart dockerd goes straight to List/Get: the volume and its mounts are there.
    assert_eq!(get(&d, "vol")["Volume"]["Mountpoint"], path);
    assert_eq!(get(&d, "vol")["Volume"]["Status"]["DockerMounts"], 2);
    d.docker(
        "/VolumeDriver.Unmount",
        &format!("{{\"Name\":\"vol\",\"ID\":\"{a}\"}}\n"),
    );
    assert_eq!(get(&d, "vol")["Volume"]["Mountpoint"], path);
    d.docker(
        "/VolumeDriver.Unmount",
        &format!("{{\"Name\":\"vol\",\"ID\":\"{b}\"}}\n"),
    );
    assert_eq!(get(&d, "vol")["Volume"]["Mountpoint"], "");
    assert_eq!(
        d.docker("/VolumeDriver.Remove", "{\"Name\":\"vol\"}\n"),
        json!({"Err": ""})
    );
}

/// Runs a command as root would by hand; panics with its output if it fails.
fn sh(command: &[&str]) {
    let out = std::process::Command::new(command[0])
        .args(&command[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unmounts the share when the test ends, however it ends (before its temp dir goes).
struct Share(std::path::PathBuf);

impl Drop for Share {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A volume unmounted behind convoy's back is never handed to Docker as mounted: Mount asks
/// the manager to mount it (which checks where it really is), not the record. The vfs
/// driver's volumes are directories under `vfs.path`, here a share (a bind mount, as an NFS
/// export would be) that is unmounted by hand while a container holds a volume: the next
/// Mount answers an error, not a path that is no longer the volume, and once the share is
/// back it answers the volume again. (A devicemapper volume unmounted by hand is mounted
/// again: `dm_a_volume_unmounted_behind_convoys_back_is_mounted_again_for_a_holder`, VM tier.)
#[test]
fn docker_mount_of_a_volume_unmounted_behind_convoys_back_is_not_handed_out() {
    if !is_root() {
        eprintln!("SKIPPED: the share is a bind mount, which needs root");
        return;
    }
    let d = TestDaemon::start_with(&[], |d| {
        let export = d.dir.path().join("export");
        std::fs::create_dir_all(&export).unwrap();
        std::fs::create_dir_all(&d.vols).unwrap();
        sh(&[
            "mount",
            "--bind",
            export.to_str().unwrap(),
            d.vols.to_str().unwrap(),
        ]);
        vec![
            "--drivers".into(),
            "vfs".into(),
            "--driver-opts".into(),
            format!("vfs.path={}", d.vols.display()),
        ]
    });
    let share = Share(d.vols.clone());
    let export = d.dir.path().join("export");
    let mount = |id: &str| {
        d.docker(
            "/VolumeDriver.Mount",
            &format!("{{\"Name\":\"shared\",\"ID\":\"{id}\"}}\n"),
        )
    };
    assert_eq!(
        d.docker(
            "/VolumeDriver.Create",
            "{\"Name\":\"shared\",\"Opts\":null}\n"
        ),
        json!({"Err": ""})
    );
    let (a, b) = (docker_id(), docker_id());
    let first = mount(&a);
    assert_eq!(first["Err"], "", "{first}");
    let path = std::path::PathBuf::from(first["Mountpoint"].as_str().unwrap());
    std::fs::write(path.join("hello"), b"from the first container").unwrap();

    // Behind convoy's back: the share goes; the record still says the volume is mounted.
    sh(&["umount", share.0.to_str().unwrap()]);
    assert!(!path.exists());
    assert_eq!(mount_point(&d, "shared"), path.display().to_string());
    let second = mount(&b);
    assert_eq!(second["Mountpoint"], "", "handed out while gone: {second}");
    let err = second["Err"].as_str().unwrap();
    assert!(err.contains("not found") && err.contains("shared"), "{err}");
    assert_eq!(get(&d, "shared")["Volume"]["Status"]["DockerMounts"], 1);

    // The share is back: the volume is answered again, with its content.
    sh(&[
        "mount",
        "--bind",
        export.to_str().unwrap(),
        share.0.to_str().unwrap(),
    ]);
    let second = mount(&b);
    assert_eq!(second["Err"], "", "{second}");
    assert_eq!(second["Mountpoint"], path.display().to_string());
    assert_eq!(
        std::fs::read(path.join("hello")).unwrap(),
        b"from the first container"
    );
    assert_eq!(get(&d, "shared")["Volume"]["Status"]["DockerMounts"], 2);
    for id in [&a, &b] {
        d.docker(
            "/VolumeDriver.Unmount",
            &format!("{{\"Name\":\"shared\",\"ID\":\"{id}\"}}\n"),
        );
    }
    assert_eq!(get(&d, "shared")["Volume"]["Mountpoint"], "");
    assert_eq!(
        d.docker("/VolumeDriver.Remove", "{\"Name\":\"shared\"}\n"),
        json!({"Err": ""})
    );
}

#[test]
fn docker_flags_ignore_delete_and_create_on_mount() {
    let d = TestDaemon::start(&["--ignore-docker-delete", "--create-on-docker-mount"]);
    let id = docker_id();
    let mounted = d.docker(
        "/VolumeDriver.Mount",
        &format!("{{\"Name\":\"auto\",\"ID\":\"{id}\"}}\n"),
    );
    assert_eq!(mounted["Err"], "", "{mounted}");
    assert_eq!(d.json(&["inspect", "auto"])["Name"], "auto");
    d.docker(
        "/VolumeDriver.Unmount",
        &format!("{{\"Name\":\"auto\",\"ID\":\"{id}\"}}\n"),
    );
    assert_eq!(
        d.docker("/VolumeDriver.Remove", "{\"Name\":\"auto\"}\n"),
        json!({"Err": ""})
    );
    assert_eq!(
        d.json(&["inspect", "auto"])["Name"],
        "auto",
        "kept with --ignore-docker-delete"
    );

    // Without --create-on-docker-mount, mounting an unknown volume is an error.
    let plain = TestDaemon::start(&[]);
    let err = plain.docker(
        "/VolumeDriver.Mount",
        &format!("{{\"Name\":\"nope\",\"ID\":\"{id}\"}}\n"),
    );
    assert!(err["Err"].as_str().unwrap().contains("nope"), "{err}");
    assert_eq!(err["Mountpoint"], "");
}

#[test]
fn docker_and_v1_malformed_input_gets_clear_errors_and_the_daemon_keeps_serving() {
    let d = TestDaemon::start(&[]);
    // Plugin endpoints answer 200 with Err.
    for (endpoint, body) in [
        ("/VolumeDriver.Create", "{"),
        ("/VolumeDriver.Create", "[1,2]\n"),
        ("/VolumeDriver.Mount", "{\"Name\": 5}\n"),
        ("/VolumeDriver.Get", "\u{1}\u{2}"),
    ] {
        let answer = d.docker(endpoint, body);
        let err = answer["Err"].as_str().unwrap();
        assert!(
            err.contains("invalid JSON") && err.contains(endpoint),
            "{endpoint} {body:?}: {answer}"
        );
    }
    let err = d.docker("/VolumeDriver.Create", "{\"Name\":\"\"}\n");
    assert!(
        err["Err"].as_str().unwrap().contains("Name is required"),
        "{err}"
    );
    let err = d.docker(
        "/VolumeDriver.Create",
        "{\"Name\":\"bad name\",\"Opts\":null}\n",
    );
    assert!(err["Err"].as_str().unwrap().contains("bad name"), "{err}");
    let err = d.docker(
        "/VolumeDriver.Create",
        "{\"Name\":\"vol\",\"Opts\":{\"size\":\"huge\"}}\n",
    );
    assert!(err["Err"].as_str().unwrap().contains("huge"), "{err}");
    let err = d.docker(
        "/VolumeDriver.Create",
        "{\"Name\":\"vol\",\"Opts\":{\"colour\":\"red\"}}\n",
    );
    let text = err["Err"].as_str().unwrap();
    assert!(
        text.contains("colour") && text.contains("size, backup, driver, endpoint"),
        "{text}"
    );
    // Options of the original's other drivers are accepted and ignored.
    let ok = d.docker(
        "/VolumeDriver.Create",
        "{\"Name\":\"vol\",\"Opts\":{\"iops\":\"100\",\"driver\":\"vfs\"}}\n",
    );
    assert_eq!(ok, json!({"Err": ""}));

    // /v1 answers {"Error": ...} with a status by kind.
    let (status, body) = d.raw("POST", "/v1/volumes/create", "{");
    assert_eq!(status, 400);
    assert!(
        body["Error"].as_str().unwrap().contains("invalid JSON"),
        "{body}"
    );
    let (status, body) = d.raw("GET", "/v1/volumes/", "{\"VolumeName\":\"ghost\"}");
    assert_eq!(status, 404);
    assert!(body["Error"].as_str().unwrap().contains("ghost"), "{body}");
    let (status, body) = d.raw("GET", "/v1/volumes/", "");
    assert_eq!(status, 400);
    assert!(
        body["Error"]
            .as_str()
            .unwrap()
            .contains("VolumeName is required"),
        "{body}"
    );
    let (status, body) = d.raw("POST", "/v1/nothing/here", "{}");
    assert_eq!(status, 404);
    assert!(
        body["Error"]
            .as_str()
            .unwrap()
            .contains("unknown route POST /v1/nothing/here"),
        "{body}"
    );
    let (status, body) = d.raw("PUT", "/v1/volumes/create", "{}");
    assert_eq!(status, 405);
    assert!(body["Error"].as_str().unwrap().contains("PUT"), "{body}");
    let (status, body) = d.raw("POST", "/v1/volumes/create", "{\"Name\":\"dup\"}");
    assert_eq!((status, body["Name"].clone()), (200, json!("dup")));
    let (status, _) = d.raw("POST", "/v1/volumes/create", "{\"Name\":\"dup\"}");
    assert_eq!(status, 409);

    // The original's inspect also works with the name in the query string.
    let (status, body) = d.raw("GET", "/v1/volumes/?VolumeName=dup", "");
    assert_eq!((status, body["Name"].clone()), (200, json!("dup")));

    // Still serving, state intact.
    assert_eq!(get(&d, "vol")["Volume"]["Name"], "vol");
    assert_eq!(d.json(&["list"]).as_object().unwrap().len(), 2);
}
