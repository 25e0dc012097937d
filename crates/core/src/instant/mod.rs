//! Instant restore (issue 19, part 2; `docs/instant.md`): a volume usable while its backup is
//! still being copied into it. What exists so far: the persistent fill map. The overlay
//! device that serves reads and writes during the fill, and the fill itself, are not built
//! yet; the hand-over of the device from the overlay to the thin device is in
//! `convoy-thinpool` (`handover.rs`).

// Not called outside its tests until the overlay that uses it lands.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod fill_map;
