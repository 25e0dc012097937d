//! The store lock: shared for backups and restores, exclusive for deletes and repair.
//!
//! Protocol (also in `docs/backup-format.md`, "Locking"): write `locks/<kind>-<uuid>.json`, then list
//! `locks/`. If a conflicting live lock is listed (exclusive vs anything), remove our record,
//! back off with jitter and retry; otherwise the lock is held. Because both sides write before
//! they list, and S3 and local listings are strongly consistent, two conflicting lockers can
//! never both succeed. A held lock is refreshed periodically; a lock is stale (and removed by
//! whoever finds it) when it was not refreshed for `stale_after`, when its process on this host
//! is gone, or when it belongs to this process but its guard was dropped (a cancelled task).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{BackupError, Result};
use crate::layout;
use crate::options::LockPolicy;
use crate::store::Store;

/// Kind of lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LockKind {
    Shared,
    Exclusive,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LockRecord {
    kind: LockKind,
    operation: String,
    host: String,
    pid: u32,
    process: String,
    created: u64,
    refreshed: u64,
    /// For a backup's shared lock: the backup it publishes (under a name made for it). Once
    /// that backup's manifest exists the lock guards nothing, and an exclusive locker that
    /// finds the record removes it (the backup does not wait for its record's removal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    publishes: Option<Publishes>,
}

/// The backup a lock record's holder publishes.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Publishes {
    volume: String,
    backup: String,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// A token unique to this process (pids are reused; this is not).
fn process_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| uuid::Uuid::new_v4().to_string())
}

/// Lock ids held by live guards in this process.
fn live_locks() -> &'static Mutex<HashSet<String>> {
    static LIVE: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

fn set_live(id: &str, live: bool) {
    let mut set = live_locks().lock().unwrap_or_else(|p| p.into_inner());
    if live {
        set.insert(id.to_string());
    } else {
        set.remove(id);
    }
}

fn is_live_here(id: &str) -> bool {
    live_locks()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(id)
}

fn is_stale(id: &str, rec: &LockRecord, policy: &LockPolicy, host: &str) -> bool {
    if now_secs().saturating_sub(rec.refreshed) > policy.stale_after.as_secs() {
        return true;
    }
    if rec.host != host {
        return false;
    }
    if rec.process == process_token() {
        return !is_live_here(id);
    }
    rec.pid != std::process::id() && !std::path::Path::new(&format!("/proc/{}", rec.pid)).exists()
}

/// Stops counting record `id` as live in this process and removes it in the background: a
/// guard dropped, or an acquisition dropped half way.
fn forget(store: &Arc<Store>, id: &str) {
    set_live(id, false);
    let (s, path) = (store.clone(), layout::lock(id));
    store.in_background(async move {
        let _ = s.delete(&path).await;
    });
}

/// Whether the backup a shared record's holder publishes is published: the record then
/// guards nothing any more (its holder may have ended without removing it).
async fn published(store: &Store, rec: &LockRecord) -> Result<bool> {
    let Some(p) = rec
        .publishes
        .as_ref()
        .filter(|_| rec.kind == LockKind::Shared)
    else {
        return Ok(false);
    };
    // A record naming no valid backup is treated as any other.
    let Ok(r) = crate::url::BackupRef::new(&p.volume, &p.backup) else {
        return Ok(false);
    };
    store.exists(&layout::manifest(&r)).await
}

/// A lock record being written and checked: marked live in this process while it is, and
/// removed in the background if the acquisition is dropped half way.
struct Pending {
    store: Arc<Store>,
    id: String,
    armed: bool,
}

impl Pending {
    fn new(store: Arc<Store>, id: &str) -> Self {
        set_live(id, true);
        Pending {
            store,
            id: id.to_string(),
            armed: true,
        }
    }

    /// The acquisition ends here without the lock: the record is no longer live (the caller
    /// removes it, or never wrote it).
    fn disarm(&mut self) {
        self.armed = false;
        set_live(&self.id, false);
    }

    /// The lock is held: the record stays live, in a [`LockGuard`]'s care.
    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        forget(&self.store, &self.id);
    }
}

/// A held lock. Release it with [`LockGuard::release`]; dropping it releases in the background.
pub(crate) struct LockGuard {
    store: Arc<Store>,
    id: String,
    refresher: tokio::task::JoinHandle<()>,
    released: bool,
}

