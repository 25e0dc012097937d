//! libFuzzer target: the backup block object decoder (header, raw or zstd payload, length and
//! BLAKE3 checks). Three ways in: the fuzzer's bytes as a stored object under the id in its first
//! 32 bytes, under the id of what the object claims to hold (so the hash check passes when the
//! payload is consistent), and an encode/decode round trip of the bytes as block data.
//!
//! Shared by the libFuzzer target (`fuzz_targets/backup_block.rs`) and the workspace's seed replay
//! test (`tests/tests/fuzz_seeds.rs`), which runs every committed seed through it.

use convoy_blockstore::{decode_block, encode_block, BlockId, MAX_BLOCK_LEN};

/// One fuzz input.
pub fn run(data: &[u8]) {
    if data.len() >= 32 {
        let id = BlockId(data[..32].try_into().unwrap());
        let _ = decode_block(&data[32..], &id);
    }
    // Under the id of the raw payload (codec 0) the hash check passes: the decoder must agree.
    if data.len() >= 12 && data[4] == 0 {
        let id = BlockId::of(&data[12..]);
        if let Ok(out) = decode_block(data, &id) {
            assert_eq!(&out[..], &data[12..]);
        }
    }
    // Round trip of the bytes as block data, at a fast and a normal zstd level.
    if data.len() <= MAX_BLOCK_LEN {
        let level = i32::from(data.first().copied().unwrap_or(0) % 4);
        let stored = encode_block(data, level).expect("encoding a block within the limit");
        let back = decode_block(&stored, &BlockId::of(data)).expect("decoding what was encoded");
        assert_eq!(back, data);
        // Any single flipped byte in the stored object is detected or harmless.
        if !stored.is_empty() {
            let mut bad = stored.clone();
            let at = usize::from(data.last().copied().unwrap_or(0)) % bad.len();
            bad[at] ^= 0x5a;
            if let Ok(out) = decode_block(&bad, &BlockId::of(data)) {
                assert_eq!(out, data, "a tampered block decoded to different data");
            }
        }
    }
}
