//! The error type of this crate.

use std::path::{Path, PathBuf};

/// What a user can do about a failed connection to the daemon's socket.
fn connect_hint(socket: &Path, error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    use std::os::unix::fs::MetadataExt;
    match error.kind() {
        ErrorKind::NotFound => "no daemon has created this socket: start one with `convoy daemon \
            --drivers ...` (see docs/setup.md, or `systemctl start convoy` with the unit in \
            deploy/), or point --socket at the socket of a running daemon"
            .to_string(),
        ErrorKind::ConnectionRefused => "the socket exists but no daemon listens on it (the \
            daemon that created it has stopped): start `convoy daemon` again"
            .to_string(),
        ErrorKind::PermissionDenied => {
            let owner = std::fs::metadata(socket)
                .map(|m| format!(" (owner uid {}, mode {:04o})", m.uid(), m.mode() & 0o7777))
                .unwrap_or_default();
            format!(
                "this user may not use the daemon's socket{owner}: the daemon allows only \
                 its own user, so run convoy as that user (usually root, e.g. with sudo)"
            )
        }
        _ => "is `convoy daemon` running? use --socket to point elsewhere".to_string(),
    }
}

/// What can go wrong talking to the daemon or reading its answers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The daemon's socket could not be reached.
    #[error("cannot connect to the convoy daemon at {}: {source}; {}", socket.display(), connect_hint(socket, source))]
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
