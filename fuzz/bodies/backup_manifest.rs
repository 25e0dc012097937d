//! libFuzzer target: the backup manifest decoder (preamble, header JSON, entries, trailer), fed
//! the fuzzer's bytes in pieces of a fuzzer-chosen size, exactly as a restore streams a manifest
//! object. It must return errors, never panic or grow without bound; a manifest it accepts must
//! decode the same whatever the piece size.
//!
//! Shared by the libFuzzer target (`fuzz_targets/backup_manifest.rs`) and the workspace's seed replay
//! test (`tests/tests/fuzz_seeds.rs`), which runs every committed seed through it.

use convoy_backupstore::fuzzing::decode_manifest;

/// One fuzz input.
pub fn run(data: &[u8]) {
    let Some((&piece, bytes)) = data.split_first() else {
        return;
    };
    let first = decode_manifest(bytes, usize::from(piece));
    if let Ok(count) = first {
        // Accepted: the trailer's checksum covered every byte, so splitting cannot matter.
        assert_eq!(decode_manifest(bytes, 0).ok(), Some(count));
        assert_eq!(decode_manifest(bytes, 1).ok(), Some(count));
    }
}
