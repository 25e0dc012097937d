//! The daemon's task structure: every request's work runs in a task of its own, so a client
//! that hangs up (an HTTP client giving up, dockerd timing out) drops only the wait for the
//! answer, never the work half-way. Progress streams (`progress::stream`) do the same. The
//! volume manager's own long operations are detached as well (`convoy_core`, `guards.rs`).

use std::future::Future;

use crate::{DaemonError, ErrorKind, Result};

/// Runs `work` in its own tokio task and waits for its result; a panic in it is an internal
/// error naming `route`.
pub(crate) async fn detached<R, Fut>(route: &str, work: Fut) -> Result<R>
where
    R: Send + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    tokio::spawn(work).await.unwrap_or_else(|e| {
        Err(DaemonError::failed(
            ErrorKind::Internal,
            format!("{route}: the request's task failed: {e}"),
        ))
    })
}
