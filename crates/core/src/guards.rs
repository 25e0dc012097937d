//! Cancel safety: the guards that give back what an operation claims, and [`detached`], which
//! runs an operation in its own task.
//!
//! The rules (see `docs/architecture.md`):
//!
//! * Every claim on shared state — a snapshot marked busy by a backup, a name reserved by a
//!   create — is a guard value whose `Drop` gives it back, so success, error, panic and a dropped
//!   future all release it. Per-volume locks are tokio's owned guards, so the same holds.
//! * Every mutating method of `VolumeManager` runs its work in a task of its own (`detached`):
//!   the caller's future only waits for it. A caller that goes away (an HTTP client hanging up,
//!   a `select!` taking another branch, a timeout) neither cancels the operation half-way nor
//!   leaves anything claimed; the operation completes or rolls back as if it had been awaited.
//! * Intent records on disk (`Creating`/`Deleting`) are for crashes; start-up settles them.

use std::future::Future;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::manager::Inner;
use crate::records::ObjectState;

/// Runs `work` in its own tokio task and waits for it. Dropping the returned future does not
/// cancel `work`. A panic in `work` is answered as [`Error::Internal`] (its guards have run).
pub(crate) async fn detached<T, F>(what: &str, work: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(work)
        .await
        .map_err(|e| Error::Internal(format!("{what} failed: {e}")))?
}

/// A snapshot marked busy (a backup reads it): deletes of it and of its volume are refused
/// while one exists. Dropping it unmarks the snapshot.
pub(crate) struct BusySnapshot {
    inner: Arc<Inner>,
    name: String,
}

impl BusySnapshot {
    /// Marks snapshot `name` busy (counted: two backups of one snapshot may run at once).
    pub(crate) fn claim(inner: &Arc<Inner>, name: &str) -> BusySnapshot {
        let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
        *st.busy_snapshots.entry(name.to_owned()).or_insert(0) += 1;
        BusySnapshot {
            inner: inner.clone(),
            name: name.to_owned(),
        }
    }
}

impl Drop for BusySnapshot {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = st.busy_snapshots.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                st.busy_snapshots.remove(&self.name);
            }
        }
    }
}

/// What a [`Reservation`] reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// A volume of that name, in state `Creating` in memory.
    Volume,
    /// A snapshot of that name of volume `volume`, in state `Creating` in memory.
    Snapshot,
}

/// A name reserved in memory by a create (a `Creating` volume or snapshot entry). Dropped
/// without [`Reservation::keep`], it removes the entry again — unless [`Reservation::on_disk`]
/// said an intent record may exist: then the entry stays (`busy: it is being created`) until
/// start-up settles the record, so a name is never handed out twice over a half-made object.
pub(crate) struct Reservation {
    inner: Arc<Inner>,
    what: Reserved,
    volume: String,
    name: String,
    armed: bool,
    on_disk: bool,
}

impl Reservation {
    /// Takes over an entry the caller has just inserted (under the state lock).
    pub(crate) fn new(inner: &Arc<Inner>, what: Reserved, volume: &str, name: &str) -> Self {
        Reservation {
            inner: inner.clone(),
            what,
            volume: volume.to_owned(),
            name: name.to_owned(),
            armed: true,
            on_disk: false,
        }
    }

    /// An intent record may now be on disk (set before writing it).
    pub(crate) fn on_disk(&mut self, yes: bool) {
        self.on_disk = yes;
    }

    /// The object is made (or the caller has cleaned up itself): leave the entry alone.
    pub(crate) fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.armed || self.on_disk {
            return;
        }
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        match self.what {
            Reserved::Volume => {
                if st
                    .volumes
                    .get(&self.name)
                    .is_some_and(|v| v.state == ObjectState::Creating)
                {
                    st.volumes.remove(&self.name);
                }
            }
            Reserved::Snapshot => {
                if let Some(v) = st.volumes.get_mut(&self.volume) {
                    if v.snapshots
                        .get(&self.name)
                        .is_some_and(|s| s.state == ObjectState::Creating)
                    {
                        v.snapshots.remove(&self.name);
                    }
                }
            }
        }
    }
}
