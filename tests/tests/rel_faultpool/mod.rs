//! Shared by `rel_device_faults.rs` and `rel_space.rs` (VM tier): a devicemapper `convoy daemon`
//! (with a vfs driver beside it) whose pool sits on two device-mapper devices of the test's own
//! — `<tag>-fdata` and `<tag>-fmeta`, linear over loop devices — so that the test can switch
//! their tables between healthy and faulty (`error`, `flakey`, a linear table with an error
//! segment) with `dmsetup suspend/load/resume`, or grow them. CLI calls are made with a hang
//! detector: a call that does not answer within minutes fails the test as hung.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use convoy_e2e::{run, LoopDevice};
use serde_json::Value;

use crate::cli_support::{convoy_bin, TestDaemon};

/// A call that has not answered after this long is reported as hung (not a timing assertion:
/// the guest is slow, this only turns a hang into a failure).
const HANG_LIMIT: Duration = Duration::from_secs(300);

/// A table for a fault device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `linear` over the backing loop device.
    Healthy,
    /// The `error` target: every read and write fails.
    ErrorAll,
    /// `flakey` that is always down with no feature: every I/O fails.
    FlakeyDown,
    /// `flakey` with `error_writes`: reads work, writes fail.
    ErrorWrites,
    /// The first `percent` % of the device fails (an `error` segment), the rest is linear.
    ErrorHead(u64),
}

impl Fault {
    /// A short name for figures and messages.
    pub fn label(self) -> String {
        match self {
            Fault::Healthy => "healthy".into(),
            Fault::ErrorAll => "error".into(),
            Fault::FlakeyDown => "flakey-down".into(),
            Fault::ErrorWrites => "flakey-error_writes".into(),
            Fault::ErrorHead(p) => format!("error-segment-{p}%"),
        }
    }
}

/// A device-mapper device over a loop device whose table the test switches.
pub struct FaultDev {
    /// Device-mapper name.
    pub name: String,
    /// `/dev/mapper/<name>`.
    pub path: String,
    backing_file: PathBuf,
    backing: LoopDevice,
    sectors: u64,
    /// The table loaded now.
    pub fault: Fault,
}

impl FaultDev {
    /// A sparse file of `bytes` in `dir`, a loop device over it and `name` linear over that.
    pub fn new(dir: &Path, name: &str, bytes: u64) -> Self {
        let backing_file = dir.join(format!("{name}.img"));
        let backing = LoopDevice::new(&backing_file, bytes);
        let sectors = bytes / 512;
        let table = format!("0 {sectors} linear {} 0", backing.as_str());
        run("dmsetup", &["create", name, "--table", &table]);
        FaultDev {
            name: name.to_owned(),
            path: format!("/dev/mapper/{name}"),
            backing_file,
            backing,
            sectors,
            fault: Fault::Healthy,
        }
    }

    fn table(&self, fault: Fault) -> String {
        let (s, lo) = (self.sectors, self.backing.as_str());
        match fault {
            Fault::Healthy => format!("0 {s} linear {lo} 0"),
            Fault::ErrorAll => format!("0 {s} error"),
            Fault::FlakeyDown => format!("0 {s} flakey {lo} 0 0 1"),
            Fault::ErrorWrites => format!("0 {s} flakey {lo} 0 0 1 1 error_writes"),
            Fault::ErrorHead(p) => {
                let head = s * p / 100;
                format!("0 {head} error\n{head} {} linear {lo} {head}", s - head)
            }
        }
    }

    /// Switches the table (suspend, load, resume).
    pub fn set(&mut self, fault: Fault) {
        let table = self.table(fault);
        run("dmsetup", &["suspend", &self.name]);
        let loaded = Command::new("dmsetup")
            .args(["load", &self.name, "--table", &table])
            .output()
            .expect("dmsetup");
        run("dmsetup", &["resume", &self.name]);
        assert!(
            loaded.status.success(),
            "dmsetup load {} {table:?}: {}",
            self.name,
            String::from_utf8_lossy(&loaded.stderr)
        );
        self.fault = fault;
    }

    /// Grows the backing file and the device to `bytes` (healthy table).
    pub fn grow(&mut self, bytes: u64) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.backing_file)
            .and_then(|f| f.set_len(bytes))
            .expect("grow backing file");
        run("losetup", &["-c", self.backing.as_str()]);
        self.sectors = bytes / 512;
        self.set(Fault::Healthy);
    }

    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.sectors * 512
    }
}

