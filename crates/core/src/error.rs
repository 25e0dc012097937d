//! The crate's one error type. Variants by meaning, each naming the object involved;
//! [`Error::kind`] lets the daemon pick an HTTP status.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Coarse classes of [`Error`], for callers that map errors to status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The named object does not exist.
    NotFound,
    /// The name is taken.
    AlreadyExists,
    /// The request itself is wrong (name, size, URL, option).
    InvalidArgument,
    /// The object is in use (mounted, being backed up, has a long operation running).
    Busy,
    /// A backend (store, driver) is not configured or not reachable.
    Unavailable,
    /// Something failed inside (I/O, device-mapper, a tool).
    Internal,
}

/// Everything that can go wrong in `convoy-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named object does not exist.
    #[error("{what} {name} not found")]
    NotFound {
        /// "volume", "snapshot", "driver", "backup", ...
        what: &'static str,
        /// Its name.
        name: String,
    },

    /// A volume or snapshot of that name exists (they share one namespace).
    #[error("{name} already exists (as a {what}); volume and snapshot names share one namespace")]
    AlreadyExists {
        /// "volume" or "snapshot".
        what: &'static str,
        /// The name.
        name: String,
    },

    /// A name that breaks the naming rule.
    #[error(
        "invalid name {name:?}: {reason} (names match ^[a-zA-Z0-9][a-zA-Z0-9_.-]+$, at most {max} \
         characters)",
        max = convoy_names::MAX_NAME_LEN
    )]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A size that cannot be parsed or used.
    #[error("invalid size {value:?}: {reason}")]
    InvalidSize {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A bad option or argument other than a name or size.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// What was given ("driver option dm.fs", "backup URL", ...).
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Restore with a `--size` different from the backup's.
    #[error(
        "backup {backup_url} is of a {backup} byte volume but size {requested} bytes was \
         requested; omit the size to restore at the backup's size (or add --grow for a larger \
         volume)"
    )]
    SizeMismatch {
        /// The backup.
        backup_url: String,
        /// The backup's volume size, bytes.
        backup: u64,
        /// The requested size, bytes.
        requested: u64,
    },

    /// The object is in use.
    #[error("{name} is busy: {why}")]
    Busy {
        /// The volume or snapshot.
        name: String,
        /// Why, and what to do.
        why: String,
    },

    /// The operation is not available with this driver or configuration.
    #[error("{what} is not supported: {why}")]
    Unsupported {
        /// The operation.
        what: String,
        /// Why.
        why: String,
    },

    /// A device-mapper operation failed.
    #[error("devicemapper driver: {context}: {source}")]
    Thinpool {
        /// What was being done, on what.
        context: String,
        /// The underlying error.
        #[source]
        source: convoy_thinpool::Error,
    },

    /// Reading pool metadata failed.
    #[error("reading thin-pool metadata: {context}: {source}")]
    Metadata {
        /// What was being read.
        context: String,
        /// The underlying error.
        #[source]
        source: convoy_thinmeta::ThinMetaError,
    },

    /// A backup store operation failed.
    #[error("backup store: {context}: {message}")]
    Store {
        /// What was being done, on which URL.
        context: String,
        /// The store's message.
        message: String,
        /// Its class.
        kind: ErrorKind,
        /// The store's error with its causes ([`StoreCause`]: their messages, credentials in
        /// URLs redacted), this error's `source()`.
        #[source]
        source: Option<StoreCause>,
    },

    /// An external tool (mkfs, mount, fsfreeze) failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },

    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A record file is unreadable.
    #[error("record {} is corrupt: {reason}; move it aside and restart to reconcile", path.display())]
    CorruptRecord {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// A driver did not start (its pool failed, a device is missing): the other drivers
    /// serve their volumes; this one's are unavailable until a restart finds it working.
    #[error(
        "driver {driver} is unavailable: it did not start ({reason}); its volumes are \
         unavailable until convoy is restarted with the driver working"
    )]
    DriverDegraded {
        /// The driver.
        driver: String,
        /// Why it did not start.
        reason: String,
    },

    /// The pool is filled at or above the refusal threshold: new volumes, snapshots, clones
    /// and restores are refused (running writers are not stopped).
    #[error("{0}")]
    PoolFill(Box<crate::guard_fill::FillRefusal>),

    /// An internal task failed (a panic in a blocking worker).
    #[error("internal error: {0}")]
    Internal(String),
}

/// A backup store's error as [`Error::Store`] keeps it: its message, and as its `source()` its
/// own causes, each the same, so the chain crosses from convoy-backupstore (and object_store)
/// into core and on to the daemon. Every message has the credentials of URLs in it redacted
/// (`s3://<redacted>@bucket`), so the chain may be printed or logged as it is.
#[derive(Debug)]
pub struct StoreCause {
    message: String,
    source: Option<Box<StoreCause>>,
}

impl StoreCause {
    /// `error` and its causes, redacted.
    pub(crate) fn of(error: &(dyn std::error::Error + 'static)) -> StoreCause {
        StoreCause {
            message: crate::backups::redact_urls(&error.to_string()),
            source: error.source().map(|s| Box::new(StoreCause::of(s))),
        }
    }
}

impl std::fmt::Display for StoreCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// A name that breaks `convoy-names`' rule, as core's error (same name and reason).
impl From<convoy_names::NameError> for Error {
    fn from(e: convoy_names::NameError) -> Self {
        Error::InvalidName {
            name: e.name,
            reason: e.reason,
        }
    }
}

/// A size `convoy-names` cannot read, as core's error (same text and reason).
impl From<convoy_names::SizeError> for Error {
    fn from(e: convoy_names::SizeError) -> Self {
        Error::InvalidSize {
            value: e.value,
            reason: e.reason.to_owned(),
        }
    }
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::InvalidName { .. }
            | Error::InvalidSize { .. }
            | Error::InvalidArgument { .. }
            | Error::SizeMismatch { .. }
            | Error::Unsupported { .. } => ErrorKind::InvalidArgument,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::Store { kind, .. } => *kind,
            Error::DriverDegraded { .. } | Error::PoolFill(_) => ErrorKind::Unavailable,
            Error::Thinpool { source, .. } => match source {
                convoy_thinpool::Error::Busy { .. } => ErrorKind::Busy,
                convoy_thinpool::Error::NotFound { .. } => ErrorKind::NotFound,
                convoy_thinpool::Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
                convoy_thinpool::Error::PoolFull { .. }
                | convoy_thinpool::Error::MetadataFull { .. } => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
            Error::Metadata { .. }
            | Error::Command { .. }
            | Error::Io { .. }
            | Error::CorruptRecord { .. }
            | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn dm(context: impl Into<String>) -> impl FnOnce(convoy_thinpool::Error) -> Error {
        let context = context.into();
        move |source| Error::Thinpool { context, source }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn not_found(what: &'static str, name: &str) -> Self {
        Error::NotFound {
            what,
            name: name.to_owned(),
        }
    }

    pub(crate) fn busy(name: &str, why: impl Into<String>) -> Self {
        Error::Busy {
            name: name.to_owned(),
            why: why.into(),
        }
    }
}
