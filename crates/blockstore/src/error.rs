//! The one error type of this crate.

use crate::BlockId;

/// What can go wrong encoding, decoding or parsing blocks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// A block id string is not 64 lowercase-or-uppercase hex characters.
    #[error("invalid block id {text:?}: expected 64 hex characters (a BLAKE3 digest)")]
    InvalidId {
        /// The text that failed to parse.
        text: String,
    },
    /// The block is larger than the codec allows.
    #[error("block of {len} bytes is larger than the {max}-byte limit")]
    TooLarge {
        /// Length of the offending block.
        len: usize,
        /// The limit ([`crate::MAX_BLOCK_LEN`]).
        max: usize,
    },
    /// The stored object is not a block object (wrong magic, short header, unknown codec).
    #[error("block {id} is malformed: {reason}")]
    Malformed {
        /// The id the object was stored under.
        id: BlockId,
        /// What is wrong with it.
        reason: String,
    },
    /// The object decoded, but its content does not hash to the id it was stored under.
    #[error("block {id} is corrupt: its content hashes to {actual}")]
    HashMismatch {
        /// The id the object was stored under.
        id: BlockId,
        /// The BLAKE3 of what was actually decoded.
        actual: BlockId,
    },
    /// A pack object's header, index or trailer is malformed.
    #[error("pack is malformed: {reason}")]
    MalformedPack {
        /// What is wrong with it.
        reason: String,
    },
    /// zstd failed to compress.
    #[error("zstd compression failed: {0}")]
    Compress(#[source] std::io::Error),
}