impl Drop for FaultDev {
    fn drop(&mut self) {
        let _ = Command::new("dmsetup")
            .args(["remove", "--force", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// What a CLI call answered.
#[derive(Debug)]
pub enum Answer {
    /// Exit 0; trimmed stdout.
    Ok(String),
    /// Exit 1 with `{"Error": message}` on stdout; the message.
    Err(String),
}

impl Answer {
    /// The error message, if the call failed.
    pub fn err(&self) -> Option<&str> {
        match self {
            Answer::Ok(_) => None,
            Answer::Err(e) => Some(e),
        }
    }
}

/// The pool under test and its daemon.
pub struct Rig {
    /// Names of every device-mapper device and volume start with it.
    pub tag: String,
    /// The pool's device-mapper name.
    pub pool: String,
    /// `vfs://` backup destination.
    pub dest: String,
    /// The daemon (None while stopped).
    pub daemon: Option<TestDaemon>,
    /// The pool's metadata device.
    pub meta: FaultDev,
    /// The pool's data device.
    pub data: FaultDev,
    /// Where the backing files live.
    pub disks: tempfile::TempDir,
    /// A daemon started by [`Rig::start_again`] (the first one is `daemon`'s own).
    child: Option<convoy_testkit::ServerProcess>,
}

impl Rig {
    /// A pool on `data_bytes` / `meta_bytes` fault devices with 64 KiB blocks, a vfs driver
    /// beside it, and a daemon on both (devicemapper the default).
    pub fn start(scenario: &str, data_bytes: u64, meta_bytes: u64, extra: &[&str]) -> Self {
        let tag = format!("rf{}{scenario}", std::process::id() % 100_000);
        let disks = tempfile::tempdir().expect("temp dir");
        let data = FaultDev::new(disks.path(), &format!("{tag}-fdata"), data_bytes);
        let meta = FaultDev::new(disks.path(), &format!("{tag}-fmeta"), meta_bytes);
        let pool = format!("{tag}-pool");
        let mut opts: Vec<String> = vec![
            format!("dm.datadev={}", data.path),
            format!("dm.metadatadev={}", meta.path),
            format!("dm.thinpoolname={pool}"),
            "dm.thinpoolblocksize=128".into(),
            "dm.defaultvolumesize=64M".into(),
        ];
        opts.extend(extra.iter().map(|s| s.to_string()));
        let daemon = TestDaemon::start_with(&[], move |d| {
            let mut v = vec![
                "--drivers".to_string(),
                "devicemapper".into(),
                "--drivers".into(),
                "vfs".into(),
                "--driver-opts".into(),
                format!("vfs.path={}", d.vols.display()),
            ];
            for o in &opts {
                v.push("--driver-opts".into());
                v.push(o.clone());
            }
            v
        });
        let dest = format!("vfs://{}", daemon.dir.path().join("backups").display());
        Rig {
            tag,
            pool,
            dest,
            daemon: Some(daemon),
            meta,
            data,
            disks,
            child: None,
        }
    }

    /// The running daemon.
    pub fn d(&self) -> &TestDaemon {
        self.daemon.as_ref().expect("daemon running")
    }

    /// A name with the rig's tag.
    pub fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.tag)
    }

    /// Runs `convoy args...` with the hang detector; panics on anything but exit 0, or exit 1
    /// with a JSON `{"Error": non-empty}` on stdout (an unclear error).
    pub fn call(&self, args: &[&str]) -> Answer {
        let d = self.d();
        let out_path = d.dir.path().join("call.out");
        let err_path = d.dir.path().join("call.err");
        let mut child = Command::new(convoy_bin())
            .arg("-s")
            .arg(&d.socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("call.out"))
            .stderr(std::fs::File::create(&err_path).expect("call.err"))
            .spawn()
            .expect("cannot run convoy");
        let deadline = Instant::now() + HANG_LIMIT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait convoy") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "convoy {args:?} hung (no answer after {HANG_LIMIT:?})\nlog:\n{}",
                    d.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        match status.code() {
            Some(0) => Answer::Ok(stdout.trim().to_string()),
            Some(1) => {
                let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
                    panic!("convoy {args:?}: error is not JSON ({e}): {stdout}{stderr}")
                });
                let msg = v["Error"].as_str().unwrap_or_default().to_string();
                assert!(
                    msg.len() > 10,
                    "convoy {args:?}: empty error: {stdout}{stderr}"
                );
                Answer::Err(msg)
            }
            _ => panic!(
                "convoy {args:?}: unclear failure ({status}; a crash or a panic?):\n{stdout}{stderr}\nlog:\n{}",
                d.log()
            ),
        }
    }

