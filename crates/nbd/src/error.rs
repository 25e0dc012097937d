//! The one error type of this crate.

/// What attaching, serving or detaching a device can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NbdError {
    /// The kernel's NBD driver is missing and could not be loaded.
    #[error("the kernel's nbd driver is not available: {reason}")]
    DriverUnavailable {
        /// What was tried and what it said.
        reason: String,
    },
    /// A netlink request to the NBD driver failed.
    #[error("netlink {operation} of the nbd driver failed: {source}")]
    Netlink {
        /// Which request (`connect`, `disconnect`, `reconfigure`, `status`, `resolve family`).
        operation: &'static str,
        /// The error (an errno from the kernel, or a socket error).
        #[source]
        source: std::io::Error,
    },
    /// The peer broke the transmission protocol (bad magic, a truncated request).
    #[error("NBD protocol error: {0}")]
    Protocol(String),
    /// A socket or device I/O error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An argument is out of range (a size of zero, a block size that is not a power of two).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl NbdError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NbdError {
        let what = what.into();
        move |source| NbdError::Io { what, source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = NbdError> = std::result::Result<T, E>;
