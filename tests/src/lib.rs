//! # convoy-e2e
//!
//! End-to-end tests that drive convoy the way a user does, and the real-kernel (VM tier) tests
//! that need no single crate of their own. Tests whose name starts with `dm_` need a dm-thin
//! kernel: they are `#[ignore]`d on the host and run inside the guest by `cargo xtask test`
//! (see `docs/testing.md`).
