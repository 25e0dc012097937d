//! # convoy-blockstore
//!
//! Pure block handling for convoy backups: no I/O, no async, bytes in and bytes out.
//!
//! * [`BlockId`] — the content id of a block: BLAKE3 of its **uncompressed** bytes, shown as 64
//!   lowercase hex characters. Equal content gives equal ids, which is what makes backups
//!   deduplicate across every volume in a store.
//! * [`is_zero`] — all-zero detection; zero blocks are never stored (a restore leaves a hole).
//! * [`encode_block`] / [`decode_block`] — the block codec: a 12-byte header (magic `CVB1`,
//!   codec, uncompressed length) followed by zstd-compressed bytes, or the raw bytes when
//!   compression would not shrink them. Decoding always re-hashes the result and compares it to
//!   the expected id, so a corrupt or substituted object can never be returned as good data.
//!
//! * [`PackBuilder`] / [`decode_pack_index`] — pack objects of store format 2: block objects
//!   concatenated behind a header, with the pack's own index and a checksummed trailer at the
//!   end.
//!
//! The byte layout is specified in `docs/backup-format.md` (section "Block objects").
//!
//! ```
//! use convoy_blockstore::{decode_block, encode_block, BlockId};
//! let data = b"hello hello hello hello hello hello".repeat(100);
//! let id = BlockId::of(&data);
//! let stored = encode_block(&data, 3).unwrap();
//! assert_eq!(decode_block(&stored, &id).unwrap(), data);
//! ```

mod codec;
mod error;
mod id;
mod pack;

pub use codec::{
    decode_block, decode_block_with, encode_block, Codec, BLOCK_HEADER_LEN, BLOCK_MAGIC,
    MAX_BLOCK_LEN,
};
pub use error::BlockError;
pub use id::BlockId;
pub use pack::{
    check_pack_header, decode_pack_index, pack_tail_len, PackBuilder, PackEntry, CIPHER_NONE,
    MAX_PACK_LEN, PACK_ENTRY_LEN, PACK_HEADER_LEN, PACK_MAGIC, PACK_TRAILER_LEN,
    PACK_TRAILER_MAGIC,
};

/// True when every byte of `data` is zero (an empty slice counts as zero).
///
/// Compares machine words rather than bytes; on a 1 MiB block this runs at memory speed.
pub fn is_zero(data: &[u8]) -> bool {
    let words = data.chunks_exact(16);
    let rest = words.remainder();
    rest.iter().all(|b| *b == 0)
        && words
            .into_iter()
            .all(|w| u128::from_ne_bytes(w.try_into().expect("16-byte chunk")) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0u8; 4097]));
        for pos in [0usize, 15, 16, 4000, 4096] {
            let mut v = vec![0u8; 4097];
            v[pos] = 1;
            assert!(!is_zero(&v), "non-zero byte at {pos} not seen");
        }
    }
}
