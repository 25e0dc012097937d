//! The policy book: policies and their run state, kept in `<root>/policies.json`, and the
//! schedule (what is due at a given time).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::{jitter, validate_policy_name, Action, Policy, ALL_VOLUMES, MISSED_SPREAD_SECS};
use crate::durable::write_atomic;
use crate::error::{Error, Result};

/// The file's name under the root.
pub(super) const FILE: &str = "policies.json";
const VERSION: u32 = 1;

/// (volume or [`ALL_VOLUMES`], policy name).
pub(super) type Key = (String, String);

/// The state of one action of one policy on one volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionState {
    /// When it last started (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<i64>,
    /// When it last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<i64>,
    /// The last run's error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it runs next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<i64>,
}

/// A snapshot a policy made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MadeSnapshot {
    /// Its name.
    pub name: String,
    /// The run's time.
    pub time: i64,
    /// The action that made it.
    pub action: Action,
}

/// A backup a policy made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MadeBackup {
    /// Its URL.
    pub url: String,
    /// The run's time.
    pub time: i64,
    /// The snapshot it was made from.
    pub snapshot: String,
    /// The destination it went to.
    pub dest: String,
}

/// The run state of one policy on one volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    /// Snapshot runs.
    #[serde(default)]
    pub snapshot: ActionState,
    /// Backup runs.
    #[serde(default)]
    pub backup: ActionState,
    /// Snapshots it made that still exist (as far as it knows).
    #[serde(default)]
    pub snapshots: Vec<MadeSnapshot>,
    /// Backups it made that still exist (as far as it knows).
    #[serde(default)]
    pub backups: Vec<MadeBackup>,
    /// Snapshots being made: recorded before the snapshot is, so that one made just before a
    /// crash is found and adopted (or dropped) by the next run instead of leaking.
    #[serde(default)]
    pub pending: Vec<MadeSnapshot>,
    /// The snapshot of its last successful backup (what the next incremental needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<String>,
    /// The snapshot a backup run is backing up now: kept by retention until the run ends (it
    /// becomes `protected` in the same update that records the backup, so that a snapshot
    /// run's retention never sees it unprotected in between).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing_up: Option<String>,
}

impl RunState {
    pub(super) fn action(&self, action: Action) -> &ActionState {
        match action {
            Action::Snapshot => &self.snapshot,
            Action::Backup => &self.backup,
        }
    }

    pub(super) fn action_mut(&mut self, action: Action) -> &mut ActionState {
        match action {
            Action::Snapshot => &mut self.snapshot,
            Action::Backup => &mut self.backup,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct PolicyEntry {
    volume: String,
    name: String,
    policy: Policy,
}

#[derive(Serialize, Deserialize)]
struct StateEntry {
    volume: String,
    name: String,
    state: RunState,
}

#[derive(Serialize, Deserialize)]
struct FileForm {
    version: u32,
    policies: Vec<PolicyEntry>,
    states: Vec<StateEntry>,
}

#[derive(Default)]
pub(super) struct Inner {
    pub(super) policies: BTreeMap<Key, Policy>,
    pub(super) states: BTreeMap<Key, RunState>,
    pub(super) in_flight: BTreeSet<(String, String, Action)>,
}

/// A policy as it applies to one volume, with its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyStatus {
    /// The volume ([`ALL_VOLUMES`] for the all-volumes policy itself).
    pub volume: String,
    /// The policy's name.
    pub name: String,
    /// The policy.
    pub policy: Policy,
    /// Whether it applies because it was set for all volumes.
    pub from_all: bool,
    /// Its run state (default for the all-volumes entry itself).
    pub state: RunState,
}

/// A due run, handed out by [`PolicyEngine::due`]; while it lives, the same action of the same
/// policy on the same volume is not handed out again.
pub struct Job {
    pub(super) volume: String,
    pub(super) name: String,
    pub(super) action: Action,
    pub(super) policy: Policy,
    pub(super) now: i64,
    _claim: Claim,
}

impl Job {
    /// The volume.
    pub fn volume(&self) -> &str {
        &self.volume
    }
    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The action.
    pub fn action(&self) -> Action {
        self.action
    }
    /// The run's time.
    pub fn time(&self) -> i64 {
        self.now
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} run of policy {} on {} at {}",
            self.action.as_str(),
            self.name,
            self.volume,
            self.now
        )
    }
}