    /// A call that must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        match self.call(args) {
            Answer::Ok(s) => s,
            Answer::Err(e) => panic!("convoy {args:?} failed: {e}\nlog:\n{}", self.d().log()),
        }
    }

    /// A call that must succeed, as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let s = self.ok(args);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("convoy {args:?}: {e}: {s}"))
    }

    /// The pool's status line (`dmsetup status`), without the range prefix.
    pub fn pool_status(&self) -> String {
        let out = Command::new("dmsetup")
            .args(["status", &self.pool])
            .output()
            .expect("dmsetup");
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        s.splitn(4, ' ').nth(3).unwrap_or(&s).to_string()
    }

    /// The pool's mode word (`rw`, `ro`, `out_of_data_space`, `Fail`...).
    pub fn pool_mode(&self) -> String {
        let s = self.pool_status();
        let f: Vec<&str> = s.split_whitespace().collect();
        if f.len() > 4 {
            f[4].to_string()
        } else {
            s
        }
    }

    /// Backups of `volume` listed at the destination: (URL, snapshot name).
    pub fn listed_backups(&self, volume: &str) -> Vec<(String, String)> {
        let v = self.json(&["backup", "list", &self.dest, "--volume-name", volume]);
        v.as_object()
            .map(|m| {
                m.iter()
                    .map(|(url, b)| {
                        (
                            url.clone(),
                            b["SnapshotName"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops the daemon (SIGTERM) and waits for it; panics if it did not exit cleanly.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = child.stop().expect("the daemon runs until stopped");
            assert!(
                status.success(),
                "daemon exit: {status}\n{}",
                self.d().log()
            );
        } else if let Some(d) = self.daemon.as_mut() {
            d.stop();
        }
    }

    /// Starts the daemon again (saved setup) and waits until it answers. `Err` with its output
    /// and log tail when it exits instead.
    pub fn start_again(&mut self) -> Result<(), String> {
        let d = self.d();
        let mut command = d.daemon_command(&[]);
        command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.dir.path().join("start.out")).expect("start.out"))
            .stderr(std::fs::File::create(d.dir.path().join("start.err")).expect("start.err"));
        let child = match convoy_testkit::ServerProcess::start(&mut command, &d.socket, HANG_LIMIT)
        {
            Ok(child) => child,
            Err(convoy_testkit::StartFailure::Exited(out)) => {
                let read = |f: &str| std::fs::read_to_string(d.dir.path().join(f));
                let err = format!(
                    "{}{}",
                    read("start.out").unwrap_or_default(),
                    read("start.err").unwrap_or_default()
                );
                let log = d.log();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!("exit {}: {err} {}", out.status, tail.join(" | ")));
            }
            Err(convoy_testkit::StartFailure::TimedOut(_)) => {
                panic!("daemon start hung\n{}", d.log())
            }
        };
        self.child = Some(child);
        Ok(())
    }

    /// Mount points under the daemon's directory.
    fn our_mounts(&self) -> Vec<String> {
        let root = self.d().dir.path().to_string_lossy().to_string();
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .map(str::to_string)
            .collect()
    }

    /// With the daemon stopped: unmounts its volumes and removes every thin device and the
    /// pool from the kernel (the metadata and data stay on their devices).
    pub fn deactivate_pool(&self) {
        for m in self.our_mounts().into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        let out = Command::new("dmsetup")
            .arg("ls")
            .output()
            .expect("dmsetup ls");
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            // The rig's own devices and convoy's thin devices of the rig's pool.
            .filter(|n| n.starts_with(&self.tag) || n.starts_with(&format!("convoy-{}", self.tag)))
            .filter(|n| n != &self.data.name && n != &self.meta.name)
            .map(str::to_string)
            .collect();
        names.sort_by_key(|n| n == &self.pool);
        for n in names {
            let out = Command::new("dmsetup")
                .args(["remove", &n])
                .output()
                .expect("dmsetup remove");
            if !out.status.success() {
                let _ = Command::new("dmsetup")
                    .args(["remove", "--force", &n])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    /// `thin_check` on the metadata device (pool inactive): `Ok(output)` or `Err(output)`.
    pub fn thin_check(&self, extra: &[&str]) -> Result<String, String> {
        let out = Command::new("thin_check")
            .args(extra)
            .arg(&self.meta.path)
            .output()
            .expect("thin_check");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .replace('\n', " | ");
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }
}

impl Rig {
    /// The offline recovery of a pool the kernel left read-only or failed: stop the daemon,
    /// unmount, deactivate the pool, `thin_check` (then again with `--clear-needs-check-flag`:
    /// the kernel keeps a flagged pool read-only), start the daemon. Panics if the metadata
    /// does not pass or the daemon does not start; returns what `thin_check` said.
    pub fn recover_offline(&mut self) -> String {
        self.stop();
        self.deactivate_pool();
        let check = self.thin_check(&[]);
        let cleared = self.thin_check(&["--clear-needs-check-flag"]);
        assert!(
            cleared.is_ok(),
            "metadata of {} damaged: {check:?} / {cleared:?}",
            self.pool
        );
        if let Err(e) = self.start_again() {
            panic!("daemon does not start after the offline recovery: {e}");
        }
        format!("thin_check: {check:?}")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop();
        }
        if self.daemon.is_some() {
            if let Some(d) = self.daemon.as_mut() {
                // A failing stop must not hide the test's own failure.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.stop()));
            }
            self.deactivate_pool();
        }
    }
}

/// Writes `bytes` to `path` and makes it durable (`fsync`); the error as text.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut f =
        std::fs::File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("write {}: {e}", path.display()))
}

/// Drops the page cache, so that reads after it come from the devices.
pub fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// `n` seeded random bytes.
pub fn random_bytes(rng: &mut fastrand::Rng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill(&mut v);
    v
}

/// The active table of device-mapper device `name` (`dmsetup table`), one line per target.
pub fn dm_table(name: &str) -> String {
    run("dmsetup", &["table", name]).trim().to_string()
}
