//! The store's integration tests, in one binary: one link, and one copy of the generic code
//! they all use instead of one per file (as nine binaries they took 253 s of compile time in a
//! clean build on 2 cores, as one 107 s). Each file is a module; run one with its name as the
//! filter, e.g. `cargo test -p convoy-backupstore --test store conformance_requests::`.
//!
//! `s3_credentials.rs` stays a binary of its own: it changes the process's environment
//! (`HOME`, `AWS_*`), which would reach the S3 tests running beside it here.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod compaction;
mod compaction_crash;
mod conformance;
mod conformance_concurrency;
mod conformance_requests;
mod encryption;
mod journal;
mod legacy_store;
mod random_read;
mod s3_errors;
