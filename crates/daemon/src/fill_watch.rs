//! The pool-fill watcher: reads every pool's fill when device-mapper raises an event (the
//! pool's low-water mark, set at `dm.fillwarn`, crossed; the pool out of space) and at least
//! every 30 s, so that a threshold crossing caused by writers (not by a request) is logged and
//! shown in the metrics too (`docs/operations.md`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use convoy_core::VolumeManager;

/// How often the watcher looks without an event.
pub const FILL_WATCH_INTERVAL: Duration = Duration::from_secs(30);
/// How long the watcher waits after an event before arming again.
const EVENT_SETTLE: Duration = Duration::from_millis(100);

/// How long one `poll` of the control device lasts: the longest a stopping daemon waits for
/// the watcher's blocking thread (the runtime's shutdown waits for it).
const POLL_SLICE: Duration = Duration::from_millis(200);

/// The running watcher; stopped when dropped.
#[derive(Debug)]
pub struct FillWatch {
    task: tokio::task::JoinHandle<()>,
    /// Set on drop: the blocking wait returns within [`POLL_SLICE`].
    stop: Arc<AtomicBool>,
}

impl FillWatch {
    /// Starts watching `manager`'s pools every `every`.
    pub fn start(manager: VolumeManager, every: Duration) -> FillWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            loop {
                // Armed first, so that an event raised while the fill is read is not missed.
                let armed = manager.arm_pool_events();
                manager.check_pool_fill().await;
                match armed {
                    Some(armed) => {
                        let stopped = Arc::clone(&stopped);
                        let woken = tokio::task::spawn_blocking(move || {
                            wait_unless_stopped(|slice| armed.wait(slice), every, &stopped)
                        })
                        .await;
                        if let Ok(true) = woken {
                            tracing::debug!("device-mapper event: reading the pools' fill");
                            // Events come in bursts (a pool reload, many thin devices).
                            tokio::time::sleep(EVENT_SETTLE).await;
                        }
                    }
                    None => tokio::time::sleep(every).await,
                }
            }
        });
        FillWatch { task, stop }
    }
}

/// Waits up to `every` for an event, in slices of [`POLL_SLICE`] so that a stop is seen at
/// once: a single long `poll` held the daemon's exit for up to `every` (30 s) after SIGTERM.
/// `true` when an event came.
fn wait_unless_stopped<E: std::fmt::Display>(
    wait: impl Fn(Duration) -> Result<bool, E>,
    every: Duration,
    stop: &AtomicBool,
) -> bool {
    let deadline = Instant::now() + every;
    while !stop.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match wait(left.min(POLL_SLICE)) {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => {
                tracing::debug!("waiting for device-mapper events: {e}");
                return false;
            }
        }
    }
    false
}

impl Drop for FillWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_ends_the_wait_within_a_slice() {
        let stop = AtomicBool::new(false);
        let calls = std::sync::atomic::AtomicU32::new(0);
        let woken = wait_unless_stopped(
            |slice: Duration| -> Result<bool, String> {
                assert!(slice <= POLL_SLICE);
                if calls.fetch_add(1, Ordering::Relaxed) == 2 {
                    stop.store(true, Ordering::Relaxed);
                }
                Ok(false)
            },
            Duration::from_secs(3600),
            &stop,
        );
        assert!(!woken);
        assert_eq!(
            calls.load(Ordering::Relaxed),
            3,
            "stopped after the third slice"
        );
    }

    #[test]
    fn an_event_or_an_error_ends_the_wait() {
        let stop = AtomicBool::new(false);
        assert!(wait_unless_stopped(
            |_| Ok::<_, String>(true),
            Duration::from_secs(60),
            &stop
        ));
        assert!(!wait_unless_stopped(
            |_| Err::<bool, _>("poll failed".to_string()),
            Duration::from_secs(60),
            &stop
        ));
        // A zero interval never waits.
        assert!(!wait_unless_stopped(
            |_| -> Result<bool, String> { panic!("waited") },
            Duration::ZERO,
            &stop
        ));
    }
}
