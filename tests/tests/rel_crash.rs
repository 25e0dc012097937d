//! Reliability suite, crash consistency (VM tier, a real dm-thin pool on loop devices): the
//! real `convoy daemon` is killed with SIGKILL at a seeded random moment inside create,
//! snapshot, backup, restore and delete (a delay drawn in [0, 1.2 × the operation's measured
//! duration]), or aborted at one of convoy-core's named crash points (`CONVOY_CORE_CRASH_AT`)
//! on every fourth trial. Then, on about half the trials, what a reboot does is done by hand
//! (thaw, unmount, remove the thin devices and the pool, `thin_check` the metadata). The
//! daemon is restarted (it re-activates the pool and reconciles) and checked: every object
//! reported created exists, mounts and reads back its data; every reported delete stuck; no
//! orphan thin ids, records, active devices or mounts; every listed backup restores
//! bit-exact and no half-written backup is listed; calls work after the restart.
//!
//! A call counts as "in flight" when the kill came before the CLI reported success, "after
//! completion" when it had. One figure per operation (suite `crash`).

mod cli_support;
mod crash_rig;
mod rel_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crash_rig::{Rig, VOLUME_SIZE};
use rel_support::{by_scale, rng, seed, Figure};

/// One operation's trials: the rig, the seeded choices and the figure.
struct Run {
    fig: Figure,
    started: Instant,
    rig: Rig,
    rng: fastrand::Rng,
    op: &'static str,
    points: &'static [&'static str],
    trials: usize,
    /// Trials run so far.
    done: usize,
    /// `CONVOY_REL_DEADLINE` (Unix seconds): no new trial starts after it (the figure says
    /// how many ran).
    deadline: Option<u64>,
    counts: BTreeMap<&'static str, u64>,
}

/// What the CLI call the daemon died under reported.
struct Outcome {
    acked: bool,
    stdout: String,
}

impl Run {
    fn new(op: &'static str, letter: char, points: &'static [&'static str]) -> Run {
        Run {
            fig: Figure::new("crash", format!("kill -9 during {op}")),
            started: Instant::now(),
            rig: Rig::new(letter),
            rng: rng(&format!("crash-{op}")),
            op,
            points,
            trials: by_scale(2, 50),
            done: 0,
            deadline: std::env::var("CONVOY_REL_DEADLINE")
                .ok()
                .and_then(|s| s.parse().ok()),
            counts: BTreeMap::new(),
        }
    }

    /// Whether trial `t` runs (not past the trial count or the deadline).
    fn more(&self, t: usize) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        t < self.trials && self.deadline.is_none_or(|d| now < d)
    }

    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn fail(&self, trial: usize, msg: &str) -> ! {
        panic!(
            "crash {} trial {trial} (CONVOY_REL_SEED={}): {msg}\n{}",
            self.op,
            seed(),
            self.rig.log()
        );
    }

    /// Acknowledged data not read back: counted as lost, then the test fails.
    fn lose(&mut self, trial: usize, msg: &str) -> ! {
        self.fig.lost += 1;
        self.fail(trial, &format!("DATA LOST: {msg}"));
    }

    fn check(&mut self, trial: usize, ok: bool, msg: &str) {
        if !ok {
            self.fail(trial, msg);
        }
        self.fig.checks += 1;
    }

    fn ok(&mut self, trial: usize, args: &[&str]) -> String {
        match self.rig.try_ok(args) {
            Ok(out) => {
                self.fig.checks += 1;
                out
            }
            Err(e) => self.fail(trial, &format!("call after restart: {e}")),
        }
    }

    fn marker(&mut self) -> Vec<u8> {
        let n = 64 * 1024 + self.rng.usize(..128 * 1024);
        (0..n).map(|_| self.rng.u8(..)).collect()
    }

    /// Mounts `volume` and writes fresh marker data into it; returns the data.
    fn write(&mut self, trial: usize, volume: &str) -> Vec<u8> {
        let at = self.ok(trial, &["mount", volume]);
        let bytes = self.marker();
        if let Err(e) = self.rig.write_marker(&at, &bytes) {
            self.fail(trial, &e);
        }
        bytes
    }

