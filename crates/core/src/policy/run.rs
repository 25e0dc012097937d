//! Running a due job: the snapshot, the backup, then retention of what the policy made.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use super::book::{Job, Key, MadeBackup, MadeSnapshot, RunState};
use super::{policy_snapshot_name, Action, PolicyEngine};
use crate::error::{Error, ErrorKind, Result};
use crate::retention::{retention, RetentionItem};
use crate::{NoProgress, StoreOptions, VolumeManager};

/// What a policy acts on: [`VolumeManager`], or a stand-in in tests.
pub trait PolicyTarget: Send + Sync {
    /// Snapshots `volume` as `name`.
    fn create_snapshot(&self, volume: &str, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Whether snapshot `name` exists.
    fn snapshot_exists(&self, name: &str) -> impl Future<Output = bool> + Send;
    /// Deletes snapshot `name`.
    fn delete_snapshot(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Backs snapshot `name` up to `dest`; answers the backup URL.
    fn create_backup(
        &self,
        snapshot: &str,
        dest: &str,
        s3_endpoint: Option<&str>,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Deletes backup `url`.
    fn delete_backup(
        &self,
        url: &str,
        s3_endpoint: Option<&str>,
    ) -> impl Future<Output = Result<()>> + Send;
}

fn store(s3_endpoint: Option<&str>) -> StoreOptions {
    StoreOptions {
        s3_endpoint: s3_endpoint.map(str::to_owned),
        ..StoreOptions::default()
    }
}

impl PolicyTarget for VolumeManager {
    async fn create_snapshot(&self, volume: &str, name: &str) -> Result<()> {
        VolumeManager::create_snapshot(self, volume, Some(name.to_owned()))
            .await
            .map(drop)
    }

    async fn snapshot_exists(&self, name: &str) -> bool {
        self.inspect_snapshot(name).await.is_ok()
    }

    async fn delete_snapshot(&self, name: &str) -> Result<()> {
        VolumeManager::delete_snapshot(self, name).await
    }

    async fn create_backup(
        &self,
        snapshot: &str,
        dest: &str,
        s3_endpoint: Option<&str>,
    ) -> Result<String> {
        let report = VolumeManager::create_backup_report(
            self,
            snapshot,
            dest,
            &store(s3_endpoint),
            Arc::new(NoProgress),
        )
        .await?;
        let kind = match (&report.kind, &report.parent_snapshot) {
            (crate::BackupKind::Incremental, Some(parent)) => format!("incremental from {parent}"),
            _ => "full".to_owned(),
        };
        tracing::info!(
            snapshot,
            url = %report.backup_url,
            blocks_uploaded = report.blocks_uploaded,
            "policy backup of {snapshot}: {kind}, {} bytes read",
            report.bytes_read
        );
        Ok(report.backup_url)
    }

    async fn delete_backup(&self, url: &str, s3_endpoint: Option<&str>) -> Result<()> {
        VolumeManager::delete_backup(self, url, &store(s3_endpoint)).await
    }
}

/// The snapshots of `state` that `keep` lets go.
pub(super) fn snapshots_to_delete(state: &RunState, keep: &crate::KeepPolicy) -> Vec<String> {
    let protected: BTreeSet<String> = state
        .protected
        .iter()
        .chain(&state.backing_up)
        .cloned()
        .collect();
    if keep.is_empty() {
        // No snapshot retention: snapshot runs' snapshots stay; a backup run's goes once a
        // newer backup no longer needs it.
        return state
            .snapshots
            .iter()
            .filter(|s| s.action == Action::Backup && !protected.contains(&s.name))
            .map(|s| s.name.clone())
            .collect();
    }
    let items: Vec<RetentionItem> = state
        .snapshots
        .iter()
        .map(|s| RetentionItem {
            name: s.name.clone(),
            time: s.time,
        })
        .collect();
    retention(&items, keep, &protected)
        .into_iter()
        .filter(|d| !d.keep())
        .map(|d| d.name)
        .collect()
}

/// The backups (to `dest`) of `state` that `keep` lets go.
fn backups_to_delete(state: &RunState, keep: &crate::KeepPolicy, dest: &str) -> Vec<String> {
    if keep.is_empty() {
        return Vec::new();
    }
    let items: Vec<RetentionItem> = state
        .backups
        .iter()
        .filter(|b| b.dest == dest)
        .map(|b| RetentionItem {
            name: b.url.clone(),
            time: b.time,
        })
        .collect();
    retention(&items, keep, &BTreeSet::new())
        .into_iter()
        .filter(|d| !d.keep())
        .map(|d| d.name)
        .collect()
}

impl PolicyEngine {
    /// Runs `job` against `target` and records the outcome in the job's state (`last_run`,
    /// `last_success` or `last_error`). A failed backup deletes the snapshot taken for it.
    /// Retention runs after a successful snapshot or backup; a snapshot that is busy (being
    /// backed up) is kept until a later run.
    ///
    /// # Errors
    /// The run's failure, as recorded in `last_error`.
    pub async fn run_job<T: PolicyTarget>(&self, job: Job, target: &T) -> Result<()> {
        let key: Key = (job.volume.clone(), job.name.clone());
        let now = job.now;
        self.update(&key, |s| s.action_mut(job.action).last_run = Some(now))?;
        let outcome = self.run_steps(&job, &key, target).await;
        let message = outcome.as_ref().err().map(ToString::to_string);
        self.update(&key, |s| {
            let a = s.action_mut(job.action);
            match &message {
                None => {
                    a.last_success = Some(now);
                    a.last_error = None;
                }
                Some(m) => a.last_error = Some(m.clone()),
            }
        })?;
        match &outcome {
            Ok(()) => {
                tracing::info!(volume = %job.volume, policy = %job.name, "policy {} run done", job.action.as_str())
            }
            Err(e) => {
                tracing::warn!(volume = %job.volume, policy = %job.name, error = %e, "policy {} run failed", job.action.as_str())
            }
        }
        outcome
    }

    async fn run_steps<T: PolicyTarget>(&self, job: &Job, key: &Key, target: &T) -> Result<()> {
        self.settle_pending(key, target).await?;
        let snapshot = policy_snapshot_name(&job.volume, &job.name, job.action, job.now);
        let made = MadeSnapshot {
            name: snapshot.clone(),
            time: job.now,
            action: job.action,
        };
        self.update(key, |s| {
            s.pending.push(made.clone());
            if job.action == Action::Backup {
                // Only one backup run per policy and volume at a time: a name left here by a
                // crash is stale.
                s.backing_up = Some(snapshot.clone());
            }
        })?;
        let created = target.create_snapshot(&job.volume, &snapshot).await;
        self.update(key, |s| {
            s.pending.retain(|p| p.name != snapshot);
            if created.is_ok() {
                s.snapshots.push(made.clone());
            } else if job.action == Action::Backup {
                s.backing_up = None;
            }
        })?;
        created?;
        if job.action == Action::Backup {
            let dest = job.policy.backup_dest.clone().unwrap_or_default();
            let endpoint = job.policy.s3_endpoint.as_deref();
            match target.create_backup(&snapshot, &dest, endpoint).await {
                Ok(url) => self.update(key, |s| {
                    s.backups.push(MadeBackup {
                        url,
                        time: job.now,
                        snapshot: snapshot.clone(),
                        dest: dest.clone(),
                    });
                    s.protected = Some(snapshot.clone());
                    s.backing_up = None;
                })?,
                Err(e) => {
                    self.update(key, |s| s.backing_up = None)?;
                    // The snapshot was only for this backup.
                    if self.delete_snapshot(key, &snapshot, target).await.is_err() {
                        tracing::warn!(snapshot = %snapshot, "cannot delete the failed backup run's snapshot; the next run's retention retries");
                    }
                    return Err(e);
                }
            }
        }
        self.apply_retention(key, &job.policy, target).await
    }

    /// Adopts snapshots made just before a crash (recorded as pending) if they exist.
    async fn settle_pending<T: PolicyTarget>(&self, key: &Key, target: &T) -> Result<()> {
        if self.state(key).pending.is_empty() {
            return Ok(());
        }
        let pending = self.update(key, |s| std::mem::take(&mut s.pending))?;
        for p in pending {
            if target.snapshot_exists(&p.name).await {
                self.update(key, |s| s.snapshots.push(p))?;
            }
        }
        Ok(())
    }

    /// Deletes one of the policy's snapshots; gone already counts as deleted, busy keeps it.
    async fn delete_snapshot<T: PolicyTarget>(
        &self,
        key: &Key,
        name: &str,
        target: &T,
    ) -> Result<()> {
        match target.delete_snapshot(name).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if e.kind() == ErrorKind::Busy => {
                tracing::info!(snapshot = %name, "policy retention keeps a busy snapshot for now: {e}");
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        self.update(key, |s| s.snapshots.retain(|m| m.name != name))
    }

    async fn apply_retention<T: PolicyTarget>(
        &self,
        key: &Key,
        policy: &super::Policy,
        target: &T,
    ) -> Result<()> {
        let state = self.state(key);
        let mut failures = Vec::new();
        for name in snapshots_to_delete(&state, &policy.keep_snapshots) {
            if let Err(e) = self.delete_snapshot(key, &name, target).await {
                failures.push(format!("snapshot {name}: {e}"));
            }
        }
        if let Some(dest) = &policy.backup_dest {
            for url in backups_to_delete(&state, &policy.keep_backups, dest) {
                match target
                    .delete_backup(&url, policy.s3_endpoint.as_deref())
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => {
                        failures.push(format!("backup {url}: {e}"));
                        continue;
                    }
                }
                self.update(key, |s| s.backups.retain(|b| b.url != url))?;
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "retention could not delete {}",
                failures.join("; ")
            )))
        }
    }

    /// Runs every job due at `now` among `volumes`' policies and waits for them: snapshot runs
    /// and up to `max_backups` backup runs at once. Answers the outcome of each (volume, policy,
    /// action). What a daemon does on a timer, and what tests call with a made-up clock.
    ///
    /// # Errors
    /// [`Error::Io`] saving the schedule (a failed run is in the answer, not an error).
    pub async fn run_due<T: PolicyTarget>(
        &self,
        target: &T,
        volumes: &[String],
        now: i64,
        max_backups: usize,
    ) -> Result<Vec<(String, String, Action, Result<()>)>> {
        let jobs = self.due(volumes, now)?;
        let permits = Arc::new(tokio::sync::Semaphore::new(max_backups.max(1)));
        let runs = jobs.into_iter().map(|job| {
            let permits = permits.clone();
            async move {
                let _permit = match job.action {
                    Action::Backup => Some(permits.acquire_owned().await.expect("never closed")),
                    Action::Snapshot => None,
                };
                let id = (job.volume.clone(), job.name.clone(), job.action);
                let outcome = self.run_job(job, target).await;
                (id.0, id.1, id.2, outcome)
            }
        });
        let mut all = futures::future::join_all(runs).await;
        all.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        Ok(all)
    }
}
