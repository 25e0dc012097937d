//! The lock gate of a backup run: the run's local work (reading, hashing, packing, the store
//! index from the cache) starts while its lock is being taken; everything that writes to the
//! store, or reads what only the lock keeps true, waits at the gate until the lock is held.
//! A lock that cannot be taken closes the gate, and whatever waits at it fails.

use tokio::sync::watch;

use crate::error::{BackupError, Result};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Waiting,
    Open,
    Closed,
}

/// Opened (or closed) once, by whoever takes the lock; waited on by the run's writers.
#[derive(Clone)]
pub(crate) struct Gate {
    rx: watch::Receiver<State>,
}

/// The side of a [`Gate`] that opens or closes it. Dropped without either, it closes it: a
/// lock acquisition that was cancelled lets nothing through.
pub(crate) struct GateKeeper {
    tx: watch::Sender<State>,
}

impl Gate {
    /// A gate waiting for its keeper.
    pub fn new() -> (GateKeeper, Gate) {
        let (tx, rx) = watch::channel(State::Waiting);
        (GateKeeper { tx }, Gate { rx })
    }

    /// Waits until the lock is held; fails if it will not be.
    pub async fn wait(&self) -> Result<()> {
        let mut rx = self.rx.clone();
        let state = match rx.wait_for(|s| *s != State::Waiting).await {
            Ok(s) => *s,
            Err(_) => State::Closed,
        };
        match state {
            State::Open => Ok(()),
            _ => Err(BackupError::Task(
                "the store lock was not taken; nothing was written".into(),
            )),
        }
    }

    /// Whether the lock is held now.
    pub fn is_open(&self) -> bool {
        *self.rx.borrow() == State::Open
    }
}

impl GateKeeper {
    /// The lock is held: lets the writers through.
    pub fn open(self) {
        let _ = self.tx.send(State::Open);
    }
}

impl Drop for GateKeeper {
    fn drop(&mut self) {
        self.tx.send_if_modified(|s| {
            if *s == State::Waiting {
                *s = State::Closed;
                true
            } else {
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;

    #[tokio::test]
    async fn a_gate_lets_through_once_opened_and_never_once_closed() {
        let (keeper, gate) = Gate::new();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(!gate.is_open());
        keeper.open();
        waiter.await.unwrap().unwrap();
        assert!(gate.is_open());

        let (keeper, gate) = Gate::new();
        drop(keeper);
        assert!(gate.wait().await.is_err());
        assert!(!gate.is_open());
    }
}
