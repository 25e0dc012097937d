//! The crash trials' driver shared by the crash scenarios (`rel_crash.rs`,
//! `rel_crash_lifecycle.rs`): a rig, seeded choices, kills inside a CLI call, restarts and
//! the no-orphans checks, one figure per operation.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::crash_rig::Rig;
use crate::rel_support::{by_scale, rng, seed, Figure};

/// One operation's trials: the rig, the seeded choices and the figure.
pub struct Run {
    pub fig: Figure,
    pub started: Instant,
    pub rig: Rig,
    pub rng: fastrand::Rng,
    pub op: &'static str,
    pub points: &'static [&'static str],
    pub trials: usize,
    /// Trials run so far.
    pub done: usize,
    /// `CONVOY_REL_DEADLINE` (Unix seconds): no new trial starts after it (the figure says
    /// how many ran).
    pub deadline: Option<u64>,
    pub counts: BTreeMap<&'static str, u64>,
}

/// What the CLI call the daemon died under reported.
pub struct Outcome {
    pub acked: bool,
    pub stdout: String,
}

impl Run {
    pub fn new(op: &'static str, letter: char, points: &'static [&'static str]) -> Run {
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
    pub fn more(&self, t: usize) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        t < self.trials && self.deadline.is_none_or(|d| now < d)
    }

    pub fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    pub fn fail(&self, trial: usize, msg: &str) -> ! {
        panic!(
            "crash {} trial {trial} (CONVOY_REL_SEED={}): {msg}\n{}",
            self.op,
            seed(),
            self.rig.log()
        );
    }

    /// Acknowledged data not read back: counted as lost, then the test fails.
    pub fn lose(&mut self, trial: usize, msg: &str) -> ! {
        self.fig.lost += 1;
        self.fail(trial, &format!("DATA LOST: {msg}"));
    }

    pub fn check(&mut self, trial: usize, ok: bool, msg: &str) {
        if !ok {
            self.fail(trial, msg);
        }
        self.fig.checks += 1;
    }

    pub fn ok(&mut self, trial: usize, args: &[&str]) -> String {
        match self.rig.try_ok(args) {
            Ok(out) => {
                self.fig.checks += 1;
                out
            }
            Err(e) => self.fail(trial, &format!("call after restart: {e}")),
        }
    }

    pub fn marker(&mut self) -> Vec<u8> {
        let n = 64 * 1024 + self.rng.usize(..128 * 1024);
        (0..n).map(|_| self.rng.u8(..)).collect()
    }

    /// Mounts `volume` and writes fresh marker data into it; returns the data.
    pub fn write(&mut self, trial: usize, volume: &str) -> Vec<u8> {
        let at = self.ok(trial, &["mount", volume]);
        let bytes = self.marker();
        if let Err(e) = self.rig.write_marker(&at, &bytes) {
            self.fail(trial, &e);
        }
        bytes
    }

    /// `volume`'s marker must equal `want` (counted lost otherwise).
    pub fn verify(&mut self, trial: usize, volume: &str, want: &[u8], what: &str) {
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

    pub fn list(&mut self, trial: usize) -> serde_json::Value {
        match self.rig.try_json(&["list"]) {
            Ok(v) => v,
            Err(e) => self.fail(trial, &e),
        }
    }

    pub fn volume_listed(&mut self, trial: usize, name: &str) -> bool {
        self.list(trial).get(name).is_some()
    }

    pub fn snapshot_listed(&mut self, trial: usize, volume: &str, snap: &str) -> bool {
        self.list(trial)[volume]["Snapshots"].get(snap).is_some()
    }

    /// Runs `args` once, unkilled; returns its duration.
    pub fn measure(&mut self, args: &[&str]) -> Duration {
        let start = Instant::now();
        self.ok(0, args);
        start.elapsed()
    }

    /// Runs `args` and kills the daemon inside it (SIGKILL after a seeded delay, or a named
    /// crash point on every fourth trial).
    pub fn crash(&mut self, trial: usize, args: &[&str], measured: Duration) -> Outcome {
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
    pub fn recover(&mut self, trial: usize) {
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

    pub fn reboot(&mut self, trial: usize) {
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
    pub fn finish(mut self) {
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
