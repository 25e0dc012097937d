//! The pool-fill watcher: reads every pool's fill periodically so that a threshold crossing
//! caused by writers (not by a request) is logged too (`docs/operations.md`).

use std::time::Duration;

use convoy_core::VolumeManager;

/// How often the watcher looks.
pub const FILL_WATCH_INTERVAL: Duration = Duration::from_secs(30);

/// The running watcher; stopped when dropped.
#[derive(Debug)]
pub struct FillWatch(tokio::task::JoinHandle<()>);

impl FillWatch {
    /// Starts watching `manager`'s pools every `every`.
    pub fn start(manager: VolumeManager, every: Duration) -> FillWatch {
        FillWatch(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                manager.check_pool_fill().await;
            }
        }))
    }
}

impl Drop for FillWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}
