//! # convoy-thinmeta
//!
//! A pure, read-only reader of dm-thin pool metadata (bytes in, mappings out). It will own:
//!
//! * validated access to the superblock (live or the held metadata-snapshot root), the device
//!   details tree and each device's mapping tree, over any `Read + Seek` source;
//! * the delta between two thin devices as a stream of `Same` / `Different` / `LeftOnly` /
//!   `RightOnly` runs, walking both trees together and skipping subtrees they share, so the cost
//!   follows what changed rather than the volume size;
//! * a builder that writes kernel-format metadata for test fixtures, including shared subtrees.
