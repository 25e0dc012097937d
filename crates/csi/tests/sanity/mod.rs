//! The community's CSI conformance suite (csi-sanity, `kubernetes-csi/csi-test`, `pkg/sanity`)
//! as Rust checks: every case of its Identity, Controller, snapshot, expansion, Node and
//! GroupController groups, under the names csi-sanity gives them, sending what it sends (names,
//! capacity ranges, capabilities, the `csi-mount` / `csi-staging` directories it makes before
//! each case and removes after) and expecting the codes it expects. Written from the suite's
//! sources read as a specification (facts only); see `docs/csi.md`, "Conformance".
//!
//! Each case runs in a task of its own against one running driver, as csi-sanity runs its
//! specs against one endpoint; after each case the resources it made are cleaned up the way
//! the suite's `Resources.Cleanup` does (last made first: NodeUnpublish of
//! `<mount>/target`, NodeUnstage of the staging dir, DeleteVolume or DeleteSnapshot, where
//! NOT_FOUND is accepted for the node calls), then both directories are removed, which fails
//! if the driver left a mount or a file in them (csi-sanity's next case could not create them).
//! A case whose capability the driver does not declare is skipped, as csi-sanity skips it;
//! cases for capabilities convoy does not have are listed so that declaring one without
//! adding its checks fails.

#![allow(dead_code)]

mod controller;
mod ctx;
mod extras;
mod node;
mod snapshots;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use convoy_csi::pb::controller_client::ControllerClient;
use convoy_csi::pb::identity_client::IdentityClient;
use convoy_csi::pb::node_client::NodeClient;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

pub use ctx::verify_snapshot;

/// 1 GiB, csi-sanity's expansion step (`DefTestExpandIncrement`).
pub const GIB: i64 = 1 << 30;
/// csi-sanity's longest names (`MaxNameLength`).
pub const MAX_NAME_LENGTH: usize = 128;

/// The suite's settings (csi-sanity's flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// `--csi.testvolumesize` (default 10 GiB).
    pub volume_size: i64,
    /// `--csi.testvolumeexpandsize` (default `volume_size` + 1 GiB).
    pub expand_size: i64,
    /// `--csi.testvolumeaccesstype=block` (default mount).
    pub block: bool,
    /// `IdempotentCount` (default 10).
    pub idempotent_count: usize,
    /// `--csi.testvolumeparameters` (default none).
    pub parameters: HashMap<String, String>,
}

impl Config {
    /// csi-sanity's defaults with volumes of `volume_size` bytes.
    pub fn with_size(volume_size: i64) -> Config {
        Config {
            volume_size,
            expand_size: volume_size + GIB,
            block: false,
            idempotent_count: 10,
            parameters: HashMap::new(),
        }
    }
}

/// What a case made, to clean up after it.
#[derive(Debug, Clone)]
enum Made {
    Volume(String),
    Snapshot(String),
}

/// What a case sees: the clients, the suite's settings, its two directories, and the
/// resources it made (csi-sanity's `TestContext` and `Resources`).
#[derive(Clone)]
pub struct Ctx {
    pub config: Arc<Config>,
    pub c: ControllerClient<Channel>,
    pub n: NodeClient<Channel>,
    pub i: IdentityClient<Channel>,
    /// csi-sanity's `TargetPath`: the *parent* of every publish target (`target()`).
    pub mount_dir: PathBuf,
    /// csi-sanity's `StagingPath`.
    pub staging_dir: PathBuf,
    made: Arc<Mutex<Vec<Made>>>,
    suffix: Arc<String>,
}

/// How a case ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Skip(String),
}

type CaseFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One csi-sanity case.
pub struct Case {
    /// The `Describe` it is in.
    pub group: &'static str,
    /// Its `It` text.
    pub name: &'static str,
    pub run: fn(Ctx) -> CaseFuture,
}

/// Builds a [`Case`] from an `async fn(Ctx) -> Outcome`.
#[macro_export]
macro_rules! case {
    ($group:expr, $name:expr, $f:path) => {
        $crate::sanity::Case {
            group: $group,
            name: $name,
            run: |s| Box::pin($f(s)),
        }
    };
}

/// Returns `Outcome::Skip` with `why` unless `cond`, as csi-sanity's `Skip`.
#[macro_export]
macro_rules! skip_unless {
    ($cond:expr, $why:expr) => {
        if !$cond {
            return $crate::sanity::Outcome::Skip($why.to_string());
        }
    };
}