    /// `volume`'s marker must equal `want` (counted lost otherwise).
    fn verify(&mut self, trial: usize, volume: &str, want: &[u8], what: &str) {
        match self.rig.read_marker(volume) {
            Ok(got) if got == want => self.fig.checks += 1,
            Ok(got) => self.lose(
                trial,
                &format!(
                    "{what}: {volume} reads {} bytes, not the {} written",
                    got.len(),
                    want.len()
                ),
            ),
            Err(e) => self.lose(trial, &format!("{what}: {e}")),
        }
    }

    fn list(&mut self, trial: usize) -> serde_json::Value {
        match self.rig.try_json(&["list"]) {
            Ok(v) => v,
            Err(e) => self.fail(trial, &e),
        }
    }

    fn volume_listed(&mut self, trial: usize, name: &str) -> bool {
        self.list(trial).get(name).is_some()
    }

    fn snapshot_listed(&mut self, trial: usize, volume: &str, snap: &str) -> bool {
        self.list(trial)[volume]["Snapshots"].get(snap).is_some()
    }

    /// Runs `args` once, unkilled; returns its duration.
    fn measure(&mut self, args: &[&str]) -> Duration {
        let start = Instant::now();
        self.ok(0, args);
        start.elapsed()
    }

    /// Runs `args` and kills the daemon inside it (SIGKILL after a seeded delay, or a named
    /// crash point on every fourth trial).
    fn crash(&mut self, trial: usize, args: &[&str], measured: Duration) -> Outcome {
        let point = (!self.points.is_empty() && trial % 4 == 1)
            .then(|| self.points[self.rng.usize(..self.points.len())]);
        let (out, early) = if let Some(point) = point {
            self.rig.stop();
            if let Err(e) = self.rig.start(Some(point)) {
                self.fail(trial, &e);
            }
            let before = self.rig.crashes_at(point);
            let out = self.rig.spawn_cli(args).wait_with_output().expect("cli");
            if !self.rig.wait_exit() || self.rig.crashes_at(point) == before {
                self.fail(
                    trial,
                    &format!("crash point {point} not reached by {args:?}: {out:?}"),
                );
            }
            self.count("crash_points");
            (out, None)
        } else {
            let delay = measured.mul_f64(self.rng.f64() * 1.2);
            let mut child = self.rig.spawn_cli(args);
            std::thread::sleep(delay);
            let early = child.try_wait().expect("wait on cli");
            self.rig.kill9();
            (child.wait_with_output().expect("cli"), early)
        };
        if let Some(status) = early.filter(|s| !s.success()) {
            self.fail(
                trial,
                &format!("{args:?} failed ({status}) before any fault: {out:?}"),
            );
        }
        self.fig.faults += 1;
        let acked = out.status.success();
        eprintln!(
            "crash {} trial {trial}/{}: {} {}",
            self.op,
            self.trials,
            point.map_or_else(|| "SIGKILL".to_string(), |p| format!("abort at {p}")),
            if acked {
                "after completion"
            } else {
                "in flight"
            }
        );
        self.count(if acked {
            "after_completion"
        } else {
            "in_flight"
        });
        Outcome {
            acked,
            stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        }
    }

    /// After the kill: maybe a reboot by hand (with `thin_check`), then the restart and the
    /// no-orphans checks.
    fn recover(&mut self, trial: usize) {
        if self.rng.bool() || trial + 1 == self.trials {
            self.reboot(trial);
        }
        if let Err(e) = self.rig.start(None) {
            self.fail(trial, &format!("daemon did not come back: {e}"));
        }
        self.count("restarts");
        self.done = trial + 1;
        match self.rig.check_no_orphans() {
            Ok(n) => self.fig.checks += n,
            Err(e) => self.fail(trial, &e),
        }
    }

