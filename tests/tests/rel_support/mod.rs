//! Shared by the reliability suite (`rel_*` tests, run by `cargo xtask reliability`): the scale
//! and seed the suite runs with, a seeded random generator per scenario, and the figure line
//! each scenario prints for the report.
//!
//! Naming: `rel_host_*` tests run on the host (as root), `rel_vm_*` tests in the guest (real
//! dm-thin kernel), `rel_docker_*` tests on the host against a real `dockerd`. All are
//! `#[ignore]`d so that `cargo test` never counts them as passing.

#![allow(dead_code)]

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Map, Value};

/// How hard the suite runs: `quick` in CI, `full` for the published figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// A short run (CI): a few trials of every scenario.
    Quick,
    /// The run behind `docs/reliability.md`: at least the counts the issue names.
    Full,
}

/// The scale from `CONVOY_REL_SCALE` (`quick`, the default, or `full`).
pub fn scale() -> Scale {
    match std::env::var("CONVOY_REL_SCALE").as_deref() {
        Ok("full") => Scale::Full,
        Ok("quick") | Err(_) => Scale::Quick,
        Ok(other) => panic!("CONVOY_REL_SCALE must be quick or full, not {other:?}"),
    }
}

/// `quick` or `full`, by the scale the suite runs at.
pub fn by_scale<T>(quick: T, full: T) -> T {
    match scale() {
        Scale::Quick => quick,
        Scale::Full => full,
    }
}

/// The suite's seed, from `CONVOY_REL_SEED` (default 1). Every random choice derives from it,
/// so a failing run is repeated by giving the same seed.
pub fn seed() -> u64 {
    match std::env::var("CONVOY_REL_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("CONVOY_REL_SEED must be an integer, not {s:?}")),
        Err(_) => 1,
    }
}

/// A random generator for one scenario: the suite's seed mixed with the scenario's name, so
/// that scenarios do not share a sequence and adding one does not change the others.
pub fn rng(scenario: &str) -> fastrand::Rng {
    let mut hasher = DefaultHasher::new();
    scenario.hash(&mut hasher);
    fastrand::Rng::with_seed(seed() ^ hasher.finish())
}

/// What one scenario did, printed as one `@@REL {json}` line that `cargo xtask reliability`
/// collects into its report. Counts only what actually happened.
#[derive(Debug, Clone)]
pub struct Figure {
    /// `crash`, `powercut`, `device-faults`, `store-faults`, `space`, `concurrency`,
    /// `hostile-input` or `security`.
    pub suite: &'static str,
    /// What was done, in a few words (`kill -9 during backup`, ...).
    pub scenario: String,
    /// Trials (iterations) run.
    pub trials: u64,
    /// Faults injected (kills, I/O errors, server kills, ...).
    pub faults: u64,
    /// Hostile inputs tried.
    pub inputs: u64,
    /// Invariant checks made and passed.
    pub checks: u64,
    /// Data lost: acknowledged data or listed backups that could not be read back bit-exact.
    pub lost: u64,
    /// Other measured numbers (`max_blocked_ms`, `p99_ms`, ...), by name.
    pub extra: Map<String, Value>,
}

impl Figure {
    /// A figure of `suite` for `scenario`, all counts zero.
    pub fn new(suite: &'static str, scenario: impl Into<String>) -> Self {
        Figure {
            suite,
            scenario: scenario.into(),
            trials: 0,
            faults: 0,
            inputs: 0,
            checks: 0,
            lost: 0,
            extra: Map::new(),
        }
    }

    /// Records another measured number.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.extra.insert(name.to_string(), value.into());
        self
    }

    /// Prints the `@@REL` line (tests run with `--nocapture` under the suite).
    pub fn emit(&self) {
        let line = serde_json::json!({
            "suite": self.suite,
            "scenario": self.scenario,
            "scale": match scale() { Scale::Quick => "quick", Scale::Full => "full" },
            "seed": seed(),
            "trials": self.trials,
            "faults": self.faults,
            "inputs": self.inputs,
            "checks": self.checks,
            "lost": self.lost,
            "extra": self.extra,
        });
        println!("@@REL {line}");
    }
}
