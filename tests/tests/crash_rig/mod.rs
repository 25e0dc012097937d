//! The rig of the crash-consistency suite (`rel_crash.rs`): a real `convoy daemon`
//! (devicemapper driver) over a dm-thin pool on loop devices, killed with SIGKILL or stopped
//! by a named crash point of convoy-core, torn down as a reboot would (thaw, unmount, remove the
//! thin devices and the pool, `thin_check` the metadata), restarted, and checked for orphans:
//! records vs the daemon's listing, thin ids in the pool's metadata vs recorded ones, active
//! devices vs volumes, mounts vs recorded mount points.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use convoy_e2e::LoopDevice;
use convoy_testkit::{ServerProcess, StartFailure};
use serde_json::Value;

use crate::cli_support::convoy_bin;

/// Volumes the suite creates: small, so that mkfs and restores stay cheap under TCG.
pub const VOLUME_SIZE: &str = "64M";

/// A daemon on its own pool. Field order matters for drop: daemon, devices, loops, files.
pub struct Rig {
    child: Option<ServerProcess>,
    /// Every name (pool, volumes, snapshots) starts with it.
    pub tag: String,
    /// The pool's device-mapper name.
    pub pool: String,
    /// The daemon's root.
    pub root: PathBuf,
    /// The daemon's socket.
    pub socket: PathBuf,
    /// `vfs://` backup destination.
    pub dest: String,
    data: LoopDevice,
    meta: LoopDevice,
    dir: tempfile::TempDir,
}

/// Runs a command, returns (success, stdout + stderr).
fn sh(program: &str, args: &[&str]) -> (bool, String) {
    match Command::new(program).args(args).output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("cannot run {program}: {e}")),
    }
}

/// Mount points (field 5 of `/proc/self/mountinfo`) under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Processes whose parent is `pid` (from `/proc/<pid>/stat`).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...: comm may hold spaces, so parse after its last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

impl Rig {
    /// A 4 GiB sparse data device, a 32 MiB metadata device, a pool with 64 KiB blocks and a
    /// running daemon. `op` goes into the tag (names stay unique per test and process).
    pub fn new(op: char) -> Rig {
        let tag = format!("k{}{op}", std::process::id());
        let dir = tempfile::tempdir().expect("temp dir");
        let data = LoopDevice::new(&dir.path().join("data.img"), 4 << 30);
        let meta = LoopDevice::new(&dir.path().join("meta.img"), 32 << 20);
        let mut rig = Rig {
            child: None,
            pool: format!("{tag}-pool"),
            root: dir.path().join("root"),
            socket: dir.path().join("run/convoy.sock"),
            dest: format!("vfs://{}", dir.path().join("backups").display()),
            tag,
            data,
            meta,
            dir,
        };
        let flags = vec![
            "--drivers".to_string(),
            "devicemapper".into(),
            "--driver-opts".into(),
            format!("dm.datadev={}", rig.data.as_str()),
            "--driver-opts".into(),
            format!("dm.metadatadev={}", rig.meta.as_str()),
            "--driver-opts".into(),
            format!("dm.thinpoolname={}", rig.pool),
            "--driver-opts".into(),
            "dm.thinpoolblocksize=128".into(),
            "--driver-opts".into(),
            format!("dm.defaultvolumesize={VOLUME_SIZE}"),
        ];
        rig.spawn(&flags, None).unwrap_or_else(|e| panic!("{e}"));
        rig
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("daemon.stderr")
    }