    fn reboot(&mut self, trial: usize) {
        self.rig.kill9();
        match self.rig.teardown() {
            Ok(()) => {
                self.fig.checks += 1;
                self.count("thin_checks");
            }
            Err(e) => self.fail(trial, &format!("tear-down / thin_check: {e}")),
        }
    }

    /// A last reboot, `thin_check`, restart and check; the figure is printed on drop.
    fn finish(mut self) {
        let last = self.done;
        self.reboot(last);
        if let Err(e) = self.rig.start(None) {
            self.fail(last, &format!("daemon did not come back: {e}"));
        }
        match self.rig.check_no_orphans() {
            Ok(n) => self.fig.checks += n,
            Err(e) => self.fail(last, &e),
        }
        self.rig.stop();
    }
}

/// Prints the figure when the test ends, also when it fails (trials run until then).
impl Drop for Run {
    fn drop(&mut self) {
        self.fig.trials = self.done as u64;
        for (k, v) in std::mem::take(&mut self.counts) {
            self.fig.set(k, v);
        }
        self.fig.set("seconds", self.started.elapsed().as_secs());
        self.fig.emit();
    }
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_crash_create() {
    let mut r = Run::new(
        "create",
        'c',
        &["create-volume-after-intent", "create-volume-before-ready"],
    );
    let tag = r.rig.tag.clone();
    let m = format!("{tag}m");
    let d = r.measure(&["create", &m, "--size", VOLUME_SIZE]);
    r.ok(0, &["delete", &m]);
    r.fig.set("measured_ms", d.as_millis() as u64);
    let mut t = 0;
    while r.more(t) {
        let name = format!("{tag}c{t}");
        let o = r.crash(t, &["create", &name, "--size", VOLUME_SIZE], d);
        r.recover(t);
        let exists = r.volume_listed(t, &name);
        if o.acked && !exists {
            r.lose(
                t,
                &format!("volume {name} was reported created and is gone"),
            );
        }
        if exists {
            // It mounts, takes data, reads it back and deletes.
            let bytes = r.write(t, &name);
            r.verify(t, &name, &bytes, "new volume");
            r.ok(t, &["umount", &name]);
            r.ok(t, &["delete", &name]);
        }
        let gone = !r.volume_listed(t, &name);
        r.check(t, gone, &format!("{name} still listed after delete"));
        t += 1;
    }
    r.finish();
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_crash_snapshot() {
    let mut r = Run::new(
        "snapshot",
        's',
        &[
            "create-snapshot-after-intent",
            "create-snapshot-before-ready",
        ],
    );
    let tag = r.rig.tag.clone();
    let base = format!("{tag}b");
    r.ok(0, &["create", &base, "--size", VOLUME_SIZE]);
    r.write(0, &base);
    let m = format!("{tag}m");
    let d = r.measure(&["snapshot", "create", &base, "--name", &m]);
    r.ok(0, &["snapshot", "delete", &m]);
    r.fig.set("measured_ms", d.as_millis() as u64);
    let mut t = 0;
    while r.more(t) {
        // Written while mounted: the snapshot freezes the filesystem; a kill inside must not
        // leave it frozen (the write of the next trial would hang, then fail).
        let data = r.write(t, &base);
        let snap = format!("{tag}s{t}");
        let o = r.crash(t, &["snapshot", "create", &base, "--name", &snap], d);
        r.recover(t);
        r.verify(t, &base, &data, "origin after the crash");
        let listed = r.snapshot_listed(t, &base, &snap);
        if o.acked && !listed {
            r.lose(
                t,
                &format!("snapshot {snap} was reported created and is gone"),
            );
        }
        if listed && (r.rng.u8(..4) == 0 || t + 1 == r.trials || !r.more(t + 1)) {
            // Its content: back it up and restore it.
            let url = r.ok(
                t,
                &["backup", "create", &snap, "--dest", &r.rig.dest.clone()],
            );
            let v = format!("{tag}v{t}");
            r.ok(t, &["create", &v, "--backup", &url]);
            r.verify(t, &v, &data, "snapshot content");
            r.ok(t, &["umount", &v]);
            r.ok(t, &["delete", &v]);
            r.count("snapshots_read_back");
        }
        if listed {
            r.ok(t, &["snapshot", "delete", &snap]);
        }
        let gone = !r.snapshot_listed(t, &base, &snap);
        r.check(t, gone, &format!("{snap} still listed after delete"));
        t += 1;
    }
    r.finish();
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_crash_backup() {
    let mut r = Run::new("backup", 'b', &["backup-after-activate"]);
    let tag = r.rig.tag.clone();
    let dest = r.rig.dest.clone();
    let base = format!("{tag}b");
    r.ok(0, &["create", &base, "--size", VOLUME_SIZE]);
    let mut ledger: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let data = r.write(0, &base);
    let m = format!("{tag}m");
    r.ok(0, &["snapshot", "create", &base, "--name", &m]);
    let start = Instant::now();
    let url = r.ok(0, &["backup", "create", &m, "--dest", &dest]);
    let d = start.elapsed();
    ledger.insert(url, data);
    r.ok(0, &["snapshot", "delete", &m]);
    r.fig.set("measured_ms", d.as_millis() as u64);
    let mut t = 0;
    while r.more(t) {
        let data = r.write(t, &base);
        let snap = format!("{tag}s{t}");
        r.ok(t, &["snapshot", "create", &base, "--name", &snap]);
        let o = r.crash(t, &["backup", "create", &snap, "--dest", &dest], d);
        r.recover(t);
        let listed = match r.rig.try_json(&["backup", "list", &dest]) {
            Ok(v) => v.as_object().cloned().unwrap_or_default(),
            Err(e) => r.fail(t, &e),
        };
        if o.acked && !listed.contains_key(&o.stdout) {
            r.lose(
                t,
                &format!("backup {} was reported and is not listed", o.stdout),
            );
        }
        for url in ledger.keys() {
            if !listed.contains_key(url) {
                let msg = format!("backup {url} (made before) is no longer listed");
                r.lose(t, &msg);
            }
        }
        let new: Vec<String> = listed
            .keys()
            .filter(|u| !ledger.contains_key(*u))
            .cloned()
            .collect();
        r.check(
            t,
            new.len() <= 1,
            &format!("unknown backups listed: {new:?}"),
        );
        for url in new {
            // Listed, so it must be whole: it restores bit-exact.
            let v = format!("{tag}r{t}");
            if let Err(e) = r.rig.try_ok(&["create", &v, "--backup", &url]) {
                r.lose(t, &format!("listed backup {url} does not restore: {e}"));
            }
            r.verify(t, &v, &data, "listed backup");
            r.ok(t, &["umount", &v]);
            r.ok(t, &["delete", &v]);
            ledger.insert(url, data.clone());
        }
        r.ok(t, &["snapshot", "delete", &snap]);
        t += 1;
    }
    // Every backup made still restores (a later crashed backup must not damage shared blocks).
    let last = r.done;
    for (i, (url, data)) in ledger.clone().iter().enumerate() {
        let v = format!("{tag}f{i}");
        if let Err(e) = r.rig.try_ok(&["create", &v, "--backup", url]) {
            r.lose(last, &format!("backup {url} no longer restores: {e}"));
        }
        r.verify(last, &v, data, "backup at the end");
        r.ok(last, &["umount", &v]);
        r.ok(last, &["delete", &v]);
    }
    r.fig.set("backups_restored_at_end", ledger.len());
    r.finish();
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_crash_restore() {
    let mut r = Run::new(
        "restore",
        'r',
        &[
            "restore-after-open",
            "create-volume-after-intent",
            "create-volume-before-ready",
        ],
    );
    let tag = r.rig.tag.clone();
    let dest = r.rig.dest.clone();
    let base = format!("{tag}b");
    r.ok(0, &["create", &base, "--size", VOLUME_SIZE]);
    let data = r.write(0, &base);
    let snap = format!("{tag}s");
    r.ok(0, &["snapshot", "create", &base, "--name", &snap]);
    let url = r.ok(0, &["backup", "create", &snap, "--dest", &dest]);
    let m = format!("{tag}m");
    let d = r.measure(&["create", &m, "--backup", &url]);
    r.verify(0, &m, &data, "restore before the trials");
    r.ok(0, &["umount", &m]);
    r.ok(0, &["delete", &m]);
    r.fig.set("measured_ms", d.as_millis() as u64);
    let mut t = 0;
    while r.more(t) {
        let name = format!("{tag}r{t}");
        let o = r.crash(t, &["create", &name, "--backup", &url], d);
        r.recover(t);
        let exists = r.volume_listed(t, &name);
        if o.acked && !exists {
            r.lose(
                t,
                &format!("restored volume {name} was reported and is gone"),
            );
        }
        if exists {
            // Listed, so it must be whole.
            r.verify(t, &name, &data, "restored volume");
            r.ok(t, &["umount", &name]);
            r.ok(t, &["delete", &name]);
        }
        let gone = !r.volume_listed(t, &name);
        r.check(t, gone, &format!("{name} still listed after delete"));
        t += 1;
    }
    r.verify(r.done, &base, &data, "origin at the end");
    r.finish();
}

#[test]
#[ignore = "reliability suite: run by cargo xtask reliability"]
fn rel_vm_crash_delete() {
    let mut r = Run::new(
        "delete",
        'd',
        &[
            "delete-volume-after-intent",
            "delete-volume-before-record-removed",
        ],
    );
    let tag = r.rig.tag.clone();
    // One volume with a snapshot, written and unmounted (a mounted volume is not deleted).
    let make = |r: &mut Run, t: usize, v: &str, s: &str| -> Vec<u8> {
        r.ok(t, &["create", v, "--size", VOLUME_SIZE]);
        let data = r.write(t, v);
        r.ok(t, &["umount", v]);
        r.ok(t, &["snapshot", "create", v, "--name", s]);
        data
    };
    let (mv, ms) = (format!("{tag}m"), format!("{tag}ms"));
    make(&mut r, 0, &mv, &ms);
    let d_snap = r.measure(&["snapshot", "delete", &ms]);
    let d_vol = r.measure(&["delete", &mv]);
    r.fig.set("measured_ms", d_vol.as_millis() as u64);
    r.fig.set("measured_snapshot_ms", d_snap.as_millis() as u64);
    let mut t = 0;
    while r.more(t) {
        let (v, s) = (format!("{tag}v{t}"), format!("{tag}v{t}s"));
        let data = make(&mut r, t, &v, &s);
        // The named crash points are on the volume-delete path.
        let whole_volume = t % 4 == 1 || r.rng.bool();
        if whole_volume {
            let o = r.crash(t, &["delete", &v], d_vol);
            r.recover(t);
            let exists = r.volume_listed(t, &v);
            r.check(
                t,
                !(o.acked && exists),
                &format!("deleted volume {v} is back"),
            );
            if exists {
                r.verify(t, &v, &data, "volume whose delete was interrupted");
                r.ok(t, &["umount", &v]);
            }
            r.count("volume_deletes");
        } else {
            // The snapshot-delete path has no named crash point: always a timed kill.
            let points = std::mem::take(&mut r.points);
            let o = r.crash(t, &["snapshot", "delete", &s], d_snap);
            r.points = points;
            r.recover(t);
            let listed = r.snapshot_listed(t, &v, &s);
            r.check(
                t,
                !(o.acked && listed),
                &format!("deleted snapshot {s} is back"),
            );
            r.verify(t, &v, &data, "volume of the snapshot being deleted");
            r.ok(t, &["umount", &v]);
            r.count("snapshot_deletes");
        }
        if r.volume_listed(t, &v) {
            r.ok(t, &["delete", &v]);
        }
        let gone = !r.volume_listed(t, &v);
        r.check(t, gone, &format!("{v} still listed after delete"));
        t += 1;
    }
    r.finish();
}
