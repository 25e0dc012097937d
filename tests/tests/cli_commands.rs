//! Every `convoy` command against a running `convoy daemon` (vfs driver), as a user runs them:
//! outputs as the original printed them, errors as `{"Error": ...}` with exit status 1.

mod cli_support;

use cli_support::TestDaemon;

#[test]
fn cli_volume_commands_print_what_the_original_printed() {
    let d = TestDaemon::start(&[]);

    let info = d.json(&["info"]);
    assert_eq!(info["General"]["DefaultDriver"], "vfs", "{info}");
    assert_eq!(
        info["General"]["DriverList"],
        serde_json::json!(["vfs"]),
        "{info}"
    );
    assert!(info["vfs"].is_object(), "{info}");

    // create prints the bare name; flags may follow the positional argument.
    assert_eq!(d.ok(&["create", "vol1", "--size", "1G"]), "vol1");
    let generated = d.ok(&["create"]);
    assert!(
        generated.starts_with("volume-") && generated.len() == 7 + 16,
        "{generated}"
    );
    let verbose = d.json(&["create", "vol2", "--verbose"]);
    assert_eq!(verbose["Name"], "vol2");
    assert_eq!(verbose["Driver"], "vfs");
    assert_eq!(verbose["MountPoint"], "");
    for key in ["CreatedTime", "DriverInfo", "Snapshots"] {
        assert!(verbose.get(key).is_some(), "{key} missing: {verbose}");
    }
    assert_eq!(d.ok(&["create", "--driver", "vfs", "vol3"]), "vol3");

    // inspect / list print JSON objects with the original's keys.
    let vol1 = d.json(&["inspect", "vol1"]);
    assert_eq!(vol1["Name"], "vol1");
    let list = d.json(&["list"]);
    for name in ["vol1", "vol2", "vol3", generated.as_str()] {
        assert_eq!(list[name]["Name"], name, "{list}");
    }
    let by_driver = d.json(&["list", "--driver", "vfs"]);
    assert_eq!(by_driver.as_object().unwrap().len(), 4, "{by_driver}");

    // mount prints the mount point; data written there stays across umount/mount.
    let mount_point = d.ok(&["mount", "vol1"]);
    assert!(!mount_point.is_empty());
    std::fs::write(std::path::Path::new(&mount_point).join("f"), b"hello").unwrap();
    assert_eq!(
        d.json(&["inspect", "vol1"])["MountPoint"],
        mount_point.as_str()
    );
    d.ok(&["umount", "vol1"]);
    assert_eq!(d.json(&["inspect", "vol1"])["MountPoint"], "");
    let again = d.ok(&["mount", "vol1"]);
    assert_eq!(
        std::fs::read(std::path::Path::new(&again).join("f")).unwrap(),
        b"hello"
    );
    let verbose_mount = d.json(&["mount", "vol1", "--verbose"]);
    assert_eq!(verbose_mount["MountPoint"], again.as_str());

    // delete takes several names; -r forgets without destroying.
    assert_eq!(d.ok(&["delete", "vol2", generated.as_str()]), "");
    assert_eq!(d.ok(&["delete", "vol3", "-r"]), "");
    let list = d.json(&["list"]);
    assert_eq!(
        list.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["vol1"],
        "{list}"
    );
    assert!(d.fail(&["inspect", "vol2"]).contains("vol2"));
}

