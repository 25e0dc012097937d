//! Content ids.

use std::fmt;
use std::str::FromStr;

use crate::BlockError;

/// The content id of a block: BLAKE3 of its uncompressed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub [u8; 32]);

impl BlockId {
    /// Hashes `data` (multi-threaded BLAKE3 is not used: callers already hash blocks in parallel).
    pub fn of(data: &[u8]) -> Self {
        BlockId(*blake3::hash(data).as_bytes())
    }

    /// Keyed BLAKE3 of `data` under `key`: the id of a block in an encrypted store, which
    /// reveals nothing about the content to whoever lacks the key.
    pub fn keyed(key: &[u8; 32], data: &[u8]) -> Self {
        BlockId(*blake3::keyed_hash(key, data).as_bytes())
    }

    /// The id as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockId({self})")
    }
}

impl FromStr for BlockId {
    type Err = BlockError;

    fn from_str(text: &str) -> Result<Self, BlockError> {
        let invalid = || BlockError::InvalidId {
            text: text.to_string(),
        };
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(invalid());
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).ok_or_else(invalid)?;
            let lo = (pair[1] as char).to_digit(16).ok_or_else(invalid)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Ok(BlockId(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_bad_text() {
        let id = BlockId::of(b"abc");
        let hex = id.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<BlockId>().unwrap(), id);
        assert_eq!(hex.to_uppercase().parse::<BlockId>().unwrap(), id);
        for bad in ["", "zz", &hex[..63], &format!("{}g", &hex[..63])] {
            let err = bad.parse::<BlockId>().unwrap_err();
            assert!(err.to_string().contains("64 hex"), "{err}");
        }
    }

    #[test]
    fn known_blake3_vector() {
        // BLAKE3 of the empty input (from the BLAKE3 specification's test vectors).
        assert_eq!(
            BlockId::of(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }
}
