//! libFuzzer target: the backup manifest decoder (preamble, header JSON, entries, trailer), fed
//! the fuzzer's bytes in pieces of a fuzzer-chosen size, exactly as a restore streams a manifest
//! object. It must return errors, never panic or grow without bound; a manifest it accepts must
//! decode the same whatever the piece size.
#![no_main]

use convoy_backupstore::fuzzing::decode_manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, bytes)) = data.split_first() else {
        return;
    };
    let first = decode_manifest(bytes, usize::from(piece));
    if let Ok(count) = first {
        // Accepted: the trailer's checksum covered every byte, so splitting cannot matter.
        assert_eq!(decode_manifest(bytes, 0).ok(), Some(count));
        assert_eq!(decode_manifest(bytes, 1).ok(), Some(count));
    }
});
