//! Reliability suite, power cuts (issue 8): the guest side of `cargo xtask powercut`.
//!
//! The host (`xtask/src/powercut.rs`) boots the guest several times on the same three disk
//! images — `/dev/vda` an ext4 "state" disk (the daemon's root, the `vfs://` backup folder and
//! this test's logs), `/dev/vdb` and `/dev/vdc` the thin pool's metadata and data — and kills
//! QEMU (SIGKILL) a seeded delay after the load prints its ready marker. Each boot runs
//! [`rel_powercut_guest_boot`] once:
//!
//! * boot 0 makes the state filesystem, starts `convoy daemon` on the devicemapper driver and
//!   creates the volumes; every later boot first **verifies** what the previous boot's cut left:
//!   every acknowledged (fsync'd) write is there, every volume and snapshot reported created
//!   exists, the filesystems are clean under `fsck -n` and mount, every listed backup restores
//!   bit-exact (and every acknowledged one is listed), a new backup succeeds, no orphan or
//!   missing thin id, and `thin_check` passes on the pool's metadata;
//! * then (unless it is the last boot) it runs the **load** until the power goes: one writer per
//!   volume writes seeded records with `fdatasync` and logs each acknowledged id (fsync'd), a
//!   second kind of write replaces small files by rename, and a loop snapshots, checksums the
//!   snapshot, backs it up and deletes old snapshots and backups, logging each result only after
//!   the call returned.
//!
//! Not run by `cargo test`, nor by the suite's `rel_vm_` boot: it needs the host to cut it.
//! Each verify prints `@@POWERCUT-VERIFY {json}` (checks passed, data lost, counts), which the
//! host sums into the suite's figure.

#[path = "powercut/load.rs"]
mod load;
mod rel_support;
#[path = "powercut/verify.rs"]
mod verify;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use convoy_e2e::{run, workspace_bin};
use rel_support::{rng, seed};
use serde_json::Value;

const STATE: &str = "/run/pc";
const SOCKET: &str = "/run/pc-convoy.sock";
const POOL: &str = "pcpool";
const VOLUMES: [&str; 2] = ["pcv-a", "pcv-b"];
const VOLUME_SIZE: &str = "64M";
/// Printed when the load runs; the host cuts the power a seeded delay after it.
const READY: &str = "@@POWERCUT-READY@@";
/// Starts each load progress line (`snapshot`, `backup`, `delete`): the host reads the last one
/// before the cut to count cuts during backups.
const LOAD_MARK: &str = "@@POWERCUT-LOAD ";
/// Record size and the number of record slots in a volume's `records.dat` (ids wrap around).
const RECORD: usize = 4096;
const SLOTS: u64 = 2048;
/// Every `FILE_EVERY`-th record also replaces file `files/f<slot>` (of `FILE_SLOTS`) by rename.
const FILE_EVERY: u64 = 8;
const FILE_SLOTS: u64 = 128;
/// Snapshots and backups kept per volume by the load.
const KEEP_SNAPSHOTS: usize = 3;
const KEEP_BACKUPS: usize = 2;
/// The load stops by itself after this long (the host cuts it well before).
const LOAD_CAP: Duration = Duration::from_secs(240);

fn disks() -> [String; 3] {
    let list = std::env::var("CONVOY_POWERCUT_DISKS").unwrap_or_default();
    let parts: Vec<&str> = list.split(',').collect();
    assert_eq!(
        parts.len(),
        3,
        "CONVOY_POWERCUT_DISKS must name state,metadata,data disks (run by cargo xtask powercut)"
    );
    [parts[0].into(), parts[1].into(), parts[2].into()]
}

fn dest() -> String {
    format!("vfs://{STATE}/backups")
}

/// Appends `line` to `path` in one write and makes it durable.
fn append_durable(path: &Path, line: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn sync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .unwrap_or_else(|e| panic!("fsync {}: {e}", dir.display()));
}

/// Complete lines of a log (a torn last line, cut before its newline, is not a record).
fn log_lines(path: &Path) -> Vec<String> {
    let text = fs::read(path).unwrap_or_default();
    let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    String::from_utf8_lossy(&text[..end])
        .lines()
        .map(str::to_string)
        .collect()
}

fn mix(vol: &str, id: u64, kind: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (seed(), vol, id, kind).hash(&mut h);
    h.finish()
}

