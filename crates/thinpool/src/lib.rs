//! # convoy-thinpool
//!
//! The device-mapper layer of convoy. It will own everything the volume manager needs from the
//! kernel's dm-thin target, built on the `devicemapper` crate and `nix`:
//!
//! * creating, opening (re-activating without wiping) and tearing down a thin pool from a data
//!   and a metadata device, with a validated block size;
//! * typed pool status (data/metadata usage, transaction id, held metadata root, modes);
//! * thin devices: `create_thin`, `create_snap` (suspending an active origin), activate,
//!   deactivate, `delete`, with collision-free 24-bit device ids;
//! * the metadata-snapshot guard (`reserve_metadata_snap` / `release_metadata_snap`) that the
//!   metadata differ reads under;
//! * unit newtypes (`Sectors`, `Bytes`, pool blocks) and errors by meaning.
//!
//! Every code path here is tested against a real kernel in the VM tier (`cargo xtask test`).
