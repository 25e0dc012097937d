//! Feedback for long operations (backup, restore). The daemon's API answers when the operation
//! is done (it streams no progress), so the CLI shows what it is waiting for and for how long:
//! a spinner with the elapsed time when standard error is a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Shown while a long call runs; call [`Waiting::done`] or drop it.
pub struct Waiting {
    bar: Option<ProgressBar>,
    what: String,
    started: Instant,
}

impl Waiting {
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
        }
    }

    /// Reports how it ended.
    pub fn done(self, ok: bool) {
        let outcome = if ok { "done" } else { "failed" };
        let line = format!(
            "{}: {outcome} after {:.1} s",
            self.what,
            self.started.elapsed().as_secs_f64()
        );
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{line}");
    }
}
