//! Instant restore (issue 19, part 2; `docs/instant.md`): a volume usable while its backup is
//! still being copied into it. What exists so far: the persistent fill map and the overlay
//! device that serves reads and writes during the fill and runs the fill itself, tested on
//! the host over files. Not built yet: attaching the overlay over NBD in front of a hidden
//! thin device, `--instant` in the CLI and API, and resuming at start-up; the hand-over of
//! the device from the overlay to the thin device is in `convoy-thinpool` (`handover.rs`).

pub(crate) mod fill_map;
pub(crate) mod overlay;
mod run;

pub(crate) use run::Fills;
