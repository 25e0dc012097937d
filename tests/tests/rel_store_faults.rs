//! Reliability suite, store faults (`rel_host_*`, host, root): a real `convoy daemon` (vfs
//! driver, whose backups go through the same backup store as devicemapper ones) backs up to
//! and restores from a store that fails under it:
//!
//! * an S3 server (`convoy-test-s3`, a separate process) killed with SIGKILL at a seeded moment
//!   during a backup or a restore and restarted after a seeded delay on the same port and data;
//! * a `vfs://` target on a full tmpfs, and on one remounted read-only;
//! * an S3 server behind a TCP proxy adding seeded delays, stalls and dropped connections.
//!
//! Checks: an operation either completes (after the daemon's own retries) or fails with an
//! error naming the store; `backup list` shows exactly the backups that completed; every
//! listed backup verifies and restores bit-exact; a failed restore leaves no volume; the next
//! backup after the fault clears succeeds; `repair` afterwards leaves every backup intact.
//! Durations are reported as figures, never asserted.

mod cli_support;
mod rel_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cli_support::{convoy_bin, TestDaemon};
use convoy_backupstore::{StaticCredentials, TargetOptions};
use rel_support::{by_scale, rng, Figure};

/// The credentials `convoy-test-s3` accepts.
const AK: &str = "AKIACONVOYRELTEST";
const SK: &str = "convoy/rel/test/secret";
const BUCKET: &str = "convoy-rel";
/// An operation still running after this long is a hang (a failure, not a timing figure).
const HANG: Duration = Duration::from_secs(600);

