//! Reading the pool's metadata under a metadata snapshot (convoy-thinmeta): the device list
//! (for orphan detection) and the byte ranges a backup reads (every mapped range, or the delta
//! between two snapshots).

use std::fs::File;
use std::ops::Range;
use std::path::Path;

use convoy_thinmeta::{DeltaMode, ThinMetadata};
use convoy_thinpool::ThinPool;
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};

use crate::error::{Error, Result};

/// Runs `f` on the metadata as of a fresh metadata snapshot, released afterwards.
pub(crate) fn with_metadata<T>(
    pool: &ThinPool,
    metadata_device: &Path,
    f: impl FnOnce(&mut ThinMetadata<File>) -> Result<T>,
) -> Result<T> {
    let held = pool
        .reserve_metadata_snap()
        .map_err(Error::dm("reserve a metadata snapshot"))?;
    let root = *held.held_root();
    let file = File::open(metadata_device).map_err(|e| Error::io("open", metadata_device, e))?;
    // The kernel writes the metadata device beneath the page cache: drop what an earlier read
    // may have cached so this one sees the blocks as they are now.
    posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .map_err(|e| Error::io("drop cached pages of", metadata_device, e.into()))?;
    let context = format!("{} (held root {root})", metadata_device.display());
    let out = ThinMetadata::open_metadata_snapshot(file, Some(root))
        .map_err(|source| Error::Metadata {
            context: context.clone(),
            source,
        })
        .and_then(|mut md| f(&mut md));
    let released = held
        .release()
        .map_err(Error::dm("release the metadata snapshot"));
    let value = out?;
    released?;
    Ok(value)
}

fn meta_err(context: &str) -> impl Fn(convoy_thinmeta::ThinMetaError) -> Error + '_ {
    move |source| Error::Metadata {
        context: context.to_owned(),
        source,
    }
}

/// Thin ids present in the metadata.
pub(crate) fn device_ids(md: &mut ThinMetadata<File>) -> Result<Vec<u64>> {
    Ok(md
        .devices()
        .map_err(meta_err("device details"))?
        .into_iter()
        .map(|d| d.dev_id)
        .collect())
}

/// Appends `r` to `ranges`, merging with the last one when adjacent.
fn push_merged(ranges: &mut Vec<Range<u64>>, r: Range<u64>) {
    if r.is_empty() {
        return;
    }
    match ranges.last_mut() {
        Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
        _ => ranges.push(r),
    }
}

fn block_range(begin: u64, length: u64, block_bytes: u64, size: u64) -> Range<u64> {
    let start = begin.saturating_mul(block_bytes).min(size);
    let end = (begin + length).saturating_mul(block_bytes).min(size);
    start..end
}

/// Every mapped byte range of device `id`, clamped to `size`.
pub(crate) fn mapped_ranges(
    md: &mut ThinMetadata<File>,
    id: u64,
    block_bytes: u64,
    size: u64,
) -> Result<Vec<Range<u64>>> {
    let context = format!("mappings of thin id {id}");
    let mut out = Vec::new();
    for run in md.mapped_runs(id).map_err(meta_err(&context))? {
        let run = run.map_err(meta_err(&context))?;
        push_merged(
            &mut out,
            block_range(run.virtual_begin, run.length, block_bytes, size),
        );
    }
    Ok(out)
}

/// Byte ranges where device `right` differs from `left` (changed, added or unmapped blocks),
/// clamped to `size`.
pub(crate) fn changed_ranges(
    md: &mut ThinMetadata<File>,
    left: u64,
    right: u64,
    block_bytes: u64,
    size: u64,
) -> Result<Vec<Range<u64>>> {
    let context = format!("delta of thin ids {left} and {right}");
    let mut out = Vec::new();
    for run in md
        .delta(left, right, DeltaMode::ChangesOnly)
        .map_err(meta_err(&context))?
    {
        let run = run.map_err(meta_err(&context))?;
        push_merged(
            &mut out,
            block_range(run.begin, run.length, block_bytes, size),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_clamp() {
        let mut v = Vec::new();
        push_merged(&mut v, block_range(0, 2, 10, 100));
        push_merged(&mut v, block_range(2, 1, 10, 100));
        push_merged(&mut v, block_range(5, 1, 10, 100));
        push_merged(&mut v, block_range(9, 3, 10, 95));
        push_merged(&mut v, block_range(12, 1, 10, 95));
        assert_eq!(v, vec![0..30, 50..60, 90..95]);
    }
}
