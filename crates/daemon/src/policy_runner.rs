//! The policy runner: runs what the policies say is due (`convoy_core::PolicyEngine`), each run
//! in its own task, at most `--policy-max-backups` backup runs at once (`docs/operations.md`).

use std::sync::Arc;
use std::time::Duration;

use convoy_core::{PolicyAction, PolicyEngine, VolumeManager};

/// The longest the runner sleeps between looks: a policy set now is scheduled within it.
pub const POLICY_LOOK_INTERVAL: Duration = Duration::from_secs(5);
/// Backup runs at once, unless `--policy-max-backups` says otherwise.
pub const DEFAULT_MAX_POLICY_BACKUPS: usize = 2;

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The running runner; stopped when dropped (runs in flight finish in their own tasks).
#[derive(Debug)]
pub struct PolicyRunner(tokio::task::JoinHandle<()>);

impl Drop for PolicyRunner {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PolicyRunner {
    /// Starts running `engine`'s policies on `manager`'s volumes.
    pub fn start(manager: VolumeManager, engine: PolicyEngine, max_backups: usize) -> PolicyRunner {
        let permits = Arc::new(tokio::sync::Semaphore::new(max_backups.max(1)));
        PolicyRunner(tokio::spawn(async move {
            loop {
                let volumes: Vec<String> = match manager.list_volumes(None).await {
                    Ok(v) => v.into_iter().map(|v| v.name).collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "policy runner: cannot list volumes");
                        Vec::new()
                    }
                };
                let now = unix_now();
                match engine.due(&volumes, now) {
                    Ok(jobs) => {
                        for job in jobs {
                            let (manager, engine, permits) =
                                (manager.clone(), engine.clone(), permits.clone());
                            tokio::spawn(async move {
                                let _permit = match job.action() {
                                    PolicyAction::Backup => permits.acquire_owned().await.ok(),
                                    PolicyAction::Snapshot => None,
                                };
                                let (volume, name, action) =
                                    (job.volume().to_owned(), job.name().to_owned(), job.action());
                                let ok = engine.run_job(job, &manager).await.is_ok();
                                crate::metrics::record_policy_run(
                                    &volume,
                                    &name,
                                    action.as_str(),
                                    ok,
                                    unix_now(),
                                );
                            });
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "policy runner: cannot save the schedule")
                    }
                }
                let wait = engine
                    .next_due(&volumes)
                    .map_or(POLICY_LOOK_INTERVAL, |next| {
                        Duration::from_secs(next.saturating_sub(unix_now()).max(0) as u64)
                    })
                    .clamp(Duration::from_millis(250), POLICY_LOOK_INTERVAL);
                tokio::time::sleep(wait).await;
            }
        }))
    }
}