/// The tests change the process environment the daemon inherits: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `convoy-test-s3` serving `dir` on a fixed port, killed and restarted at will.
struct S3Server {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl S3Server {
    fn start(dir: &Path) -> S3Server {
        std::fs::create_dir_all(dir.join(BUCKET)).expect("bucket dir");
        let mut s = S3Server {
            dir: dir.to_path_buf(),
            port: free_port(),
            child: None,
        };
        s.spawn();
        s
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server and waits for its `listening` line.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let mut child = Command::new(env!("CARGO_BIN_EXE_convoy-test-s3"))
            .arg("--dir")
            .arg(&self.dir)
            .arg("--port")
            .arg(self.port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start convoy-test-s3");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        if !line.starts_with("listening") {
            let _ = child.kill();
            let out = child.wait_with_output().expect("server output");
            panic!(
                "convoy-test-s3 did not start on port {}: {line}{}",
                self.port,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.child = Some(child);
    }

    /// SIGKILL, and reap.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 convoy-test-s3");
            let _ = child.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A daemon whose environment points S3 at `endpoint` with the test credentials.
fn s3_daemon(endpoint: &str) -> TestDaemon {
    // Safe to change here: the tests hold SERIAL and nothing else reads the environment now.
    std::env::set_var("AWS_ACCESS_KEY_ID", AK);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SK);
    std::env::set_var("AWS_ENDPOINT", endpoint);
    TestDaemon::start(&[])
}

/// Options for the test's own verify and repair calls (the library the daemon uses).
fn lib_opts(endpoint: Option<&str>) -> TargetOptions {
    let mut o = TargetOptions {
        s3_endpoint: endpoint.map(str::to_string),
        s3_credentials: Some(StaticCredentials {
            access_key_id: AK.into(),
            secret_access_key: SK.into(),
            session_token: None,
        }),
        ..TargetOptions::default()
    };
    o.lock.wait = Duration::from_secs(60);
    o
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A volume tree: relative path → contents.
type Tree = BTreeMap<String, Vec<u8>>;

fn read_tree(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                out.insert(
                    rel.to_string_lossy().into_owned(),
                    std::fs::read(&p).expect("read"),
                );
            }
        }
    }
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

/// Rewrites `files` files of random (incompressible) content, `min..max` bytes each, in a
/// volume's directory.
fn scribble(
    d: &TestDaemon,
    volume: &str,
    rng: &mut fastrand::Rng,
    files: usize,
    size: (usize, usize),
) {
    let dir = PathBuf::from(d.ok(&["mount", volume]));
    for _ in 0..files {
        let name = format!("f{}/d{}.bin", rng.u8(..4), rng.u8(..8));
        let mut data = vec![0u8; rng.usize(size.0..size.1)];
        rng.fill(&mut data);
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, data).expect("write");
    }
}

/// A CLI call in flight.
struct Op {
    child: Child,
    started: Instant,
}

fn spawn_op(d: &TestDaemon, args: &[&str]) -> Op {
    let child = Command::new(convoy_bin())
        .arg("-s")
        .arg(&d.socket)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run convoy");
    Op {
        child,
        started: Instant::now(),
    }
}

impl Op {
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (a hang past [`HANG`] panics); returns stdout or the `Error` message, and the
    /// operation's duration.
    fn finish(mut self, what: &str) -> (Result<String, String>, Duration) {
        while self.running() {
            if self.started.elapsed() > HANG {
                let _ = self.child.kill();
                panic!("{what} still running after {HANG:?}: a hang");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = self.started.elapsed();
        let out = self.child.wait_with_output().expect("convoy output");
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() {
            return (Ok(stdout), took);
        }
        let msg = serde_json::from_str::<serde_json::Value>(&stdout)
            .ok()
            .and_then(|v| v["Error"].as_str().map(str::to_string))
            .unwrap_or_else(|| {
                format!(
                    "exit {} without a JSON error: {stdout} {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        (Err(msg), took)
    }
}

/// What one scenario learnt: the backups that completed (URL → tree), the figure, and the
/// violated invariants (reported after the figure is emitted).
struct Ledger {
    dest: String,
    complete: BTreeMap<String, Tree>,
    fig: Figure,
    violations: Vec<String>,
    max_op_ms: u128,
    restores: u64,
    started: Instant,
}

impl Ledger {
    fn new(scenario: &str, dest: String) -> Ledger {
        Ledger {
            dest,
            complete: BTreeMap::new(),
            fig: Figure::new("store-faults", scenario),
            violations: Vec::new(),
            max_op_ms: 0,
            restores: 0,
            started: Instant::now(),
        }
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if ok {
            self.fig.checks += 1;
        } else {
            self.violations.push(format!(
                "trial {} seed {}: {}",
                self.fig.trials,
                rel_support::seed(),
                what()
            ));
        }
    }

    fn took(&mut self, d: Duration) {
        self.max_op_ms = self.max_op_ms.max(d.as_millis());
    }

    /// A failed operation's message must name the store and be an error, not a panic.
    fn clean_failure(&mut self, msg: &str, cause: &[&str]) {
        let names_store = msg.contains(&self.dest);
        let has_cause = cause.is_empty() || cause.iter().any(|c| msg.contains(c));
        let no_panic = !msg.contains("panick");
        eprintln!("[store-faults] trial {}: failed: {msg}", self.fig.trials);
        let dest = self.dest.clone();
        self.check(names_store && has_cause && no_panic, || {
            format!("unclear store error (want {dest} and one of {cause:?}): {msg}")
        });
    }

    /// `backup list` shows exactly the completed backups, and each inspects.
    fn check_listing(&mut self, d: &TestDaemon) {
        let out = d.convoy(&["backup", "list", &self.dest]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let listed: Vec<String> = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(m)) if out.status.success() => m.keys().cloned().collect(),
            _ => {
                let dest = self.dest.clone();
                self.check(false, || format!("backup list {dest} failed: {text}"));
                return;
            }
        };
        let want: Vec<String> = self.complete.keys().cloned().collect();
        self.check(listed == want, || {
            format!("backup list shows {listed:?}, completed are {want:?}")
        });
        for url in listed {
            let ok = d.convoy(&["backup", "inspect", &url]).status.success();
            self.check(ok, || format!("listed backup {url} does not inspect"));
        }
    }

    /// Restores `url` into a new volume and compares it with what was backed up.
    fn check_restore(&mut self, d: &TestDaemon, url: &str, name: &str) {
        let want = self.complete.get(url).cloned().expect("completed backup");
        let (res, took) = spawn_op(d, &["create", name, "--backup", url]).finish("restore");
        self.took(took);
        self.restores += 1;
        match res {
            Ok(_) => {
                let got = read_tree(&PathBuf::from(d.ok(&["mount", name])));
                if got != want {
                    self.fig.lost += 1;
                }
                self.check(got == want, || {
                    format!("restore of {url} differs from the backup")
                });
                d.ok(&["umount", name]);
                d.ok(&["delete", name]);
            }
            Err(e) => {
                self.fig.lost += 1;
                self.check(false, || {
                    format!("restore of listed backup {url} failed: {e}")
                });
            }
        }
    }

    /// Verifies every completed backup through the library (manifest checksum and every
    /// block's hash): a missing or damaged block is data lost.
    fn verify_all(&mut self, opts: &TargetOptions) {
        for url in self.complete.keys().cloned().collect::<Vec<_>>() {
            let r = block_on(convoy_backupstore::verify_url(&url, opts.clone()));
            if r.is_err() {
                self.fig.lost += 1;
            }
            self.check(r.is_ok(), || format!("verify {url}: {:?}", r.err()));
        }
    }

    /// Repairs the store (the daemon must not hold locks: call with it stopped), records what
    /// was left behind, then verifies every backup again: repair must not take live blocks.
    fn repair(&mut self, opts: &TargetOptions, totals: &mut [u64; 3]) {
        let dest = self.dest.clone();
        let run = || {
            block_on(async {
                convoy_backupstore::BackupTarget::open(&dest, opts.clone())?
                    .repair()
                    .await
            })
        };
        match run() {
            Ok(s) => {
                totals[0] += s.refs_removed;
                totals[1] += s.blocks_removed;
                totals[2] += s.records_removed;
                self.fig.checks += 1;
            }
            Err(e) => self.check(false, || format!("repair {dest}: {e}")),
        }
        // Repaired, the store holds nothing dangling: a second repair finds nothing.
        let again = run();
        let clean = matches!(&again, Ok(s) if *s == Default::default());
        self.check(clean, || format!("second repair of {dest}: {again:?}"));
        self.verify_all(opts);
    }

    fn emit_and_assert(mut self, repaired: [u64; 3]) {
        self.fig
            .set("max_op_ms", self.max_op_ms as u64)
            .set("restores", self.restores)
            .set("scenario_s", self.started.elapsed().as_secs())
            .set("repair_refs_removed", repaired[0])
            .set("repair_blocks_removed", repaired[1])
            .set("repair_records_removed", repaired[2]);
        if !self.fig.extra.contains_key("backups_completed") {
            self.fig
                .set("backups_completed", self.complete.len() as u64);
        }
        self.fig.emit();
        assert!(
            self.violations.is_empty() && self.fig.lost == 0,
            "{}: {} violations, {} lost:\n{}",
            self.fig.scenario,
            self.violations.len(),
            self.fig.lost,
            self.violations.join("\n")
        );
    }
}

/// Backs `snapshot` up with no fault; it must succeed. Returns the URL.
fn clean_backup(d: &TestDaemon, l: &mut Ledger, snapshot: &str, tree: Tree) -> Option<String> {
    let (res, took) =
        spawn_op(d, &["backup", "create", snapshot, "--dest", &l.dest]).finish("backup");
    l.took(took);
    match res {
        Ok(url) => {
            l.complete.insert(url.clone(), tree);
            l.fig.checks += 1;
            Some(url)
        }
        Err(e) => {
            l.check(false, || {
                format!("backup of {snapshot} with no fault failed: {e}")
            });
            None
        }
    }
}

/// A failed restore must leave no volume behind (neither listed nor on disk).
fn check_no_volume(d: &TestDaemon, l: &mut Ledger, name: &str) {
    let listed = d.json(&["list"]);
    let in_list = listed.get(name).is_some();
    let on_disk = d.vols.join(name).exists();
    let image = d
        .vols
        .join(".images")
        .join(format!("{name}.restore"))
        .exists();
    l.check(!in_list && !on_disk && !image, || {
        format!("failed restore left {name}: listed {in_list}, dir {on_disk}, image {image}")
    });
}

impl Ledger {
    /// Verifies one backup through the library.
    fn verify_one(&mut self, url: &str, opts: &TargetOptions) {
        let r = block_on(convoy_backupstore::verify_url(url, opts.clone()));
        if r.is_err() {
            self.fig.lost += 1;
        }
        self.check(r.is_ok(), || format!("verify {url}: {:?}", r.err()));
    }

    /// The end of a scenario: listing, then repair with the daemon stopped (its locks go with
    /// it), then every backup verified and the newest restored through the restarted daemon.
    fn finish_store(
        &mut self,
        d: &mut TestDaemon,
        opts: &TargetOptions,
        restore: bool,
    ) -> [u64; 3] {
        self.check_listing(d);
        d.stop();
        let mut repaired = [0; 3];
        self.repair(opts, &mut repaired);
        d.restart();
        self.check_listing(d);
        if let Some(url) = self.complete.keys().last().cloned().filter(|_| restore) {
            self.check_restore(d, &url, "final-restore");
        }
        repaired
    }
}

fn snapshot(d: &TestDaemon, volume: &str, name: &str) -> Tree {
    d.ok(&["snapshot", "create", volume, "--name", name]);
    read_tree(&PathBuf::from(d.ok(&["mount", volume])))
}

/// How long the server stays down: usually within the daemon's retry budget; in a full run
/// every tenth outage outlasts it (the operation must then fail cleanly).
fn outage(rng: &mut fastrand::Rng, trial: u64) -> Duration {
    if rel_support::scale() == rel_support::Scale::Full && trial % 10 == 5 {
        Duration::from_secs(45)
    } else {
        Duration::from_millis(rng.u64(100..3000))
    }
}

/// Runs `op`, kills the server at a seeded moment within `est` if the op still runs, restarts
/// it after a seeded outage. Returns the op's outcome and whether a fault hit it mid-way.
fn with_server_kill(
    server: &mut S3Server,
    mut op: Op,
    rng: &mut fastrand::Rng,
    est: &mut Duration,
    l: &mut Ledger,
    what: &str,
) -> (Result<String, String>, bool) {
    let kill_at = Duration::from_millis(rng.u64(0..=est.as_millis().max(1) as u64));
    let down = outage(rng, l.fig.trials);
    while op.started.elapsed() < kill_at && op.running() {
        std::thread::sleep(Duration::from_millis(2));
    }
    let mid = op.running();
    if mid {
        server.kill9();
        l.fig.faults += 1;
        std::thread::sleep(down);
        server.spawn();
    }
    let (res, took) = op.finish(what);
    l.took(took);
    if !mid {
        // Done before the kill: operations got faster (less load); aim within this one.
        *est = took;
    }
    (res, mid)
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_s3_killed_mid_backup() {
    let _serial = serial();
    let mut rng = rng("s3-killed-mid-backup");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = S3Server::start(&dir.path().join("s3"));
    let mut d = s3_daemon(&server.endpoint());
    let opts = lib_opts(Some(&server.endpoint()));
    let mut l = Ledger::new(
        "S3 server kill -9 and restart during backup",
        format!("s3://{BUCKET}@us-east-1/store"),
    );
    d.ok(&["create", "vol"]);
    scribble(&d, "vol", &mut rng, 24, (256 << 10, 1 << 20));
    let tree = snapshot(&d, "vol", "s0");
    let started = Instant::now();
    clean_backup(&d, &mut l, "s0", tree);
    let mut est = started.elapsed();
    let (mut failed, mut survived) = (0u64, 0u64);
    let target = by_scale(2, 20);
    while l.fig.faults < target && l.fig.trials < target * 3 {
        l.fig.trials += 1;
        let snap = format!("s{}", l.fig.trials);
        scribble(&d, "vol", &mut rng, 8, (256 << 10, 1 << 20));
        let tree = snapshot(&d, "vol", &snap);
        let op = spawn_op(&d, &["backup", "create", &snap, "--dest", &l.dest]);
        let (res, mid) = with_server_kill(&mut server, op, &mut rng, &mut est, &mut l, "backup");
        let url = match res {
            Ok(url) => {
                survived += u64::from(mid);
                l.complete.insert(url.clone(), tree);
                Some(url)
            }
            Err(msg) => {
                failed += 1;
                l.clean_failure(&msg, &[]);
                l.check_listing(&d);
                // The fault is gone: the next backup must succeed.
                let started = Instant::now();
                let url = clean_backup(&d, &mut l, &snap, tree);
                est = started.elapsed();
                url
            }
        };
        l.check_listing(&d);
        if let Some(url) = url {
            l.verify_one(&url, &opts);
            l.check_restore(&d, &url, &format!("r{}", l.fig.trials));
        }
    }
    l.fig
        .set("failed_cleanly", failed)
        .set("completed_despite_kill", survived)
        .set("clean_backup_ms", est.as_millis() as u64);
    let repaired = l.finish_store(&mut d, &opts, true);
    l.emit_and_assert(repaired);
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_s3_killed_mid_restore() {
    let _serial = serial();
    let mut rng = rng("s3-killed-mid-restore");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = S3Server::start(&dir.path().join("s3"));
    let mut d = s3_daemon(&server.endpoint());
    let opts = lib_opts(Some(&server.endpoint()));
    let mut l = Ledger::new(
        "S3 server kill -9 and restart during restore",
        format!("s3://{BUCKET}@us-east-1/store"),
    );
    d.ok(&["create", "vol"]);
    scribble(&d, "vol", &mut rng, 32, (256 << 10, 1 << 20));
    let tree = snapshot(&d, "vol", "s0");
    let Some(url) = clean_backup(&d, &mut l, "s0", tree.clone()) else {
        return l.emit_and_assert([0; 3]);
    };
    let started = Instant::now();
    l.check_restore(&d, &url, "r0");
    let mut est = started.elapsed();
    let (mut failed, mut survived) = (0u64, 0u64);
    let target = by_scale(2, 20);
    while l.fig.faults < target && l.fig.trials < target * 3 {
        l.fig.trials += 1;
        let name = format!("r{}", l.fig.trials);
        let op = spawn_op(&d, &["create", &name, "--backup", &url]);
        let (res, mid) = with_server_kill(&mut server, op, &mut rng, &mut est, &mut l, "restore");
        l.restores += 1;
        match res {
            Ok(_) => {
                survived += u64::from(mid);
                let got = read_tree(&PathBuf::from(d.ok(&["mount", &name])));
                if got != tree {
                    l.fig.lost += 1;
                }
                l.check(got == tree, || {
                    format!("restore {name} differs from the backup")
                });
                d.ok(&["umount", &name]);
                d.ok(&["delete", &name]);
            }
            Err(msg) => {
                failed += 1;
                l.clean_failure(&msg, &[]);
                check_no_volume(&d, &mut l, &name);
                // The fault is gone: the restore must now succeed.
                l.check_restore(&d, &url, &name);
            }
        }
    }
    l.fig
        .set("failed_cleanly", failed)
        .set("completed_despite_kill", survived)
        .set("clean_restore_ms", est.as_millis() as u64);
    l.verify_all(&opts);
    let repaired = l.finish_store(&mut d, &opts, true);
    l.emit_and_assert(repaired);
}

/// A tmpfs mounted on a temp dir; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_string_lossy().into_owned();
        convoy_e2e::run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &path],
        );
        Tmpfs { dir }
    }

    fn remount(&self, opts: &str) {
        let path = self.dir.path().to_string_lossy().into_owned();
        convoy_e2e::run("mount", &["-o", &format!("remount,{opts}"), &path]);
    }

    fn dest(&self) -> String {
        format!("vfs://{}/store", self.dir.path().display())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// One trial of a vfs target fault: a small backup completes; with `fault` applied a larger
/// backup must fail naming `cause`; with `clear` applied it must succeed; both restore.
/// A fault of a vfs target: how to apply and clear it, and what its error must say.
struct VfsFault<'a> {
    fault: &'a dyn Fn(&Tmpfs),
    clear: &'a dyn Fn(&Tmpfs),
    cause: &'a [&'a str],
}

fn vfs_fault_trial(
    d: &mut TestDaemon,
    l: &mut Ledger,
    rng: &mut fastrand::Rng,
    fs: &Tmpfs,
    f: &VfsFault<'_>,
    faulted_restores: &mut (u64, u64),
) -> bool {
    let t = l.fig.trials;
    for volume in ["small", "big"] {
        let dir = PathBuf::from(d.ok(&["mount", volume]));
        for e in std::fs::read_dir(&dir).expect("volume dir").flatten() {
            std::fs::remove_dir_all(e.path()).expect("clear volume");
        }
    }
    scribble(d, "small", rng, 2, (64 << 10, 512 << 10));
    let tree = snapshot(d, "small", &format!("small{t}"));
    let Some(first) = clean_backup(d, l, &format!("small{t}"), tree) else {
        return false;
    };
    scribble(d, "big", rng, 8, (1 << 20, 3 << 19));
    let big = format!("big{t}");
    let tree = snapshot(d, "big", &big);
    (f.fault)(fs);
    let (res, took) = spawn_op(d, &["backup", "create", &big, "--dest", &l.dest]).finish("backup");
    l.took(took);
    let injected = match res {
        Ok(url) => {
            // Fitted after all: a complete backup, still checked below.
            l.complete.insert(url, tree.clone());
            false
        }
        Err(msg) => {
            l.fig.faults += 1;
            l.clean_failure(&msg, f.cause);
            true
        }
    };
    l.check_listing(d);
    // Reading from the faulted store: a restore either works or fails cleanly, leaving nothing.
    if injected {
        let name = format!("rf{t}");
        let (res, took) = spawn_op(d, &["create", &name, "--backup", &first]).finish("restore");
        l.took(took);
        l.restores += 1;
        match res {
            Ok(_) => {
                let got = read_tree(&PathBuf::from(d.ok(&["mount", &name])));
                let want = l.complete[&first].clone();
                if got != want {
                    l.fig.lost += 1;
                }
                l.check(got == want, || {
                    format!("restore {name} from the faulted store differs")
                });
                d.ok(&["umount", &name]);
                d.ok(&["delete", &name]);
                faulted_restores.0 += 1;
            }
            Err(msg) => {
                // Backups must stay restorable from a full or read-only store.
                l.check(false, || {
                    format!("restore from the faulted store failed: {msg}")
                });
                check_no_volume(d, l, &name);
                faulted_restores.1 += 1;
            }
        }
    }
    (f.clear)(fs);
    if injected {
        clean_backup(d, l, &big, tree);
    }
    l.check_listing(d);
    let opts = lib_opts(None);
    for url in l.complete.keys().cloned().collect::<Vec<_>>() {
        l.verify_one(&url, &opts);
    }
    l.check_restore(d, &first, &format!("rs{t}"));
    if let Some(url) = l
        .complete
        .keys()
        .find(|u| u.contains("backup=") && *u != &first)
        .cloned()
    {
        l.check_restore(d, &url, &format!("rb{t}"));
    }
    injected
}

fn vfs_fault_scenario(
    scenario: &str,
    seed_name: &str,
    f: VfsFault<'_>,
    initial_size: &dyn Fn(&mut fastrand::Rng) -> String,
) {
    let _serial = serial();
    let started = Instant::now();
    let mut rng = rng(seed_name);
    let mut d = TestDaemon::start(&[]);
    d.ok(&["create", "small"]);
    d.ok(&["create", "big"]);
    let mut fig = Figure::new("store-faults", scenario);
    let mut violations = Vec::new();
    let (mut max_op_ms, mut restores, mut completed) = (0, 0, 0);
    let mut repaired = [0; 3];
    let mut faulted_restores = (0, 0);
    let target = by_scale(1, 20);
    let mut trials = 0;
    while fig.faults < target && trials < target * 2 {
        trials += 1;
        let fs = Tmpfs::mount(&initial_size(&mut rng));
        let mut l = Ledger::new(scenario, fs.dest());
        l.fig.trials = trials;
        vfs_fault_trial(&mut d, &mut l, &mut rng, &fs, &f, &mut faulted_restores);
        let r = l.finish_store(&mut d, &lib_opts(None), false);
        for (a, b) in repaired.iter_mut().zip(r) {
            *a += b;
        }
        fig.faults += l.fig.faults;
        fig.checks += l.fig.checks;
        fig.lost += l.fig.lost;
        max_op_ms = max_op_ms.max(l.max_op_ms);
        restores += l.restores;
        completed += l.complete.len() as u64;
        violations.append(&mut l.violations);
        drop(fs);
    }
    fig.trials = trials;
    fig.set("backups_completed", completed)
        .set("restores_while_faulted_ok", faulted_restores.0)
        .set("restores_while_faulted_failed", faulted_restores.1);
    let l = Ledger {
        dest: String::new(),
        complete: BTreeMap::new(),
        fig,
        violations,
        max_op_ms,
        restores,
        started,
    };
    l.emit_and_assert(repaired);
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_vfs_target_full() {
    vfs_fault_scenario(
        "vfs target on a full tmpfs",
        "vfs-target-full",
        VfsFault {
            fault: &|_| {},
            clear: &|fs| fs.remount("size=256m"),
            cause: &["No space left"],
        },
        &|rng| format!("{}k", rng.u64(3 << 10..7 << 10)),
    );
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_vfs_target_read_only() {
    vfs_fault_scenario(
        "vfs target remounted read-only",
        "vfs-target-read-only",
        VfsFault {
            fault: &|fs| fs.remount("ro"),
            clear: &|fs| fs.remount("rw"),
            cause: &["Read-only file system"],
        },
        &|_| "256m".to_string(),
    );
}

/// Fault settings of the slow proxy, and what it did.
#[derive(Default)]
struct ProxyState {
    rng: Mutex<Option<fastrand::Rng>>,
    /// Per forwarded read: delay up to this many ms.
    delay_ms: AtomicU64,
    /// Per mille of reads followed by a stall of 0.5–3 s.
    stall_permille: AtomicU64,
    /// Per mille of reads after which both connections are shut down.
    drop_permille: AtomicU64,
    delayed: AtomicU64,
    stalls: AtomicU64,
    drops: AtomicU64,
}

impl ProxyState {
    fn set(&self, delay_ms: u64, stall: u64, drop: u64) {
        self.delay_ms.store(delay_ms, Ordering::SeqCst);
        self.stall_permille.store(stall, Ordering::SeqCst);
        self.drop_permille.store(drop, Ordering::SeqCst);
    }

    fn faults(&self) -> u64 {
        self.stalls.load(Ordering::SeqCst) + self.drops.load(Ordering::SeqCst)
    }

    /// What to do after one read: `None` = drop the connection, else the delay.
    fn decide(&self) -> Option<Duration> {
        let mut guard = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let rng = guard.as_mut().expect("proxy rng");
        let roll = rng.u64(0..1000);
        if roll < self.drop_permille.load(Ordering::SeqCst) {
            self.drops.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        if roll
            < self.drop_permille.load(Ordering::SeqCst) + self.stall_permille.load(Ordering::SeqCst)
        {
            self.stalls.fetch_add(1, Ordering::SeqCst);
            return Some(Duration::from_millis(rng.u64(500..3000)));
        }
        let max = self.delay_ms.load(Ordering::SeqCst);
        if max == 0 {
            return Some(Duration::ZERO);
        }
        self.delayed.fetch_add(1, Ordering::SeqCst);
        Some(Duration::from_millis(rng.u64(0..=max)))
    }
}

/// A TCP proxy on 127.0.0.1 to `upstream_port`, delaying, stalling and dropping connections
/// as `state` says. Its threads end with the test process.
fn start_proxy(upstream_port: u16, state: Arc<ProxyState>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listen");
    let port = listener.local_addr().expect("proxy addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                continue;
            };
            for (from, to) in [
                (client.try_clone(), server.try_clone()),
                (server.try_clone(), client.try_clone()),
            ] {
                let (Ok(from), Ok(to)) = (from, to) else {
                    continue;
                };
                let state = state.clone();
                std::thread::spawn(move || pump(from, to, &state));
            }
        }
    });
    port
}

fn pump(mut from: TcpStream, mut to: TcpStream, state: &ProxyState) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match state.decide() {
            None => break,
            Some(delay) => std::thread::sleep(delay),
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_host_s3_slow_proxy() {
    let _serial = serial();
    let mut rng = rng("s3-slow-proxy");
    let dir = tempfile::tempdir().expect("temp dir");
    let server = S3Server::start(&dir.path().join("s3"));
    let state = Arc::new(ProxyState::default());
    *state.rng.lock().expect("rng") = Some(fastrand::Rng::with_seed(rng.u64(..)));
    let proxy = format!(
        "http://127.0.0.1:{}",
        start_proxy(server.port, state.clone())
    );
    let mut d = s3_daemon(&proxy);
    let opts = lib_opts(Some(&server.endpoint()));
    let mut l = Ledger::new(
        "slow S3: delays, stalls and dropped connections through a proxy",
        format!("s3://{BUCKET}@us-east-1/store"),
    );
    d.ok(&["create", "vol"]);
    let (mut failed, mut restores_failed) = (0u64, 0u64);
    let target = by_scale(3, 20);
    let min_trials = by_scale(1, 10);
    while (state.faults() < target || l.fig.trials < min_trials) && l.fig.trials < target * 4 {
        l.fig.trials += 1;
        let t = l.fig.trials;
        scribble(&d, "vol", &mut rng, 8, (256 << 10, 1 << 20));
        let snap = format!("s{t}");
        let tree = snapshot(&d, "vol", &snap);
        state.set(rng.u64(0..30), rng.u64(0..15), rng.u64(0..15));
        let (res, took) =
            spawn_op(&d, &["backup", "create", &snap, "--dest", &l.dest]).finish("backup");
        l.took(took);
        let url = match res {
            Ok(url) => {
                l.complete.insert(url.clone(), tree);
                Some(url)
            }
            Err(msg) => {
                failed += 1;
                l.clean_failure(&msg, &[]);
                state.set(0, 0, 0);
                l.check_listing(&d);
                clean_backup(&d, &mut l, &snap, tree)
            }
        };
        l.check_listing(&d);
        let Some(url) = url else { continue };
        state.set(rng.u64(0..30), rng.u64(0..15), rng.u64(0..15));
        let name = format!("r{t}");
        let (res, took) = spawn_op(&d, &["create", &name, "--backup", &url]).finish("restore");
        l.took(took);
        l.restores += 1;
        state.set(0, 0, 0);
        match res {
            Ok(_) => {
                let got = read_tree(&PathBuf::from(d.ok(&["mount", &name])));
                let want = l.complete[&url].clone();
                if got != want {
                    l.fig.lost += 1;
                }
                l.check(got == want, || {
                    format!("restore {name} through the proxy differs")
                });
                d.ok(&["umount", &name]);
                d.ok(&["delete", &name]);
            }
            Err(msg) => {
                restores_failed += 1;
                l.clean_failure(&msg, &[]);
                check_no_volume(&d, &mut l, &name);
                l.check_restore(&d, &url, &name);
            }
        }
        l.verify_one(&url, &opts);
    }
    state.set(0, 0, 0);
    l.fig.faults = state.faults();
    l.fig
        .set("stalls", state.stalls.load(Ordering::SeqCst))
        .set("dropped_connections", state.drops.load(Ordering::SeqCst))
        .set("delayed_reads", state.delayed.load(Ordering::SeqCst))
        .set("backups_failed_cleanly", failed)
        .set("restores_failed_cleanly", restores_failed);
    let repaired = l.finish_store(&mut d, &opts, true);
    l.emit_and_assert(repaired);
}
