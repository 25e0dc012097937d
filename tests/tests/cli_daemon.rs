//! The daemon's life: restart keeps every volume, one daemon per root, stale sockets, socket
//! mode, saved configuration, graceful shutdown.

mod cli_support;

use std::os::unix::fs::PermissionsExt;

use cli_support::TestDaemon;

#[test]
fn cli_daemon_restart_keeps_every_volume() {
    let mut d = TestDaemon::start(&[]);
    for name in ["a1", "b2", "c3"] {
        d.ok(&["create", name]);
    }
    d.ok(&["snapshot", "create", "a1", "--name", "a1-snap"]);
    let mount_point = d.ok(&["mount", "b2"]);
    std::fs::write(std::path::Path::new(&mount_point).join("data"), b"kept").unwrap();

    // Restarted with no driver flags: the saved setup (convoy.cfg) is reused.
    d.restart();
    let list = d.json(&["list"]);
    let names: Vec<_> = list.as_object().unwrap().keys().cloned().collect();
    assert_eq!(names, ["a1", "b2", "c3"], "{list}");
    assert!(list["a1"]["Snapshots"]["a1-snap"].is_object(), "{list}");
    assert_eq!(list["b2"]["MountPoint"], mount_point.as_str());
    assert_eq!(
        std::fs::read(std::path::Path::new(&mount_point).join("data")).unwrap(),
        b"kept"
    );
    assert_eq!(
        d.json(&["snapshot", "inspect", "a1-snap"])["VolumeName"],
        "a1"
    );
}

#[test]
fn cli_daemon_socket_is_private_and_one_daemon_per_root() {
    let d = TestDaemon::start(&[]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    // A second daemon on the same root is refused (the root's lock) and leaves the first alone.
    let other_socket = d.dir.path().join("other.sock");
    let out = d
        .daemon_command(&[])
        .arg("--socket")
        .arg(&other_socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"Error\""), "{text}");
    assert!(text.contains("lock"), "{text}");
    assert!(!other_socket.exists());

    // A second daemon on another root but the same, live socket is refused too.
    let out = std::process::Command::new(cli_support::convoy_bin())
        .arg("-s")
        .arg(&d.socket)
        .args(["daemon", "--drivers", "vfs", "--root"])
        .arg(d.dir.path().join("root2"))
        .arg("--driver-opts")
        .arg(format!("vfs.path={}", d.dir.path().join("vols2").display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("another server is answering"), "{text}");
    assert_eq!(d.json(&["info"])["General"]["DefaultDriver"], "vfs");
}

#[test]
fn cli_daemon_removes_a_stale_socket_and_refuses_conflicting_driver_flags() {
    let mut d = TestDaemon::start(&[]);
    d.stop();
    // A socket file nobody answers on (as a crashed daemon leaves it).
    std::fs::create_dir_all(d.socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&d.socket).unwrap());
    assert!(d.socket.exists());
    let out = d
        .daemon_command(&[
            "--drivers",
            "vfs",
            "--driver-opts",
            "vfs.path=/somewhere/else",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--ignore-config-file"), "{text}");

    let out = d
        .daemon_command(&["--driver-opts", "novalue"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("KEY=VALUE"));

    d.restart();
    assert_eq!(d.json(&["list"]), serde_json::json!({}));
    d.stop();
    assert!(!d.socket.exists(), "socket removed on shutdown");
}

#[test]
fn cli_convoyd_serves_like_convoy_daemon() {
    let convoyd = cli_support::convoy_bin().with_file_name("convoyd");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("d.sock");
    let mut command = std::process::Command::new(&convoyd);
    command
        .arg("-s")
        .arg(&socket)
        .arg("--root")
        .arg(dir.path().join("root"))
        .args(["--drivers", "vfs", "--driver-opts"])
        .arg(format!("vfs.path={}", dir.path().join("vols").display()))
        .arg("--log")
        .arg(dir.path().join("log"));
    // Wait until it answers; the limit only turns a hang into a failure.
    let limit = std::time::Duration::from_secs(60);
    let mut child = match convoy_testkit::ServerProcess::start(&mut command, &socket, limit) {
        Ok(child) => child,
        Err(convoy_testkit::StartFailure::Exited(out)) => panic!("convoyd exited ({})", out.status),
        Err(convoy_testkit::StartFailure::TimedOut(_)) => panic!("convoyd did not start"),
    };
    let out = std::process::Command::new(cli_support::convoy_bin())
        .arg("-s")
        .arg(&socket)
        .args(["create", "from-convoyd"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from-convoyd");
    assert!(child.stop().expect("convoyd runs until stopped").success());
    assert!(!socket.exists());
}
