//! libFuzzer target `backup_pack`: see `fuzz/bodies/backup_pack.rs`.
#![no_main]

#[path = "../bodies/backup_pack.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