/// The in-flight mark of a job, released when the job is dropped (done, failed or cancelled).
struct Claim {
    inner: Arc<Mutex<Inner>>,
    key: (String, String, Action),
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.inner).in_flight.remove(&self.key);
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The first time after `now` on the action's grid: `k * every + offset`.
fn grid_after(now: i64, every: u64, offset: u64) -> i64 {
    let every = every as i64;
    let offset = offset as i64;
    let k = (now - offset).div_euclid(every) + 1;
    k * every + offset
}

/// The policies of a root and their state (cheap to clone: clones share them).
#[derive(Clone)]
pub struct PolicyEngine {
    path: PathBuf,
    pub(super) inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Loads `<root>/policies.json` (none: no policies). Runs that were due before `now` (the
    /// engine was closed when they should have run) are moved to within
    /// [`MISSED_SPREAD_SECS`] of `now`: each runs once, soon, and not all at the same second.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`] for an unreadable file; [`Error::Io`].
    pub fn open(root: &Path, now: i64) -> Result<PolicyEngine> {
        let path = root.join(FILE);
        let mut inner = Inner::default();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let corrupt = |reason: String| Error::CorruptRecord {
                    path: path.clone(),
                    reason,
                };
                let form: FileForm =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                if form.version != VERSION {
                    return Err(corrupt(format!(
                        "version {} is not known to this convoy (it reads version {VERSION})",
                        form.version
                    )));
                }
                for e in form.policies {
                    inner.policies.insert((e.volume, e.name), e.policy);
                }
                for e in form.states {
                    inner.states.insert((e.volume, e.name), e.state);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("read", &path, e)),
        }
        for ((volume, name), state) in &mut inner.states {
            for action in [Action::Snapshot, Action::Backup] {
                let a = state.action_mut(action);
                if let Some(next) = a.next_run.filter(|n| *n < now) {
                    let spread =
                        super::stable_hash(&[volume, name, action.as_str()]) % MISSED_SPREAD_SECS;
                    a.next_run = Some(now + spread as i64);
                    tracing::info!(
                        volume = %volume,
                        policy = %name,
                        "policy {} run missed at {next} runs once at {}",
                        action.as_str(),
                        now + spread as i64
                    );
                }
            }
        }
        let engine = PolicyEngine {
            path,
            inner: Arc::new(Mutex::new(inner)),
        };
        engine.save(&lock(&engine.inner))?;
        Ok(engine)
    }

