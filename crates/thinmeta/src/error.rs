//! The crate's single error type.

/// Everything that can go wrong while reading (or building) thin-pool metadata.
///
/// Corruption errors name the metadata block and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThinMetaError {
    /// Reading a block from the metadata source failed.
    #[error("I/O error reading metadata block {block}: {source}")]
    Io {
        /// Block being read.
        block: u64,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A block number points past the end of the metadata (device or file).
    #[error(
        "metadata block {block} is out of range: the metadata has {nr_blocks} blocks{context}"
    )]
    OutOfRange {
        /// Block asked for.
        block: u64,
        /// Number of blocks the metadata has.
        nr_blocks: u64,
        /// Who pointed at it (may be empty).
        context: String,
    },
    /// A block exists but its content is invalid.
    #[error("corrupt metadata block {block} ({what}): {problem}")]
    Corrupt {
        /// Block that is corrupt.
        block: u64,
        /// What the block was expected to be ("superblock", "mapping tree node", ...).
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The thin device id is not in the mapping tree.
    #[error("thin device {dev_id} not found in the mapping tree")]
    DeviceNotFound {
        /// Device asked for.
        dev_id: u64,
    },
    /// A metadata snapshot was asked for but the superblock holds none.
    #[error("no metadata snapshot is held (run the pool message reserve_metadata_snap first)")]
    NoMetadataSnapshot,
    /// The fixture builder was given an impossible description.
    #[error("invalid metadata description: {0}")]
    InvalidDescription(String),
    /// Writing built metadata failed.
    #[error("I/O error writing metadata: {0}")]
    Write(#[source] std::io::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ThinMetaError>;

/// Shorthand for a [`ThinMetaError::Corrupt`].
pub(crate) fn corrupt(block: u64, what: &'static str, problem: impl Into<String>) -> ThinMetaError {
    ThinMetaError::Corrupt {
        block,
        what,
        problem: problem.into(),
    }
}
