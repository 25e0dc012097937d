//! Which bytes of a snapshot hold data, and which differ between two snapshots of one volume:
//! what a block backup reads, read from the thin metadata under a metadata snapshot (as backups
//! do). The CSI driver serves it as the SnapshotMetadata service.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::guards::{detached, BusySnapshot};
use crate::manager::{blocking, VolumeManager};
use crate::records::ObjectState;

/// Byte ranges of a snapshot: allocated ones, or those changed since a base snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRanges {
    /// The snapshot's volume size, bytes.
    pub volume_size: u64,
    /// The granularity of the ranges (the pool's block size), bytes.
    pub block_size: u64,
    /// Ascending, non-overlapping and coalesced: no two ranges touch.
    pub ranges: Vec<Range<u64>>,
}

/// Merges touching or overlapping ranges of a sorted list.
pub(crate) fn coalesce(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges.into_iter().filter(|r| r.start < r.end) {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

impl VolumeManager {
    /// The byte ranges of snapshot `target` that hold data (`base` is `None`), or that differ
    /// from snapshot `base` of the same volume. Both snapshots are marked busy (not deletable)
    /// while the metadata is read; the work runs detached, so a caller that gives up does not
    /// stop it half-way.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown snapshot; [`Error::InvalidArgument`] when `base` is a
    /// snapshot of another volume; [`Error::Unsupported`] for a driver without block metadata
    /// (vfs).
    pub async fn snapshot_block_ranges(
        &self,
        target: &str,
        base: Option<&str>,
    ) -> Result<BlockRanges> {
        let me = self.clone();
        let (target, base) = (target.to_owned(), base.map(str::to_owned));
        detached("snapshot block ranges", async move {
            me.block_ranges_now(&target, base.as_deref()).await
        })
        .await
    }

    async fn block_ranges_now(&self, target: &str, base: Option<&str>) -> Result<BlockRanges> {
        let (guard, vol) = self.lock_snapshot_owner(target).await?;
        let ready = |name: &str| {
            vol.snapshots
                .get(name)
                .filter(|s| s.state == ObjectState::Ready)
                .cloned()
        };
        let snap = ready(target).ok_or_else(|| Error::not_found("snapshot", target))?;
        let base = match base {
            None => None,
            Some(b) => Some(match ready(b) {
                Some(s) => s,
                None => {
                    return Err(match self.volume_of_snapshot(b) {
                        Ok(other) => Error::invalid(
                            format!("base snapshot {b}"),
                            format!(
                                "it is a snapshot of volume {other}, and {target} of volume {}: \
                                 a delta is between two snapshots of one volume",
                                vol.name
                            ),
                        ),
                        Err(e) => e,
                    })
                }
            }),
        };
        let driver = self.driver(&vol.driver)?;
        let _busy = (
            BusySnapshot::claim(&self.inner, &snap.name),
            base.as_ref()
                .map(|b| BusySnapshot::claim(&self.inner, &b.name)),
        );
        drop(guard);
        let (d, s, b) = (driver.clone(), snap.clone(), base.clone());
        let (block_size, ranges) = blocking(move || d.block_ranges(&s, b.as_ref())).await?;
        Ok(BlockRanges {
            volume_size: snap.size,
            block_size,
            ranges: coalesce(ranges),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::coalesce;

    #[test]
    fn touching_and_overlapping_ranges_merge() {
        assert_eq!(
            coalesce(vec![8..12, 0..4, 4..6, 10..16, 20..20, 30..31]),
            vec![0..6, 8..16, 30..31]
        );
        assert!(coalesce(Vec::new()).is_empty());
    }
}
