//! libFuzzer target `thinmeta_reader`: see `fuzz/bodies/thinmeta_reader.rs`.
#![no_main]

#[path = "../bodies/thinmeta_reader.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
