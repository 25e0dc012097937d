//! libFuzzer target `api_json`: see `fuzz/bodies/api_json.rs`.
#![no_main]

#[path = "../bodies/api_json.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
