//! The errors a new user meets first, each with a message that says what to do: no daemon, a
//! stale socket, a socket this user may not use, a driver option for a driver not enabled, pool
//! devices that do not exist or are files.

mod cli_support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use cli_support::{convoy_bin, TestDaemon};

/// Runs `convoy ARGS` and returns (exit code, stdout + stderr).
fn convoy(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(convoy_bin()).args(args).output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn cli_no_daemon_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("convoy.sock");
    let (code, text) = convoy(&["--socket", socket.to_str().unwrap(), "list"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(socket.to_str().unwrap()), "{text}");
    assert!(text.contains("start one with `convoy daemon"), "{text}");
    assert!(text.contains("--socket"), "{text}");

    // A socket file left by a daemon that is gone.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let (code, text) = convoy(&["--socket", socket.to_str().unwrap(), "list"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no daemon listens on it"), "{text}");
}

#[test]
fn cli_socket_permission_denied_names_the_user_to_run_as() {
    assert!(
        cli_support::is_root(),
        "this test runs convoy as `nobody` against root's daemon: run it as root"
    );
    let d = TestDaemon::start(&[]);
    // Let `nobody` reach the socket file itself: its own mode (0600) is what refuses.
    for dir in [d.dir.path(), d.socket.parent().unwrap()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(convoy_bin())
        .arg("--socket")
        .arg(&d.socket)
        .arg("list")
        .output()
        .expect("setpriv (util-linux)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("Permission denied"), "{text}");
    assert!(text.contains("may not use the daemon's socket"), "{text}");
    assert!(text.contains("owner uid 0, mode 0600"), "{text}");
    assert!(text.contains("run convoy as that user"), "{text}");
    // The daemon is untouched.
    assert_eq!(d.json(&["list"]), serde_json::json!({}));
}

#[test]
fn cli_driver_option_of_a_driver_not_enabled_is_refused_and_not_saved() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let socket = dir.path().join("s.sock");
    let vols = format!("vfs.path={}", dir.path().join("vols").display());
    let daemon = |extra: &[&str]| {
        let mut args = vec!["--socket", socket.to_str().unwrap(), "daemon", "--root"];
        args.push(root.to_str().unwrap());
        args.extend_from_slice(extra);
        convoy(&args)
    };
    let (code, text) = daemon(&[
        "--drivers",
        "vfs",
        "--driver-opts",
        &vols,
        "--driver-opts",
        "dm.datadev=/dev/sdb1",
    ]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("dm.datadev") && text.contains("belongs to the devicemapper driver"),
        "{text}"
    );
    assert!(text.contains("--drivers devicemapper"), "{text}");
    // A key with no driver prefix.
    let (code, text) = daemon(&["--drivers", "vfs", "--driver-opts", "path=/x"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("driver options are dm.* (devicemapper driver) or vfs.*"),
        "{text}"
    );
    // Nothing was saved: a start without driver flags still finds no configuration.
    assert!(!root.join("convoy.cfg").exists());
}

#[test]
fn cli_missing_pool_devices_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.vol");
    std::fs::write(&file, b"").unwrap();
    let run = |data: &str, metadata: &str| {
        convoy(&[
            "--socket",
            dir.path().join("s.sock").to_str().unwrap(),
            "daemon",
            "--root",
            dir.path().join("root").to_str().unwrap(),
            "--drivers",
            "devicemapper",
            "--driver-opts",
            &format!("dm.datadev={data}"),
            "--driver-opts",
            &format!("dm.metadatadev={metadata}"),
        ])
    };
    let (code, text) = run("/dev/convoy-no-such-disk1", "/dev/convoy-no-such-disk2");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("dm.datadev") && text.contains("/dev/convoy-no-such-disk1 does not exist"),
        "{text}"
    );
    assert!(
        text.contains("convoy-partition") && text.contains("dev-pool"),
        "{text}"
    );
    // (A regular file given as a pool device: see the report; its message is not yet checked.)
    drop(file);
}
