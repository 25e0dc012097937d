//! libFuzzer target `backup_manifest`: see `fuzz/bodies/backup_manifest.rs`.
#![no_main]

#[path = "../bodies/backup_manifest.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
