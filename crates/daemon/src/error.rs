//! The daemon's error type and how each error reaches a client.

use std::path::PathBuf;

/// What kind of failure an error is: convoy-core's kinds, the one classification of errors;
/// the daemon answers each with the HTTP status of [`http_status`].
pub use convoy_core::ErrorKind;

/// The HTTP status of a `/v1` answer failing with an error of `kind`.
pub fn http_status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::NotFound => 404,
        ErrorKind::AlreadyExists | ErrorKind::Busy => 409,
        ErrorKind::InvalidArgument => 400,
        ErrorKind::Unavailable => 503,
        ErrorKind::Internal => 500,
    }
}

/// Every error of the convoy daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The volume manager refused or failed an operation. Its error is kept whole: clients see
    /// its message (what failed, on what, what to do), its kind picks the status, and it is
    /// this error's `source()`, its own causes after it.
    #[error("{0}")]
    Volume(#[from] convoy_core::Error),
    /// The daemon refused or failed a request itself (a route it lacks, a task that panicked,
    /// an answer it cannot encode); `message` says what, on what.
    #[error("{message}")]
    Failed {
        /// What kind of failure.
        kind: ErrorKind,
        /// What failed, on what, what to do.
        message: String,
    },
    /// A request could not be understood.
    #[error("bad request to {route}: {message}")]
    BadRequest {
        /// The route called.
        route: String,
        /// What is wrong with it.
        message: String,
    },
    /// The socket could not be set up.
    #[error("cannot listen on {}: {source}", socket.display())]
    Socket {
        /// The socket path.
        socket: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A state or configuration file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What was being done ("cannot write config").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The saved configuration conflicts with the command line or cannot be parsed.
    #[error("configuration {}: {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// The metrics endpoint cannot listen on its address.
    #[error(
        "--metrics-listen {address}: cannot listen there: {error}; give a free local \
         ADDR:PORT, or leave the flag out"
    )]
    MetricsListen {
        /// The address of `--metrics-listen`.
        address: std::net::SocketAddr,
        /// Why (in the message, not a source: clients print sources again).
        error: std::io::Error,
    },
}

impl DaemonError {
    /// The kind of this error, for the HTTP status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DaemonError::Volume(e) => e.kind(),
            DaemonError::Failed { kind, .. } => *kind,
            DaemonError::BadRequest { .. } => ErrorKind::InvalidArgument,
            _ => ErrorKind::Internal,
        }
    }

    /// A [`DaemonError::Failed`] of `kind`.
    pub fn failed(kind: ErrorKind, message: impl Into<String>) -> Self {
        DaemonError::Failed {
            kind,
            message: message.into(),
        }
    }
}

/// Result with [`DaemonError`].
pub type Result<T, E = DaemonError> = std::result::Result<T, E>;
