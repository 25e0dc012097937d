//! Feedback for long operations (backup, restore). The CLI asks the daemon for a progress
//! stream: when standard error is a terminal it shows a progress bar (bytes done of the total,
//! elapsed time, rate); otherwise it writes plain lines (start, total, end). Standard output
//! carries only the result.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use convoy_api::wire::ProgressUpdate;
use indicatif::{ProgressBar, ProgressStyle};

/// Shown while a long call runs; feed it [`Watcher::update`], end with [`Watcher::done`].
pub struct Watcher {
    bar: Option<ProgressBar>,
    what: String,
    started: Instant,
    total: u64,
    done: u64,
}

impl Watcher {
    /// Starts showing that `what` is running.
    pub fn start(what: String) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(what.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            Some(bar)
        } else {
            eprintln!("{what} ...");
            None
        };
        Self {
            bar,
            what,
            started: Instant::now(),
            total: 0,
            done: 0,
        }
    }

    /// A progress update from the daemon.
    pub fn update(&mut self, update: ProgressUpdate) {
        if update.total != self.total && update.total > 0 {
            self.total = update.total;
            match &self.bar {
                Some(bar) => {
                    bar.set_length(update.total);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{msg}\n{bar:40} {bytes}/{total_bytes} [{elapsed_precise}] {binary_bytes_per_sec}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                }
                None => eprintln!("{}: {} bytes to process", self.what, update.total),
            }
        }
        self.done = update.done;
        if let Some(bar) = &self.bar {
            bar.set_position(update.done);
        }
    }

    /// Reports how it ended.
    pub fn done(self, ok: bool) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let outcome = if ok { "done" } else { "failed" };
        eprintln!(
            "{}: {outcome} after {:.1} s ({} of {} bytes processed)",
            self.what,
            self.started.elapsed().as_secs_f64(),
            self.done,
            self.total
        );
    }
}
