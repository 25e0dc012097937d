//! The block object codec: header + zstd (or raw) payload, verified on decode.

use crate::{BlockError, BlockId};

/// The 4 magic bytes every block object starts with.
pub const BLOCK_MAGIC: [u8; 4] = *b"CVB1";
/// Length of the block object header: magic (4), codec (1), reserved (3), length (4, LE).
pub const BLOCK_HEADER_LEN: usize = 12;
/// The largest block the codec accepts (16 MiB).
pub const MAX_BLOCK_LEN: usize = 16 << 20;

/// How a block's payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// The payload is the block itself (used when zstd would not make it smaller).
    Raw = 0,
    /// The payload is one zstd frame.
    Zstd = 1,
}

/// Encodes `data` as a block object, compressing with zstd at `level` when that shrinks it.
pub fn encode_block(data: &[u8], level: i32) -> Result<Vec<u8>, BlockError> {
    if data.len() > MAX_BLOCK_LEN {
        return Err(BlockError::TooLarge {
            len: data.len(),
            max: MAX_BLOCK_LEN,
        });
    }
    let compressed = zstd::bulk::compress(data, level).map_err(BlockError::Compress)?;
    let (codec, payload) = if compressed.len() < data.len() {
        (Codec::Zstd, &compressed[..])
    } else {
        (Codec::Raw, data)
    };
    let mut out = Vec::with_capacity(BLOCK_HEADER_LEN + payload.len());
    out.extend_from_slice(&BLOCK_MAGIC);
    out.push(codec as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Decodes a block object stored under `id`, checking that the result hashes to `id`.
pub fn decode_block(stored: &[u8], id: &BlockId) -> Result<Vec<u8>, BlockError> {
    decode_block_with(stored, id, BlockId::of)
}

/// Decodes a block object stored under `id`, checking that `hash` of the result is `id` (for
/// stores whose ids are keyed hashes, see [`BlockId::keyed`]).
pub fn decode_block_with(
    stored: &[u8],
    id: &BlockId,
    hash: impl Fn(&[u8]) -> BlockId,
) -> Result<Vec<u8>, BlockError> {
    let malformed = |reason: String| BlockError::Malformed { id: *id, reason };
    if stored.len() < BLOCK_HEADER_LEN {
        return Err(malformed(format!(
            "{} bytes is shorter than the {BLOCK_HEADER_LEN}-byte header",
            stored.len()
        )));
    }
    if stored[..4] != BLOCK_MAGIC {
        return Err(malformed("bad magic (not a convoy block object)".into()));
    }
    let len = u32::from_le_bytes(stored[8..12].try_into().expect("4 bytes")) as usize;
    if len > MAX_BLOCK_LEN {
        return Err(malformed(format!(
            "declared length {len} exceeds the limit"
        )));
    }
    let payload = &stored[BLOCK_HEADER_LEN..];
    let data = match stored[4] {
        0 => payload.to_vec(),
        1 => zstd::bulk::decompress(payload, len)
            .map_err(|e| malformed(format!("zstd payload does not decode: {e}")))?,
        other => return Err(malformed(format!("unknown codec {other}"))),
    };
    if data.len() != len {
        return Err(malformed(format!(
            "payload is {} bytes, header says {len}",
            data.len()
        )));
    }
    let actual = hash(&data);
    if actual != *id {
        return Err(BlockError::HashMismatch { id: *id, actual });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    #[test]
    fn compressible_data_is_zstd_and_round_trips() {
        let data = b"convoy ".repeat(10_000);
        let id = BlockId::of(&data);
        let enc = encode_block(&data, 3).unwrap();
        assert_eq!(enc[4], Codec::Zstd as u8);
        assert!(enc.len() < data.len() / 10);
        assert_eq!(decode_block(&enc, &id).unwrap(), data);
    }

    #[test]
    fn random_data_is_stored_raw() {
        let data = pseudo_random(65536, 42);
        let id = BlockId::of(&data);
        let enc = encode_block(&data, 3).unwrap();
        assert_eq!(enc[4], Codec::Raw as u8);
        assert_eq!(decode_block(&enc, &id).unwrap(), data);
    }

    #[test]
    fn corruption_is_detected() {
        let data = pseudo_random(4096, 7);
        let id = BlockId::of(&data);
        let mut enc = encode_block(&data, 3).unwrap();
        let last = enc.len() - 1;
        enc[last] ^= 1;
        assert!(matches!(
            decode_block(&enc, &id),
            Err(BlockError::HashMismatch { .. })
        ));
        let text = b"abc".repeat(1000);
        let mut enc = encode_block(&text, 3).unwrap();
        let n = enc.len();
        enc[n - 2] ^= 0xff;
        let err = decode_block(&enc, &BlockId::of(&text)).unwrap_err();
        assert!(
            err.to_string().contains(&BlockId::of(&text).to_hex()),
            "{err}"
        );
    }

    #[test]
    fn malformed_objects_are_rejected() {
        let id = BlockId::of(b"x");
        for bad in [
            &b""[..],
            b"CVB1",
            b"XXXX\0\0\0\0\x01\0\0\0x",
            b"CVB1\x07\0\0\0\x01\0\0\0x",
        ] {
            assert!(matches!(
                decode_block(bad, &id),
                Err(BlockError::Malformed { .. })
            ));
        }
        // Wrong declared length.
        assert!(decode_block(b"CVB1\0\0\0\0\x02\0\0\0x", &id).is_err());
        // A different id than the content.
        let enc = encode_block(b"y", 3).unwrap();
        assert!(matches!(
            decode_block(&enc, &id),
            Err(BlockError::HashMismatch { .. })
        ));
    }

    #[test]
    fn too_large_is_an_error() {
        let data = vec![1u8; MAX_BLOCK_LEN + 1];
        assert!(matches!(
            encode_block(&data, 1),
            Err(BlockError::TooLarge { .. })
        ));
    }
}