#[test]
fn cli_snapshot_and_backup_commands() {
    let d = TestDaemon::start(&[]);
    d.ok(&["create", "vol1"]);
    assert_eq!(
        d.ok(&["snapshot", "create", "vol1", "--name", "snap1"]),
        "snap1"
    );
    let generated = d.ok(&["snapshot", "create", "vol1"]);
    assert!(generated.starts_with("snapshot-"), "{generated}");
    let verbose = d.json(&["snapshot", "create", "vol1", "--name", "snap2", "--verbose"]);
    assert_eq!(verbose["Name"], "snap2");

    let snap = d.json(&["snapshot", "inspect", "snap1"]);
    assert_eq!(snap["Name"], "snap1");
    assert_eq!(snap["VolumeName"], "vol1");
    for key in ["VolumeCreatedAt", "CreatedTime", "DriverInfo"] {
        assert!(snap.get(key).is_some(), "{key} missing: {snap}");
    }
    let vol = d.json(&["inspect", "vol1"]);
    assert!(vol["Snapshots"]["snap1"].is_object(), "{vol}");
    assert_eq!(vol["Snapshots"].as_object().unwrap().len(), 3, "{vol}");

    // Volume and snapshot names share one namespace.
    assert!(d.fail(&["create", "snap1"]).contains("snap1"));

    d.ok(&["snapshot", "delete", "snap1"]);
    assert!(d.fail(&["snapshot", "inspect", "snap1"]).contains("snap1"));
    assert!(d.fail(&["snapshot", "delete", "snap1"]).contains("snap1"));

    // The vfs driver backs a snapshot up as a tree image through the block store and restores it
    // into a new volume: the CLI prints the backup URL, inspect names the driver.
    let dest = format!("vfs://{}", d.dir.path().join("backups").display());
    let url = d.ok(&["backup", "create", "snap2", "--dest", &dest]);
    assert!(url.starts_with(&dest) && url.contains("backup="), "{url}");
    let backup = d.json(&["backup", "inspect", &url]);
    assert_eq!(backup["DriverName"], "vfs", "{backup}");
    assert_eq!(backup["SnapshotName"], "snap2", "{backup}");
    assert_eq!(
        d.ok(&["create", "fromsnap2", "--backup", &url]),
        "fromsnap2"
    );
    assert_eq!(d.json(&["inspect", "fromsnap2"])["Name"], "fromsnap2");
    d.ok(&["delete", "fromsnap2"]);
    let err = d.fail(&[
        "backup",
        "--s3-endpoint",
        "http://127.0.0.1:1",
        "create",
        "nosuch",
        "--dest",
        &dest,
    ]);
    assert!(err.contains("nosuch"), "{err}");
    assert!(
        d.fail(&[
            "create",
            "restored",
            "--backup",
            "vfs:///nowhere?backup=b&volume=v"
        ])
        .len()
            > 5
    );
    assert!(d.fail(&["inspect", "restored"]).contains("restored"));

    // An empty destination lists no backups; unknown backups are clear errors.
    let empty = format!("vfs://{}", d.dir.path().join("empty").display());
    std::fs::create_dir_all(d.dir.path().join("empty")).unwrap();
    assert_eq!(d.json(&["backup", "list", &empty]), serde_json::json!({}));
    assert_eq!(
        d.json(&["backup", "list", &empty, "--volume-name", "vol1"]),
        serde_json::json!({})
    );
    let missing = format!("{empty}?backup=backup-0123456789abcdef&volume=vol1");
    assert!(d.fail(&["backup", "inspect", &missing]).len() > 5);
    assert!(d.fail(&["backup", "delete", &missing]).len() > 5);
    assert!(d
        .fail(&["backup", "list", "ftp://nope"])
        .contains("ftp://nope"));
}

#[test]
fn cli_errors_are_json_with_exit_status_1() {
    let d = TestDaemon::start(&[]);
    let err = d.fail(&["create", "bad name!"]);
    assert!(err.contains("bad name!"), "{err}");
    let err = d.fail(&["create", "--size", "1G", "--", "-dash"]);
    assert!(err.contains("-dash"), "{err}");
    let err = d.fail(&["create", ".hidden"]);
    assert!(err.contains(".hidden"), "{err}");
    let err = d.fail(&["create", "vol", "--size", "lots"]);
    assert!(
        err.contains("invalid size") && err.contains("lots"),
        "{err}"
    );
    let err = d.fail(&["create", "vol", "--driver", "nosuchdriver"]);
    assert!(err.contains("nosuchdriver"), "{err}");
    assert!(d.fail(&["inspect", "ghost"]).contains("ghost"));
    assert!(d.fail(&["mount", "ghost"]).contains("ghost"));
    assert!(d.fail(&["umount", "ghost"]).contains("ghost"));
    assert!(d.fail(&["delete", "ghost"]).contains("ghost"));
    assert!(d.fail(&["snapshot", "create", "ghost"]).contains("ghost"));
    d.ok(&["create", "dup"]);
    assert!(d.fail(&["create", "dup"]).contains("dup"));
    // Delete goes on with the other names and reports the failures.
    d.ok(&["create", "keep"]);
    let err = d.fail(&["delete", "ghost1", "keep", "ghost2"]);
    assert!(err.contains("ghost1") && err.contains("ghost2"), "{err}");
    assert!(d.fail(&["inspect", "keep"]).contains("keep"));

    // No daemon on the socket: a clear error naming it.
    let other = d.dir.path().join("nobody.sock");
    let out = std::process::Command::new(cli_support::convoy_bin())
        .args(["-s", other.to_str().unwrap(), "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cannot connect") && text.contains("nobody.sock"),
        "{text}"
    );

    // The daemon is still serving after all of that.
    assert_eq!(d.json(&["inspect", "dup"])["Name"], "dup");
}

