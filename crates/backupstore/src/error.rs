//! The one error type of this crate.

use convoy_blockstore::{BlockError, BlockId};

/// Everything a backup target operation can fail with. Each variant names the URL, backup,
/// block or offset involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A destination or backup URL does not parse.
    #[error("invalid backup URL {url:?}: {reason}; expected vfs:///path, s3://bucket@region/path or s3://bucket/path, with ?backup=<name>&volume=<name> for a backup")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A volume or backup name is not `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`.
    #[error("invalid {what} name {name:?}: expected ^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")]
    InvalidName {
        /// "volume" or "backup".
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// An option or argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// S3 configuration (region, credentials) could not be resolved.
    #[error("S3 configuration for {url}: {reason}")]
    S3Config {
        /// The destination URL.
        url: String,
        /// What is missing or wrong.
        reason: String,
    },
    /// The backup does not exist (no published manifest).
    #[error("backup {backup} of volume {volume} not found at {dest}")]
    BackupNotFound {
        /// Destination URL.
        dest: String,
        /// Volume name.
        volume: String,
        /// Backup name.
        backup: String,
    },
    /// A backup with this name already exists.
    #[error("backup {backup} of volume {volume} already exists at {dest}")]
    BackupExists {
        /// Destination URL.
        dest: String,
        /// Volume name.
        volume: String,
        /// Backup name.
        backup: String,
    },
    /// A manifest is malformed, truncated or fails its checksum.
    #[error("manifest of backup {backup} is corrupt: {reason}")]
    CorruptManifest {
        /// Backup name.
        backup: String,
        /// What is wrong.
        reason: String,
    },
    /// The store or backup was written in another store format version.
    #[error("{what} is in backup store format version {found}; this build of convoy reads and writes format version 2 only (format 1 stores, made by earlier builds, must be restored with such a build)")]
    UnsupportedFormat {
        /// What was found (the store URL, or a backup).
        what: String,
        /// The version found.
        found: u64,
    },
    /// A block the backup references is missing from the store.
    #[error("block {id} at volume offset {offset} of backup {backup} is missing from the store")]
    MissingBlock {
        /// Backup name.
        backup: String,
        /// Byte offset in the volume.
        offset: u64,
        /// The block id.
        id: BlockId,
    },
    /// A block the backup references is corrupt.
    #[error("block {id} at volume offset {offset} of backup {backup} is corrupt: {source}")]
    CorruptBlock {
        /// Backup name.
        backup: String,
        /// Byte offset in the volume.
        offset: u64,
        /// The block id.
        id: BlockId,
        /// What the codec found.
        #[source]
        source: Box<BlockError>,
    },
    /// A pack object's header or index is malformed.
    #[error("pack {pack} is corrupt: {source}")]
    CorruptPack {
        /// The pack's key.
        pack: String,
        /// What the codec found.
        #[source]
        source: Box<BlockError>,
    },
    /// The forwarding object of a compacted pack is malformed, fails its checksum or (in an
    /// encrypted store) fails to authenticate, or its forwarding chain is too long.
    #[error("forwarding object {object} (of compacted pack {pack}) is corrupt: {reason}")]
    CorruptForward {
        /// The forwarding object's key (`moved/..`).
        object: String,
        /// The compacted pack's id.
        pack: String,
        /// What is wrong.
        reason: String,
    },
    /// The block codec failed while encoding.
    #[error("encoding block at offset {offset}: {source}")]
    Encode {
        /// Byte offset in the volume.
        offset: u64,
        /// The codec error.
        #[source]
        source: Box<BlockError>,
    },
    /// Reading the source volume failed.
    #[error("reading the source at offset {offset} ({len} bytes): {source}")]
    SourceRead {
        /// Byte offset.
        offset: u64,
        /// Bytes requested.
        len: usize,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the restore target failed.
    #[error("writing the restore target at offset {offset}: {source}")]
    SinkWrite {
        /// Byte offset.
        offset: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The store refused or failed an operation.
    #[error("{op} {path} on {dest}: {source}")]
    Store {
        /// Destination URL.
        dest: String,
        /// The operation (get, put, list, delete, head).
        op: &'static str,
        /// The object key.
        path: String,
        /// The object_store error.
        #[source]
        source: Box<object_store::Error>,
    },
    /// A local filesystem operation of a `vfs://` target failed.
    #[error("{what} {path}: {source}")]
    LocalIo {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The store's lock could not be taken in time.
    #[error("{dest} is locked by {holder} ({kind} lock); gave up after {waited_secs} s")]
    Locked {
        /// Destination URL.
        dest: String,
        /// Description of the conflicting lock holder.
        holder: String,
        /// "shared" or "exclusive".
        kind: String,
        /// How long we waited.
        waited_secs: u64,
    },
    /// The parent backup given for an incremental backup does not fit.
    #[error("parent backup {parent} cannot be used: {reason}")]
    BadParent {
        /// Parent backup name.
        parent: String,
        /// Why.
        reason: String,
    },
    /// A key problem of an encrypted store: no key given, a wrong key, an unreadable secret,
    /// a damaged key slot, or a key given for a store that is not encrypted.
    #[error("encryption key of the backup store {dest}: {reason}")]
    Key {
        /// The destination URL.
        dest: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// The store changed under a backup in a way it cannot publish over (packs it reuses were
    /// deleted as it started); nothing was published, and running it again succeeds.
    #[error("the backup store {dest} changed under the backup: {reason}")]
    Conflict {
        /// The destination URL.
        dest: String,
        /// What changed.
        reason: String,
    },
    /// A background task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Result alias for this crate.
pub type Result<T, E = BackupError> = std::result::Result<T, E>;
