//! The error type of this crate.

use std::path::PathBuf;

/// What can go wrong talking to the daemon or reading its answers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The daemon's socket could not be reached.
    #[error("cannot connect to the convoy daemon at {}: {source} (is `convoy daemon` running? use --socket to point elsewhere)", socket.display())]
    Connect {
        /// The socket path tried.
        socket: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The HTTP exchange itself failed (connection dropped, malformed response).
    #[error("HTTP exchange with the convoy daemon failed on {route}: {message}")]
    Http {
        /// The route requested.
        route: String,
        /// What failed.
        message: String,
    },
    /// The daemon answered with an error (`{"Error": "..."}`).
    #[error("{message}")]
    Daemon {
        /// HTTP status code of the answer.
        status: u16,
        /// The daemon's error message, verbatim.
        message: String,
    },
    /// The daemon's answer was not the JSON expected.
    #[error("unexpected answer from the convoy daemon on {route}: {message}")]
    Decode {
        /// The route requested.
        route: String,
        /// What did not parse.
        message: String,
    },
    /// A size string could not be parsed.
    #[error("invalid size {input:?}: {why} (expected a number of bytes with an optional k/m/g/t suffix, e.g. 10G)")]
    InvalidSize {
        /// The text given.
        input: String,
        /// Why it was refused.
        why: &'static str,
    },
}
