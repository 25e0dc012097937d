//! libFuzzer target `backup_url`: see `fuzz/bodies/backup_url.rs`.
#![no_main]

#[path = "../bodies/backup_url.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