/// Every case of the suite, in csi-sanity's order, then convoy's own extra checks.
pub fn all_cases() -> Vec<Case> {
    let mut cases = controller::identity_cases();
    cases.extend(controller::controller_cases());
    cases.extend(snapshots::cases());
    cases.extend(node::cases());
    cases.extend(extras::cases());
    cases
}

/// The results of a run.
pub struct Report {
    pub results: Vec<(String, Result<Outcome, String>)>,
}

impl Report {
    /// Counts: (passed, skipped, failed).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for (_, r) in &self.results {
            match r {
                Ok(Outcome::Pass) => c.0 += 1,
                Ok(Outcome::Skip(_)) => c.1 += 1,
                Err(_) => c.2 += 1,
            }
        }
        c
    }

    /// Prints every case and panics if one failed.
    pub fn assert_passed(&self, title: &str) {
        println!("== {title}");
        for (name, r) in &self.results {
            match r {
                Ok(Outcome::Pass) => println!("  pass  {name}"),
                Ok(Outcome::Skip(why)) => println!("  skip  {name}: {why}"),
                Err(e) => println!("  FAIL  {name}: {e}"),
            }
        }
        let (pass, skip, fail) = self.counts();
        println!("== {title}: {pass} passed, {skip} skipped, {fail} failed");
        assert_eq!(fail, 0, "{title}: {fail} csi-sanity cases failed (above)");
    }

    /// The outcome of the case named `group` / `name`.
    pub fn outcome(&self, group: &str, name: &str) -> Option<&Result<Outcome, String>> {
        let key = format!("{group} / {name}");
        self.results.iter().find(|(n, _)| *n == key).map(|(_, r)| r)
    }
}

/// Runs `cases` against the driver on `channel`, making each case's directories under `base`.
pub async fn run(channel: Channel, base: &Path, config: Config, cases: &[Case]) -> Report {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let suffix = Arc::new(format!(
        "{:08X}-{:08X}",
        (nanos >> 32) as u32 ^ std::process::id(),
        nanos as u32
    ));
    let config = Arc::new(config);
    let mut results = Vec::new();
    for case in cases {
        let s = Ctx {
            config: config.clone(),
            c: ControllerClient::new(channel.clone()),
            n: NodeClient::new(channel.clone()),
            i: IdentityClient::new(channel.clone()),
            mount_dir: base.join("csi-mount"),
            staging_dir: base.join("csi-staging"),
            made: Arc::default(),
            suffix: suffix.clone(),
        };
        let name = format!("{} / {}", case.group, case.name);
        let result = run_one(case, s).await;
        results.push((name, result));
    }
    Report { results }
}

async fn run_one(case: &Case, s: Ctx) -> Result<Outcome, String> {
    // csi-sanity's Setup: both directories made (not their parents; an existing one fails).
    for dir in [&s.mount_dir, &s.staging_dir] {
        std::fs::create_dir(dir).map_err(|e| format!("setup: mkdir {}: {e}", dir.display()))?;
    }
    let outcome = match tokio::spawn((case.run)(s.clone())).await {
        Ok(outcome) => Ok(outcome),
        Err(e) => Err(panic_text(e)),
    };
    let mut problems = s.cleanup().await;
    // csi-sanity's Teardown: the directories are removed; one the driver left a mount or a
    // file in cannot be, and the next case's setup would fail.
    for dir in [&s.mount_dir, &s.staging_dir] {
        if let Err(e) = std::fs::remove_dir(dir) {
            problems.push(format!("teardown: rmdir {}: {e}", dir.display()));
        }
    }
    match (outcome, problems.is_empty()) {
        (Ok(o), true) => Ok(o),
        (Ok(_), false) => Err(problems.join("; ")),
        (Err(e), _) => Err(std::iter::once(e)
            .chain(problems)
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return format!("the case's task failed: {e}");
    }
    let payload = e.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

/// Asserts that `r` failed with `code` (csi-sanity's `ExpectErrorCode`).
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(r: Result<Response<T>, Status>, code: Code) {
    match r {
        Ok(answer) => panic!(
            "expected {code:?}, got an answer: {:?}",
            answer.into_inner()
        ),
        Err(status) => assert_eq!(status.code(), code, "unexpected error: {status:?}"),
    }
}

/// A case for a capability convoy does not declare: skipped while `declared` is false (as
/// csi-sanity skips it); a failure once it is declared, until its checks are written here.
pub fn gated(declared: bool, capability: &str) -> Outcome {
    assert!(
        !declared,
        "{capability} is declared now: write this case's checks (csi-sanity runs it)"
    );
    Outcome::Skip(format!("{capability} not declared"))
}