    /// The daemon's log and stderr, for failure messages.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
        let err = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        let tail = |s: &str| s.lines().rev().take(40).collect::<Vec<_>>().join("\n");
        format!(
            "log (last lines, newest first):\n{}\nstderr:\n{}",
            tail(&log),
            tail(&err)
        )
    }

    /// How many times the daemon's stderr says it crashed at `point`.
    pub fn crashes_at(&self, point: &str) -> usize {
        std::fs::read_to_string(self.stderr_path())
            .unwrap_or_default()
            .matches(&format!("crash injected at {point}"))
            .count()
    }

    fn spawn(&mut self, flags: &[String], crash_at: Option<&str>) -> Result<(), String> {
        assert!(self.child.is_none(), "a daemon is already running");
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("daemon stderr file");
        let mut command = Command::new(convoy_bin());
        command
            .arg("--socket")
            .arg(&self.socket)
            .arg("daemon")
            .arg("--root")
            .arg(&self.root)
            .args(flags)
            .arg("--log")
            .arg(self.dir.path().join("daemon.log"))
            .stdout(stderr.try_clone().expect("daemon output file"))
            .stderr(stderr);
        match crash_at {
            Some(point) => command.env("CONVOY_CORE_CRASH_AT", point),
            None => command.env_remove("CONVOY_CORE_CRASH_AT"),
        };
        // Not a timing assertion: the limit turns a hung start-up into a failure.
        match ServerProcess::start(&mut command, &self.socket, Duration::from_secs(300)) {
            Ok(child) => self.child = Some(child),
            Err(StartFailure::Exited(out)) => {
                return Err(format!(
                    "convoy daemon exited at start ({})\n{}",
                    out.status,
                    self.log()
                ))
            }
            Err(StartFailure::TimedOut(_)) => {
                return Err(format!("convoy daemon did not start\n{}", self.log()))
            }
        }
        Ok(())
    }

    /// Starts the daemon from its saved setup (re-activates the pool and reconciles), with
    /// `CONVOY_CORE_CRASH_AT=point` when given. An error names why it did not come up.
    pub fn start(&mut self, crash_at: Option<&str>) -> Result<(), String> {
        self.spawn(&[], crash_at)
    }

    /// SIGKILL to the daemon, then to the processes it started (a running mkfs), as a
    /// service manager's kill of the daemon's control group does: left running, they would
    /// hold the devices the restarted daemon must settle.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let children = children_of(child.id());
            child.kill9();
            for pid in children {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    /// Waits (up to 60 s) for a daemon that should abort at a crash point; true if it exited.
    pub fn wait_exit(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if child.try_wait().is_some() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGTERM, then waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop();
        }
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(convoy_bin());
        c.arg("-s").arg(&self.socket).args(args);
        c
    }

    /// Runs the CLI.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command(args).output().expect("cannot run convoy")
    }

    /// Starts the CLI in a child process (the call the daemon is killed under).
    pub fn spawn_cli(&self, args: &[&str]) -> Child {
        self.cli_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run convoy")
    }

    /// Runs the CLI; Err with its output unless it succeeded; Ok(trimmed stdout).
    pub fn try_ok(&self, args: &[&str]) -> Result<String, String> {
        let out = self.cli(args);
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "convoy {args:?} failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Runs the CLI and parses stdout as JSON.
    pub fn try_json(&self, args: &[&str]) -> Result<Value, String> {
        let text = self.try_ok(args)?;
        serde_json::from_str(&text).map_err(|e| format!("convoy {args:?}: {e}: {text}"))
    }

    /// Device-mapper devices of this rig (pool included).
    pub fn dm_devices(&self) -> Vec<String> {
        let (_, out) = sh("dmsetup", &["ls"]);
        out.lines()
            .filter_map(|l| l.split_whitespace().next())
            // The pool and convoy's thin devices of it.
            .filter(|n| n.starts_with(&self.tag) || n.starts_with(&format!("convoy-{}", self.tag)))
            .map(str::to_string)
            .collect()
    }

    /// What a reboot does to the kernel's state, done by hand after the daemon died: resume
    /// suspended devices, thaw and unmount filesystems, remove the thin devices and the pool
    /// (the kernel commits the pool's metadata), then `thin_check` the metadata device.
    /// Err names the step that failed.
    pub fn teardown(&self) -> Result<(), String> {
        let devices = self.dm_devices();
        for d in &devices {
            let _ = sh("dmsetup", &["resume", d]);
        }
        for at in mounts_under(&self.root) {
            let at = at.to_string_lossy().to_string();
            let _ = sh("fsfreeze", &["--unfreeze", &at]);
            let (ok, out) = sh("timeout", &["120", "umount", &at]);
            if !ok {
                return Err(format!("umount {at}: {out}"));
            }
        }
        for d in devices.iter().filter(|d| **d != self.pool) {
            let (ok, out) = sh("dmsetup", &["remove", d]);
            if !ok {
                return Err(format!("dmsetup remove {d}: {out}"));
            }
        }
        let (ok, out) = sh("dmsetup", &["remove", &self.pool]);
        if !ok {
            return Err(format!("dmsetup remove {}: {out}", self.pool));
        }
        let (ok, out) = sh("thin_check", &[self.meta.as_str()]);
        if !ok {
            return Err(format!("thin_check {}: {out}", self.meta.as_str()));
        }
        Ok(())
    }

    /// Thin ids in the live pool's metadata (read under a metadata snapshot).
    pub fn pool_thin_ids(&self) -> Result<BTreeSet<u32>, String> {
        let (ok, out) = sh(
            "dmsetup",
            &["message", &self.pool, "0", "reserve_metadata_snap"],
        );
        if !ok {
            return Err(format!("reserve_metadata_snap: {out}"));
        }
        let dump = Command::new("thin_dump")
            .args(["-m", self.meta.as_str()])
            .output();
        let _ = sh(
            "dmsetup",
            &["message", &self.pool, "0", "release_metadata_snap"],
        );
        let dump = dump.map_err(|e| format!("thin_dump: {e}"))?;
        if !dump.status.success() {
            return Err(format!(
                "thin_dump -m: {}",
                String::from_utf8_lossy(&dump.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&dump.stdout);
        let mut ids = BTreeSet::new();
        for part in text.split("dev_id=\"").skip(1) {
            let n: String = part.chars().take_while(char::is_ascii_digit).collect();
            ids.insert(
                n.parse()
                    .map_err(|_| format!("bad dev_id in: {part:.40}"))?,
            );
        }
        Ok(ids)
    }

    /// Record files (`<root>/devicemapper/volumes/*.json`) by name.
    pub fn records(&self) -> BTreeMap<String, Value> {
        let dir = self.root.join("devicemapper/volumes");
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(".json") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let value = serde_json::from_str(&text).unwrap_or(Value::Null);
                out.insert(stem.to_string(), value);
            }
        }
        out
    }

    /// The no-orphans invariants after a restart. Returns the number of checks made, or the
    /// first violation.
    pub fn check_no_orphans(&self) -> Result<u64, String> {
        let mut checks = 0;
        let list = self.try_json(&["list"])?;
        let list = list.as_object().ok_or("list is not an object")?;
        let records = self.records();
        // Records vs listing: every record is a ready, listed volume with ready snapshots.
        let listed: BTreeSet<&String> = list.keys().collect();
        let recorded: BTreeSet<&String> = records.keys().collect();
        if listed != recorded {
            return Err(format!(
                "records {recorded:?} differ from the listing {listed:?}"
            ));
        }
        checks += 1;
        let mut ids = BTreeSet::new();
        for (name, rec) in &records {
            let state = rec["state"].as_str().unwrap_or("?");
            if !state.eq_ignore_ascii_case("ready") {
                return Err(format!("record {name} is {state} after start-up"));
            }
            let id = rec["dev_id"]
                .as_u64()
                .ok_or(format!("record {name} has no dev_id"))?;
            ids.insert(id as u32);
            let snaps = rec["snapshots"].as_object().cloned().unwrap_or_default();
            let listed_snaps = list[name]["Snapshots"]
                .as_object()
                .map(|m| m.keys().cloned().collect::<BTreeSet<_>>())
                .unwrap_or_default();
            if snaps.keys().cloned().collect::<BTreeSet<_>>() != listed_snaps {
                return Err(format!(
                    "volume {name}: snapshot records {:?} differ from the listing {listed_snaps:?}",
                    snaps.keys().collect::<Vec<_>>()
                ));
            }
            for (s, snap) in snaps {
                let state = snap["state"].as_str().unwrap_or("?");
                if !state.eq_ignore_ascii_case("ready") {
                    return Err(format!("snapshot {s} of {name} is {state} after start-up"));
                }
                let id = snap["dev_id"]
                    .as_u64()
                    .ok_or(format!("snapshot {s} has no dev_id"))?;
                if !ids.insert(id as u32) {
                    return Err(format!("thin id {id} recorded twice (snapshot {s})"));
                }
            }
            checks += 1;
        }
        // Thin ids in the pool vs recorded ones.
        let in_pool = self.pool_thin_ids()?;
        if in_pool != ids {
            let orphans: Vec<_> = in_pool.difference(&ids).collect();
            let missing: Vec<_> = ids.difference(&in_pool).collect();
            return Err(format!(
                "thin ids: orphans in the pool {orphans:?}, recorded but missing {missing:?}"
            ));
        }
        checks += 1;
        // Active devices are the pool and volumes (no snapshot left active).
        let volume_devices: BTreeSet<String> = list
            .values()
            .filter_map(|v| v["DriverInfo"]["Device"].as_str())
            .filter_map(|p| p.strip_prefix("/dev/mapper/"))
            .map(str::to_string)
            .collect();
        for d in self.dm_devices() {
            if d != self.pool && !volume_devices.contains(&d) {
                return Err(format!("device {d} is active but is not a volume"));
            }
        }
        checks += 1;
        // Mounts under the root are exactly the recorded mount points.
        let mounted: BTreeSet<PathBuf> = mounts_under(&self.root).into_iter().collect();
        let recorded: BTreeSet<PathBuf> = list
            .values()
            .filter_map(|v| v["MountPoint"].as_str())
            .filter(|m| !m.is_empty())
            .map(PathBuf::from)
            .collect();
        if mounted != recorded {
            return Err(format!(
                "mounts {mounted:?} differ from recorded mount points {recorded:?}"
            ));
        }
        checks += 1;
        Ok(checks)
    }

    /// Writes `bytes` as `<mount>/marker` and syncs it, in a child process with a limit (a
    /// filesystem left frozen would block the write forever).
    pub fn write_marker(&self, mount: &str, bytes: &[u8]) -> Result<(), String> {
        let tmp = self.dir.path().join("marker.tmp");
        std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
        let target = format!("{mount}/marker");
        let script = format!("cp {} {target} && sync -f {target}", tmp.display());
        let (ok, out) = sh("timeout", &["120", "sh", "-c", &script]);
        if ok {
            Ok(())
        } else {
            Err(format!("writing {target}: {out}"))
        }
    }

    /// Mounts `volume` (if needed) and reads its marker.
    pub fn read_marker(&self, volume: &str) -> Result<Vec<u8>, String> {
        let at = self.try_ok(&["mount", volume])?;
        std::fs::read(Path::new(&at).join("marker")).map_err(|e| format!("{volume}: marker: {e}"))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop();
        let _ = self.teardown();
    }
}
