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
#[path = "store_faults/proxy.rs"]
mod proxy;
mod rel_support;
#[path = "store_faults/s3_kill.rs"]
mod s3_kill;
#[path = "store_faults/vfs_full.rs"]
mod vfs_full;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cli_support::{convoy_bin, TestDaemon};
use convoy_backupstore::{StaticCredentials, TargetOptions};
use rel_support::{by_scale, rng, Figure};

use convoy_e2e::{
    S3Process as S3Server, TEST_S3_ACCESS_KEY as AK, TEST_S3_BUCKET as BUCKET,
    TEST_S3_SECRET_KEY as SK,
};

/// An operation still running after this long is a hang (a failure, not a timing figure).
const HANG: Duration = Duration::from_secs(600);

/// The tests change the process environment the daemon inherits: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
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