    pub(super) fn save(&self, inner: &Inner) -> Result<()> {
        if inner.policies.is_empty() && inner.states.is_empty() && !self.path.exists() {
            return Ok(());
        }
        let form = FileForm {
            version: VERSION,
            policies: inner
                .policies
                .iter()
                .map(|((volume, name), policy)| PolicyEntry {
                    volume: volume.clone(),
                    name: name.clone(),
                    policy: policy.clone(),
                })
                .collect(),
            states: inner
                .states
                .iter()
                .map(|((volume, name), state)| StateEntry {
                    volume: volume.clone(),
                    name: name.clone(),
                    state: state.clone(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&form)
            .map_err(|e| Error::Internal(format!("encoding the policies: {e}")))?;
        write_atomic(&self.path, &bytes)
    }

    /// A copy of the state of `key` (default when it has none), read without a write.
    pub(super) fn state(&self, key: &Key) -> RunState {
        lock(&self.inner)
            .states
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    /// Changes the state of `key` and saves. A key that no policy applies to any more (the
    /// policy or its volume went while a run was in flight) gets no state back: the run
    /// finishes on a scratch copy that is not kept, so a removed policy leaves nothing behind
    /// in the file, and its retention, which had nothing left to go by, deletes nothing.
    pub(super) fn update<R>(&self, key: &Key, f: impl FnOnce(&mut RunState) -> R) -> Result<R> {
        let mut inner = lock(&self.inner);
        let applies = inner.states.contains_key(key)
            || inner.policies.contains_key(key)
            || inner
                .policies
                .contains_key(&(ALL_VOLUMES.to_owned(), key.1.clone()));
        if !applies {
            return Ok(f(&mut RunState::default()));
        }
        let r = f(inner.states.entry(key.clone()).or_default());
        self.save(&inner)?;
        Ok(r)
    }

    /// Sets policy `name` of `volume` ([`ALL_VOLUMES`] for all); whether the volume exists is
    /// the caller's to check. An action whose interval changed is rescheduled.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name or policy; [`Error::Io`] saving.
    pub fn set(&self, volume: &str, name: &str, policy: Policy) -> Result<()> {
        validate_policy_name(name)?;
        if volume != ALL_VOLUMES {
            crate::names::validate_name(volume)?;
        }
        policy.validate()?;
        let mut inner = lock(&self.inner);
        let key = (volume.to_owned(), name.to_owned());
        let old = inner.policies.insert(key.clone(), policy.clone());
        // Reschedule changed intervals, on this volume or (for an all-volumes policy) on
        // every volume that follows it.
        let keys: Vec<Key> = inner
            .states
            .keys()
            .filter(|(v, n)| n == name && (v == volume || volume == ALL_VOLUMES))
            .cloned()
            .collect();
        for k in keys {
            let state = inner.states.get_mut(&k).expect("listed");
            for action in [Action::Snapshot, Action::Backup] {
                let before = old.as_ref().and_then(|p| action.interval(p));
                if before != action.interval(&policy) {
                    state.action_mut(action).next_run = None;
                }
            }
        }
        self.save(&inner)
    }

    /// Removes policy `name` of `volume` (every policy of it when `name` is `None`); the
    /// snapshots and backups they made stay, as ordinary ones. Answers how many were removed.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is none; [`Error::Io`] saving.
    pub fn remove(&self, volume: &str, name: Option<&str>) -> Result<usize> {
        let mut inner = lock(&self.inner);
        let keys: Vec<Key> = inner
            .policies
            .keys()
            .filter(|(v, n)| v == volume && name.is_none_or(|name| name == n))
            .cloned()
            .collect();
        if keys.is_empty() {
            let what = match name {
                Some(n) => format!("{n} of {volume}"),
                None => format!("of {volume}"),
            };
            return Err(Error::NotFound {
                what: "policy",
                name: what,
            });
        }
        for k in &keys {
            inner.policies.remove(k);
            if volume == ALL_VOLUMES {
                let followers: Vec<Key> = inner
                    .states
                    .keys()
                    .filter(|(v, n)| {
                        *n == k.1 && !inner.policies.contains_key(&(v.clone(), n.clone()))
                    })
                    .cloned()
                    .collect();
                for f in followers {
                    inner.states.remove(&f);
                }
            } else if !inner
                .policies
                .contains_key(&(ALL_VOLUMES.to_owned(), k.1.clone()))
            {
                inner.states.remove(k);
            }
        }
        self.save(&inner)?;
        Ok(keys.len())
    }

    /// Forgets everything about `volume` (it was deleted).
    ///
    /// # Errors
    /// [`Error::Io`] saving.
    pub fn forget_volume(&self, volume: &str) -> Result<()> {
        let mut inner = lock(&self.inner);
        let before = (inner.policies.len(), inner.states.len());
        inner.policies.retain(|(v, _), _| v != volume);
        inner.states.retain(|(v, _), _| v != volume);
        if before != (inner.policies.len(), inner.states.len()) {
            self.save(&inner)?;
        }
        Ok(())
    }

    /// The policies that apply to each of `volumes`: (volume, name, policy, from all).
    fn effective(inner: &Inner, volumes: &[String]) -> Vec<(String, String, Policy, bool)> {
        let mut out = Vec::new();
        for volume in volumes {
            let mut names: BTreeMap<&str, (&Policy, bool)> = BTreeMap::new();
            for ((v, n), p) in &inner.policies {
                if v == ALL_VOLUMES {
                    names.entry(n).or_insert((p, true));
                } else if v == volume {
                    names.insert(n, (p, false));
                }
            }
            for (n, (p, all)) in names {
                out.push((volume.clone(), n.to_owned(), p.clone(), all));
            }
        }
        out
    }

    /// Every policy: the all-volumes ones as set, then each of `volumes`' effective ones with
    /// their state, then volume policies whose volume is not in `volumes`.
    pub fn status(&self, volumes: &[String]) -> Vec<PolicyStatus> {
        let inner = lock(&self.inner);
        let mut out: Vec<PolicyStatus> = inner
            .policies
            .iter()
            .filter(|((v, _), _)| v == ALL_VOLUMES)
            .map(|((v, n), p)| PolicyStatus {
                volume: v.clone(),
                name: n.clone(),
                policy: p.clone(),
                from_all: true,
                state: RunState::default(),
            })
            .collect();
        for (volume, name, policy, from_all) in Self::effective(&inner, volumes) {
            let state = inner
                .states
                .get(&(volume.clone(), name.clone()))
                .cloned()
                .unwrap_or_default();
            out.push(PolicyStatus {
                volume,
                name,
                policy,
                from_all,
                state,
            });
        }
        for ((v, n), p) in &inner.policies {
            if v != ALL_VOLUMES && !volumes.contains(v) {
                out.push(PolicyStatus {
                    volume: v.clone(),
                    name: n.clone(),
                    policy: p.clone(),
                    from_all: false,
                    state: inner
                        .states
                        .get(&(v.clone(), n.clone()))
                        .cloned()
                        .unwrap_or_default(),
                });
            }
        }
        out
    }

    /// The earliest scheduled run among `volumes`' policies (`None`: nothing scheduled). Runs
    /// not scheduled yet (a new policy or volume) are scheduled by [`PolicyEngine::due`].
    pub fn next_due(&self, volumes: &[String]) -> Option<i64> {
        let inner = lock(&self.inner);
        Self::effective(&inner, volumes)
            .into_iter()
            .flat_map(|(volume, name, policy, _)| {
                let state = inner.states.get(&(volume, name));
                [Action::Snapshot, Action::Backup]
                    .into_iter()
                    .filter(move |a| a.interval(&policy).is_some())
                    .filter_map(move |a| state.and_then(|s| s.action(a).next_run))
            })
            .min()
    }

    /// The runs due at `now` among `volumes`' policies, each claimed until its [`Job`] is
    /// dropped; a run already in flight is not handed out again. Each handed-out run is
    /// rescheduled at once to its next time on its grid after `now` (so a run missed several
    /// times runs once), and actions never scheduled get their first time.
    ///
    /// # Errors
    /// [`Error::Io`] saving the schedule.
    pub fn due(&self, volumes: &[String], now: i64) -> Result<Vec<Job>> {
        let mut inner = lock(&self.inner);
        let mut jobs = Vec::new();
        let mut changed = false;
        for (volume, name, policy, _) in Self::effective(&inner, volumes) {
            for action in [Action::Snapshot, Action::Backup] {
                let Some(every) = action.interval(&policy) else {
                    continue;
                };
                let offset = jitter(&volume, &name, action, every);
                let claim_key = (volume.clone(), name.clone(), action);
                let busy = inner.in_flight.contains(&claim_key);
                let a = inner
                    .states
                    .entry((volume.clone(), name.clone()))
                    .or_default()
                    .action_mut(action);
                let Some(next) = a.next_run else {
                    a.next_run = Some(grid_after(now, every, offset));
                    changed = true;
                    continue;
                };
                if next > now || busy {
                    continue;
                }
                a.next_run = Some(grid_after(now, every, offset));
                changed = true;
                inner.in_flight.insert(claim_key.clone());
                jobs.push(Job {
                    volume: volume.clone(),
                    name: name.clone(),
                    action,
                    policy: policy.clone(),
                    now,
                    _claim: Claim {
                        inner: self.inner.clone(),
                        key: claim_key,
                    },
                });
            }
        }
        if changed {
            self.save(&inner)?;
        }
        Ok(jobs)
    }
}
