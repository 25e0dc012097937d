//! Crash injection for tests: when the environment variable `CONVOY_CORE_CRASH_AT` names a
//! point, the process aborts there (no destructors, no clean-up — as a kill would). The
//! VM-tier tests run an operation in a child process with it set, then check that start-up
//! reconciliation settles what was left. Unset (always, outside tests), it costs one lookup.

/// Aborts the process if `CONVOY_CORE_CRASH_AT` equals `point`.
pub(crate) fn hit(point: &str) {
    if std::env::var_os("CONVOY_CORE_CRASH_AT").is_some_and(|v| v == point) {
        eprintln!("convoy-core: crash injected at {point}");
        std::process::abort();
    }
}
