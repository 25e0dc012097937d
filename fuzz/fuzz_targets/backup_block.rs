//! libFuzzer target `backup_block`: see `fuzz/bodies/backup_block.rs`.
#![no_main]

#[path = "../bodies/backup_block.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
