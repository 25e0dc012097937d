//! The pool-fill watcher: reads every pool's fill when device-mapper raises an event (the
//! pool's low-water mark, set at `dm.fillwarn`, crossed; the pool out of space) and at least
//! every 30 s, so that a threshold crossing caused by writers (not by a request) is logged and
//! shown in the metrics too (`docs/operations.md`).

use std::time::Duration;

use convoy_core::VolumeManager;

/// How often the watcher looks without an event.
pub const FILL_WATCH_INTERVAL: Duration = Duration::from_secs(30);
/// How long the watcher waits after an event before arming again.
const EVENT_SETTLE: Duration = Duration::from_millis(100);

/// The running watcher; stopped when dropped.
#[derive(Debug)]
pub struct FillWatch(tokio::task::JoinHandle<()>);

impl FillWatch {
    /// Starts watching `manager`'s pools every `every`.
    pub fn start(manager: VolumeManager, every: Duration) -> FillWatch {
        FillWatch(tokio::spawn(async move {
            loop {
                // Armed first, so that an event raised while the fill is read is not missed.
                let armed = manager.arm_pool_events();
                manager.check_pool_fill().await;
                match armed {
                    Some(armed) => {
                        let woken = tokio::task::spawn_blocking(move || armed.wait(every)).await;
                        if let Ok(Ok(true)) = woken {
                            tracing::debug!("device-mapper event: reading the pools' fill");
                            // Events come in bursts (a pool reload, many thin devices).
                            tokio::time::sleep(EVENT_SETTLE).await;
                        }
                    }
                    None => tokio::time::sleep(every).await,
                }
            }
        }))
    }
}

impl Drop for FillWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}