impl LockGuard {
    /// Takes a lock of `kind`, waiting up to `policy.wait` for conflicting locks to go away.
    pub async fn acquire(
        store: Arc<Store>,
        kind: LockKind,
        operation: &str,
        policy: &LockPolicy,
    ) -> Result<LockGuard> {
        Self::acquire_publishing(store, kind, operation, policy, None).await
    }

    /// [`Self::acquire`] for a backup that publishes `publishes` (a backup whose name was
    /// made for it, so that no other run publishes it): its record says so, and once that
    /// backup is published, lockers treat the record as released.
    pub async fn acquire_publishing(
        store: Arc<Store>,
        kind: LockKind,
        operation: &str,
        policy: &LockPolicy,
        publishes: Option<&crate::url::BackupRef>,
    ) -> Result<LockGuard> {
        let host = hostname();
        let started = Instant::now();
        let mut backoff = Duration::from_millis(20);
        loop {
            let kind_name = match kind {
                LockKind::Shared => "shared",
                LockKind::Exclusive => "exclusive",
            };
            // The kind is in the key, so shared lockers need not read other shared locks.
            let id = format!("{kind_name}-{}", uuid::Uuid::new_v4());
            let mut rec = LockRecord {
                kind,
                operation: operation.to_string(),
                host: host.clone(),
                pid: std::process::id(),
                process: process_token().to_string(),
                created: now_secs(),
                refreshed: now_secs(),
                publishes: publishes.map(|b| Publishes {
                    volume: b.volume.clone(),
                    backup: b.backup.clone(),
                }),
            };
            let path = layout::lock(&id);
            // Removes the record if this acquisition is cancelled before it ends (a dropped
            // future): it would otherwise look live to this process until it went stale.
            let mut pending = Pending::new(store.clone(), &id);
            let body = serde_json::to_vec(&rec).expect("lock record serializes");
            if let Err(e) = store.put(&path, body).await {
                pending.disarm();
                return Err(e);
            }
            let conflict = match Self::find_conflict(&store, &id, kind, policy, &host).await {
                Ok(c) => c,
                Err(e) => {
                    pending.disarm();
                    let _ = store.delete(&path).await;
                    return Err(e);
                }
            };
            let Some(holder) = conflict else {
                pending.keep();
                let refresh_store = store.clone();
                let every = policy.refresh;
                let refresher = tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        rec.refreshed = now_secs();
                        let body = serde_json::to_vec(&rec).expect("lock record serializes");
                        let _ = refresh_store.put(&path, body).await;
                    }
                });
                return Ok(LockGuard {
                    store,
                    id,
                    refresher,
                    released: false,
                });
            };
            pending.disarm();
            store.delete(&path).await?;
            if started.elapsed() >= policy.wait {
                return Err(BackupError::Locked {
                    dest: store.dest.clone(),
                    holder: format!(
                        "{} (pid {} on {}, {})",
                        holder.1.operation, holder.1.pid, holder.1.host, holder.0
                    ),
                    kind: format!("{:?}", holder.1.kind).to_lowercase(),
                    waited_secs: started.elapsed().as_secs(),
                });
            }
            let jitter = Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64));
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn find_conflict(
        store: &Store,
        own: &str,
        kind: LockKind,
        policy: &LockPolicy,
        host: &str,
    ) -> Result<Option<(String, LockRecord)>> {
        let keys: Vec<_> = store.list(&layout::locks_prefix()).try_collect().await?;
        for key in keys {
            let Some(name) = key.filename().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            if name == own || (kind == LockKind::Shared && name.starts_with("shared-")) {
                continue;
            }
            let Some(body) = store.get_opt(&key).await? else {
                continue;
            };
            let Ok(rec) = serde_json::from_slice::<LockRecord>(&body) else {
                // Not a lock record of ours (puts are atomic, so never a torn one): ignore it.
                continue;
            };
            if is_stale(name, &rec, policy, host) || published(store, &rec).await? {
                store.delete(&key).await?;
                continue;
            }
            if kind == LockKind::Exclusive || rec.kind == LockKind::Exclusive {
                return Ok(Some((name.to_string(), rec)));
            }
        }
        Ok(None)
    }

    /// Lets the lock go without waiting for its record's removal (sent in the background, as
    /// when the guard is dropped): for a backup that has published its manifest, whose record
    /// lockers treat as released from then on (see [`Self::acquire_publishing`]).
    pub fn let_go(self) {
        drop(self);
    }

    /// Removes the lock record.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        self.refresher.abort();
        set_live(&self.id, false);
        self.store.delete(&layout::lock(&self.id)).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.refresher.abort();
        forget(&self.store, &self.id);
    }
}