/// The bytes of record `id` of `vol` (header line, then seeded bytes).
fn record(vol: &str, id: u64) -> Vec<u8> {
    let mut out = format!("pcrec {vol} {id:012}\n").into_bytes();
    let mut r = fastrand::Rng::with_seed(mix(vol, id, "record"));
    out.extend((out.len()..RECORD).map(|_| r.u8(..)));
    out
}

fn file_record(vol: &str, id: u64) -> Vec<u8> {
    let mut out = format!("pcfile {vol} {id:012}\n").into_bytes();
    let mut r = fastrand::Rng::with_seed(mix(vol, id, "file"));
    out.extend((0..1000).map(|_| r.u8(..)));
    out
}

/// The id in a record's or file's header line `<tag> <vol> <id>`.
fn header_id(bytes: &[u8], tag: &str, vol: &str) -> Option<u64> {
    let line = bytes.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    (words.next()? == tag && words.next()? == vol).then_some(())?;
    words.next()?.parse().ok()
}

fn acks_path(vol: &str) -> PathBuf {
    Path::new(STATE).join(format!("acks-{vol}.log"))
}

/// The test's record of what was reported done, from `events.log`.
#[derive(Default)]
struct Events {
    vols: Vec<String>,
    /// (snapshot, volume) in creation order.
    snaps: Vec<(String, String)>,
    snap_deleting: HashSet<String>,
    snap_deleted: HashSet<String>,
    /// url → (volume, snapshot, sha256 of the snapshot), and the order.
    backups: BTreeMap<String, (String, String, String)>,
    backup_order: Vec<String>,
    backup_deleting: HashSet<String>,
    backup_deleted: HashSet<String>,
}

impl Events {
    fn path() -> PathBuf {
        Path::new(STATE).join("events.log")
    }

    fn load() -> Self {
        let mut e = Events::default();
        for line in log_lines(&Self::path()) {
            e.apply(&line);
        }
        e
    }

    fn apply(&mut self, line: &str) {
        let w: Vec<&str> = line.split(' ').collect();
        match w.as_slice() {
            ["vol", v] => self.vols.push(v.to_string()),
            ["snap", s, v] => self.snaps.push((s.to_string(), v.to_string())),
            ["snap-deleting", s] => {
                self.snap_deleting.insert(s.to_string());
            }
            ["snap-deleted", s] => {
                self.snap_deleted.insert(s.to_string());
            }
            ["backup", url, v, s, sha] => {
                self.backup_order.push(url.to_string());
                self.backups.insert(
                    url.to_string(),
                    (v.to_string(), s.to_string(), sha.to_string()),
                );
            }
            ["backup-deleting", u] => {
                self.backup_deleting.insert(u.to_string());
            }
            ["backup-deleted", u] => {
                self.backup_deleted.insert(u.to_string());
            }
            _ => panic!("events.log: unreadable line {line:?}"),
        }
    }

    /// Logs `line` durably, then applies it.
    fn record(&mut self, line: &str) {
        append_durable(&Self::path(), line);
        self.apply(line);
    }

    fn live_snaps(&self, vol: &str) -> Vec<String> {
        self.snaps
            .iter()
            .filter(|(s, v)| {
                v == vol && !self.snap_deleting.contains(s) && !self.snap_deleted.contains(s)
            })
            .map(|(s, _)| s.clone())
            .collect()
    }

    fn live_backups(&self, vol: &str) -> Vec<String> {
        self.backup_order
            .iter()
            .filter(|u| {
                self.backups[*u].0 == vol
                    && !self.backup_deleting.contains(*u)
                    && !self.backup_deleted.contains(*u)
            })
            .cloned()
            .collect()
    }
}