#[test]
fn cli_help_and_completions() {
    let bin = cli_support::convoy_bin();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = run(&["--help"]);
    for command in [
        "daemon",
        "info",
        "create",
        "delete",
        "mount",
        "umount",
        "list",
        "inspect",
        "snapshot",
        "backup",
        "completion",
    ] {
        assert!(
            top.contains(command),
            "{command} missing from --help:\n{top}"
        );
    }
    for args in [
        &["daemon", "--help"][..],
        &["create", "--help"],
        &["delete", "--help"],
        &["mount", "--help"],
        &["snapshot", "create", "--help"],
        &["backup", "create", "--help"],
        &["backup", "list", "--help"],
    ] {
        assert!(run(args).contains("Usage"), "{args:?}");
    }
    let daemon_help = run(&["daemon", "--help"]);
    for flag in [
        "--root",
        "--drivers",
        "--driver-opts",
        "--log",
        "--ignore-docker-delete",
        "--create-on-docker-mount",
        "--cmd-timeout",
        "--mnt-ns",
        "--ignore-config-file",
    ] {
        assert!(daemon_help.contains(flag), "{flag} missing:\n{daemon_help}");
    }
    assert!(run(&["completion", "bash"]).contains("convoy"));
    assert!(run(&["completion", "zsh"]).contains("convoy"));
}

#[test]
fn cli_backup_upload_limit_is_checked_and_passed_on() {
    // A daemon-wide default, and a limit per backup that wins over it.
    let d = TestDaemon::start(&["--backup-limit-upload", "64M"]);
    d.ok(&["create", "vol1"]);
    d.ok(&["snapshot", "create", "vol1", "--name", "s1"]);
    let dest = format!("vfs://{}", d.dir.path().join("backups").display());
    let url = d.ok(&[
        "backup",
        "create",
        "s1",
        "--dest",
        &dest,
        "--limit-upload",
        "32M/s",
    ]);
    assert!(url.contains("backup="), "{url}");

    // Zero and garbage are refused by the CLI, naming the option, before anything is sent.
    for bad in ["0", "fast", "1.5M"] {
        let out = d.convoy(&[
            "backup",
            "create",
            "s1",
            "--dest",
            &dest,
            "--limit-upload",
            bad,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(err.contains("--limit-upload") && err.contains(bad), "{err}");
    }
    // So is the daemon's option.
    let out = std::process::Command::new(cli_support::convoy_bin())
        .arg("daemon")
        .arg("--root")
        .arg(d.dir.path().join("other-root"))
        .args(["--drivers", "vfs", "--backup-limit-upload", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "daemon started with a zero limit");
    assert!(
        err.contains("--backup-limit-upload") && err.contains("more than 0"),
        "{err}"
    );

    // Over the API the limit reaches the backup store, which refuses zero with its reason;
    // nothing is left behind.
    let (status, body) = d.raw(
        "POST",
        "/v1/backups/create",
        &format!(r#"{{"SnapshotName":"s1","URL":"{dest}","LimitUpload":0}}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("more than 0 bytes/s"), "{body}");
    let list = d.json(&["backup", "list", &dest]);
    assert_eq!(list.as_object().unwrap().len(), 1, "{list}");
    d.ok(&["snapshot", "delete", "s1"]);
}
