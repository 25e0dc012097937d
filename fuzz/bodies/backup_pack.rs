//! libFuzzer target: the pack index decoder (trailer, checksummed index, entry bounds), fed
//! the fuzzer's bytes as the tail of a pack, exactly as the store index reads a pack. It must
//! return errors, never panic or allocate without bound.
//!
//! Shared by the libFuzzer target (`fuzz_targets/backup_pack.rs`) and the workspace's seed replay
//! test (`tests/tests/fuzz_seeds.rs`), which runs every committed seed through it.

use convoy_backupstore::fuzzing::decode_pack_tail;

/// One fuzz input.
pub fn run(data: &[u8]) {
    let _ = decode_pack_tail(data);
}