/// `convoy daemon` on the devicemapper driver, root on the state disk.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start() -> Self {
        let [_, meta, data] = disks();
        let mut child = Command::new(workspace_bin("convoy"))
            .args(["--socket", SOCKET, "daemon", "--root"])
            .arg(Path::new(STATE).join("root"))
            .args([
                "--log",
                &format!("{STATE}/daemon.log"),
                "--drivers",
                "devicemapper",
            ])
            .args(["--driver-opts", &format!("dm.datadev={data}")])
            .args(["--driver-opts", &format!("dm.metadatadev={meta}")])
            .args(["--driver-opts", &format!("dm.thinpoolname={POOL}")])
            .args(["--driver-opts", "dm.thinpoolblocksize=128"])
            .args([
                "--driver-opts",
                &format!("dm.defaultvolumesize={VOLUME_SIZE}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start convoy daemon");
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::os::unix::net::UnixStream::connect(SOCKET).is_err() {
            if let Some(status) = child.try_wait().expect("wait on daemon") {
                panic!("convoy daemon exited ({status}):\n{}", daemon_log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not start:\n{}",
                daemon_log_tail()
            );
            thread::sleep(Duration::from_millis(50));
        }
        Daemon { child }
    }

    fn convoy(&self, args: &[&str]) -> Output {
        Command::new(workspace_bin("convoy"))
            .args(["-s", SOCKET])
            .args(args)
            .output()
            .expect("cannot run convoy")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.convoy(args);
        assert!(
            out.status.success(),
            "convoy {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("convoy {args:?}: {e}: {text}"))
    }

    /// Stops it with SIGTERM; panics if it does not exit cleanly.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("wait on daemon");
        assert!(status.success(), "daemon exit on SIGTERM: {status}");
    }
}

fn daemon_log_tail() -> String {
    let log = fs::read_to_string(format!("{STATE}/daemon.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn sha256(path: &str) -> String {
    run("sha256sum", &[path])
        .split_whitespace()
        .next()
        .expect("sha256sum prints a sum")
        .to_string()
}

/// SHA-256 of a snapshot's whole device, read through a read-only thin device made by hand.
fn snapshot_sha(d: &Daemon, snap: &str) -> String {
    let info = d.json(&["snapshot", "inspect", snap]);
    let field = |k: &str| {
        info["DriverInfo"][k]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let sectors = field("Size").parse::<u64>().expect("snapshot Size") / 512;
    let pool = run(
        "dmsetup",
        &[
            "info",
            "-c",
            "--noheadings",
            "--separator",
            ":",
            "-o",
            "major,minor",
            POOL,
        ],
    );
    let name = format!("pcchk-{snap}");
    let table = format!("0 {sectors} thin {} {}", pool.trim(), field("DevID"));
    run(
        "dmsetup",
        &["create", &name, "--readonly", "--table", &table],
    );
    let sum = sha256(&format!("/dev/mapper/{name}"));
    run("dmsetup", &["remove", &name]);
    sum
}

/// Restores `url` into a new volume, returns the SHA-256 of its device, deletes it.
fn restore_sha(d: &Daemon, url: &str, name: &str) -> Result<String, String> {
    let out = d.convoy(&["create", name, "--backup", url]);
    if !out.status.success() {
        return Err(format!(
            "restore of {url} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let device = d.json(&["inspect", name])["DriverInfo"]["Device"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let sum = sha256(&device);
    d.ok(&["delete", name]);
    Ok(sum)
}

#[test]
#[ignore = "reliability suite: run by cargo xtask powercut (the host cuts the guest's power)"]
fn rel_powercut_guest_boot() {
    let boot: u64 = std::env::var("CONVOY_POWERCUT_BOOT")
        .expect("CONVOY_POWERCUT_BOOT: run by cargo xtask powercut")
        .parse()
        .expect("CONVOY_POWERCUT_BOOT is a number");
    let load = std::env::var("CONVOY_POWERCUT_LOAD").is_ok_and(|v| v == "1");
    let [state, ..] = disks();
    fs::create_dir_all(STATE).unwrap();
    if boot == 0 {
        setup(&state);
    } else {
        run("mount", &[&state, STATE]);
        verify::verify(boot);
    }
    if load {
        load::run_load(boot);
    }
}

/// Boot 0: the state filesystem, the pool (made by the daemon) and the volumes.
fn setup(state: &str) {
    run("mkfs.ext4", &["-q", "-F", state]);
    run("mount", &[state, STATE]);
    fs::create_dir_all(format!("{STATE}/backups")).unwrap();
    for vol in VOLUMES {
        append_durable(&acks_path(vol), "start");
    }
    sync_dir(Path::new(STATE));
    let d = Daemon::start();
    let mut events = Events::load();
    for vol in VOLUMES {
        d.ok(&["create", vol, "--size", VOLUME_SIZE]);
        events.record(&format!("vol {vol}"));
    }
    d.stop();
    println!(
        "powercut: boot 0 set up the pool and {} volumes",
        VOLUMES.len()
    );
}
