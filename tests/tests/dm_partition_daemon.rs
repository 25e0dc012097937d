//! The setup path of a new host, on a real virtio disk in the guest: `convoy-partition
//! --write-to-disk` splits the blank disk, the daemon starts with exactly the command line it
//! prints, and a volume is created, mounted, written and deleted on that pool.

use convoy_e2e::{run, workspace_bin};
use convoy_testkit::ServerProcess;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Stops the daemon and removes the pool and volume devices, then blanks the disk's partition
/// table so the spare disk is as the test found it.
struct Cleanup {
    daemon: Option<ServerProcess>,
    disk: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.stop();
        }
        // Best effort and quiet: after a passing run the volume is already gone.
        let quiet = |cmd: &mut Command| {
            let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        // convoy's thin devices of the pool (`partvol`'s), then the pool.
        let listed = Command::new("dmsetup").arg("ls").output();
        let listed = listed
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let thins = listed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("convoy-convoy-pool-thin-"));
        for dev in thins.chain(["convoy-pool"]) {
            quiet(Command::new("dmsetup").args(["remove", "--retry", dev]));
        }
        let zero_target = format!("of={}", self.disk);
        quiet(Command::new("dd").args([
            "if=/dev/zero",
            &zero_target,
            "bs=1M",
            "count=2",
            "conv=fsync",
        ]));
        quiet(Command::new("blockdev").args(["--rereadpt", &self.disk]));
    }
}

fn convoy(socket: &Path, args: &[&str]) -> String {
    let bin = workspace_bin("convoy");
    let mut full = vec!["--socket", socket.to_str().unwrap()];
    full.extend_from_slice(args);
    run(bin.to_str().unwrap(), &full)
}

#[test]
#[ignore = "needs a dm-thin kernel: run by cargo xtask test"]
fn dm_partition_a_virtio_disk_start_the_printed_daemon_create_a_volume() {
    let disk = std::env::var("CONVOY_VM_SPARE_DISK")
        .expect("CONVOY_VM_SPARE_DISK: run by cargo xtask test, which attaches a spare disk");
    let mut cleanup = Cleanup {
        daemon: None,
        disk: disk.clone(),
    };
    let partition = workspace_bin("convoy-partition");

    let dry = run(partition.to_str().unwrap(), &[&disk]);
    println!("{dry}");
    assert!(
        !dry.contains("convoy daemon"),
        "a dry run prints no daemon line:\n{dry}"
    );
    let out = run(partition.to_str().unwrap(), &["--write-to-disk", &disk]);
    println!("{out}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("convoy daemon "))
        .unwrap_or_else(|| panic!("no `convoy daemon ...` line in:\n{out}"))
        .trim()
        .to_string();
    assert!(line.contains(&format!("dm.datadev={disk}1")), "{line}");
    assert!(line.contains(&format!("dm.metadatadev={disk}2")), "{line}");

    // Start the daemon with exactly the printed arguments (plus a private root and socket).
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("convoy.sock");
    let root = dir.path().join("root");
    let printed: Vec<&str> = line.split_whitespace().skip(1).collect();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut daemon = Command::new(workspace_bin("convoy"));
    daemon
        .arg("--socket")
        .arg(&socket)
        .args(&printed)
        .arg("--root")
        .arg(&root)
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    cleanup.daemon = Some(start_and_wait(&mut daemon, &socket, dir.path()));

    let info = convoy(&socket, &["info"]);
    assert!(
        info.contains(&format!("{disk}1")),
        "info names the data partition:\n{info}"
    );
    assert_eq!(
        convoy(&socket, &["create", "partvol", "--size", "256M"]).trim(),
        "partvol"
    );
    let mountpoint = PathBuf::from(convoy(&socket, &["mount", "partvol"]).trim());
    std::fs::write(
        mountpoint.join("hello.txt"),
        b"on a partitioned virtio disk\n",
    )
    .unwrap();
    run("sync", &[]);
    let inspect = convoy(&socket, &["inspect", "partvol"]);
    assert!(
        inspect.contains("\"DevID\""),
        "inspect shows DriverInfo:\n{inspect}"
    );
    assert_eq!(
        std::fs::read(mountpoint.join("hello.txt")).unwrap(),
        b"on a partitioned virtio disk\n"
    );
    convoy(&socket, &["umount", "partvol"]);
    convoy(&socket, &["delete", "partvol"]);
    let list = convoy(&socket, &["list"]);
    assert!(
        !list.contains("partvol"),
        "deleted volume still listed:\n{list}"
    );
}

/// Starts the daemon and waits until `convoy info` answers through `socket`.
fn start_and_wait(daemon: &mut Command, socket: &Path, dir: &Path) -> ServerProcess {
    let answers = || {
        Command::new(workspace_bin("convoy"))
            .arg("--socket")
            .arg(socket)
            .arg("info")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    ServerProcess::start_until(
        daemon,
        Duration::from_secs(120),
        Duration::from_millis(200),
        answers,
    )
    .unwrap_or_else(|e| {
        let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
        panic!("convoy daemon did not answer ({e}); its log:\n{log}");
    })
}
