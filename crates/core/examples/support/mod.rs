//! Helpers the VM benchmarks of convoy-core share (`#[path = "support/mod.rs"] mod support;`).

#![allow(dead_code)] // each benchmark uses some of them

use std::path::Path;
use std::process::Command;

/// Runs `cmd`, panics unless it succeeds, answers its stdout, trimmed.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A loop device over a new sparse file of `size` bytes.
pub fn loop_device(file: &Path, size: u64) -> String {
    std::fs::File::create(file).unwrap().set_len(size).unwrap();
    run("losetup", &["-f", "--show", file.to_str().unwrap()])
}

/// [`loop_device`] with direct I/O to the file: the pool then sees a disk rather than a
/// second page cache (on a buffered loop device every flush of a thin device — a journal
/// commit, an `fsync` — writes out every dirty page of the whole backing file).
pub fn direct_loop_device(file: &Path, size: u64) -> String {
    std::fs::File::create(file).unwrap().set_len(size).unwrap();
    run(
        "losetup",
        &["-f", "--show", "--direct-io=on", file.to_str().unwrap()],
    )
}

/// Writes dirty pages back and drops the page cache.
pub fn drop_caches() {
    run("sync", &[]);
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches");
}

/// Pseudo-random bytes (xorshift), different for each seed.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The body of data file `i` of 64 MiB: a third random, a third text-like, a third zeros.
pub fn data_file(i: u64) -> Vec<u8> {
    const LEN: usize = 64 << 20;
    match i % 3 {
        0 => noise(i + 100, LEN),
        1 => format!("record {i}: the quick brown fox jumps over the lazy dog\n")
            .repeat(LEN / 60)
            .into_bytes(),
        _ => vec![0u8; LEN],
    }
}
