//! The heavy work of backups and restores — reading and hashing chunks, compressing,
//! decompressing and checking blocks, writing restored data — runs on a few threads of its own at
//! a lower CPU priority (nice [`NICE`]). A backup then uses every idle core, but a volume being
//! created, mounted or deleted beside it gets the CPU first: the daemon's other calls are not
//! held up by an unrelated backup (measured by the reliability suite's `rel_vm_backup_latency`).

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{BackupError, Result};

/// Niceness of the worker threads (0 is the default; 19 the lowest priority).
pub const NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The pool's queue: one thread per core takes jobs from it.
fn queue() -> &'static Mutex<Sender<Job>> {
    static QUEUE: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("convoy-backup-{i}"))
                .spawn(move || {
                    // Linux applies a thread id's priority to that thread only. A refusal
                    // (no permission) leaves the thread at normal priority: slower neighbours,
                    // never a failed backup.
                    let _ =
                        rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE);
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("cannot start a backup worker thread");
        }
        Mutex::new(tx)
    })
}

/// Runs `f` on a worker thread and waits for its result without blocking the async runtime.
pub(crate) async fn run<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(out);
    });
    queue()
        .lock()
        .map_err(|_| BackupError::Task("the backup worker queue is poisoned".into()))?
        .send(job)
        .map_err(|_| BackupError::Task("the backup worker threads are gone".into()))?;
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(BackupError::Task("a backup worker panicked".into())),
        Err(_) => Err(BackupError::Task("a backup worker dropped its job".into())),
    }
}

/// Runs `f` at once on a blocking thread of the async runtime, at the caller's priority,
/// instead of queueing it behind the workers' jobs: for work someone is waiting for (a
/// program's read of a mounted backup or of a volume being filled).
pub(crate) async fn run_now<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => Ok(value),
        Err(e) if e.is_panic() => Err(BackupError::Task("a backup worker panicked".into())),
        Err(_) => Err(BackupError::Task("a backup worker dropped its job".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_at_lower_priority_and_panics_become_errors() {
        let nice = run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
            .await
            .unwrap()
            .unwrap();
        // Root or not, lowering one's own priority is always allowed (a test run already niced
        // more stays where it was).
        assert!(nice >= NICE, "worker niceness {nice}");
        let err = run(|| -> u32 { panic!("boom") }).await.unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        let err = run_now(|| -> u32 { panic!("boom") }).await.unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        assert_eq!(run_now(|| 7).await.unwrap(), 7);
        let many = futures::future::join_all((0..32u64).map(|i| run(move || i * 2))).await;
        let sum: u64 = many.into_iter().map(|r| r.unwrap()).sum();
        assert_eq!(sum, (0..32u64).map(|i| i * 2).sum::<u64>());
    }
}
