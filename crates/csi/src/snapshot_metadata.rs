//! The SnapshotMetadata service: `GetMetadataAllocated` (the byte ranges of a snapshot that hold
//! data) and `GetMetadataDelta` (those that differ between two snapshots of one volume), read
//! from the thin metadata under a metadata snapshot, as convoy's incremental backups read them.
//!
//! Format: `VARIABLE_LENGTH` extents, coalesced, in ascending order, at the pool's block
//! granularity. `starting_offset` (a resumed call) is rounded down to a pool block; an extent
//! that spans it is returned from there. An offset at or past the volume's end is OUT_OF_RANGE.
//! At most `max_results` extents per message (0: [`DEFAULT_MAX_RESULTS`]); a snapshot with no
//! data still gets one message, carrying the volume's size.

use std::ops::Range;
use std::pin::Pin;

use convoy_core::VolumeManager;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::pb::snapshot_metadata_server::SnapshotMetadata;
use crate::pb::*;
use crate::{util, Csi};

/// Extents per message when the client does not say.
pub const DEFAULT_MAX_RESULTS: usize = 1024;

type Messages<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The extents at or after `starting_offset` (rounded down to a block), `max_results` a message.
fn pages(
    ranges: &convoy_core::BlockRanges,
    starting_offset: i64,
    max_results: i32,
) -> Result<Vec<Vec<BlockMetadata>>, Status> {
    if starting_offset < 0 {
        return Err(Status::invalid_argument(format!(
            "starting_offset {starting_offset} is negative"
        )));
    }
    if max_results < 0 {
        return Err(Status::invalid_argument(format!(
            "max_results {max_results} is negative"
        )));
    }
    let offset = starting_offset as u64;
    if offset >= ranges.volume_size {
        return Err(Status::out_of_range(format!(
            "starting_offset {offset} is not inside the volume ({} bytes)",
            ranges.volume_size
        )));
    }
    let from = offset - offset % ranges.block_size.max(1);
    let extents: Vec<BlockMetadata> = ranges
        .ranges
        .iter()
        .filter(|r| r.end > from)
        .map(|r: &Range<u64>| {
            let start = r.start.max(from);
            BlockMetadata {
                byte_offset: start as i64,
                size_bytes: (r.end - start) as i64,
            }
        })
        .collect();
    let per = match max_results {
        0 => DEFAULT_MAX_RESULTS,
        n => n as usize,
    };
    let mut pages: Vec<Vec<BlockMetadata>> = extents.chunks(per).map(<[_]>::to_vec).collect();
    if pages.is_empty() {
        pages.push(Vec::new());
    }
    Ok(pages)
}

/// The block ranges `target` has (or, with `base`, that differ from `base`), as a stream of
/// messages made by `message` from each page's extents and the volume's size: the two RPCs
/// differ only in their message types.
async fn ranges_stream<T: Send + 'static>(
    manager: &VolumeManager,
    rpc: &'static str,
    (target, base): (String, Option<String>),
    (starting_offset, max_results): (i64, i32),
    message: impl Fn(Vec<BlockMetadata>, i64) -> T,
) -> Result<Messages<T>, Status> {
    let manager = manager.clone();
    let ranges = util::detached(rpc, async move {
        manager
            .snapshot_block_ranges(&target, base.as_deref())
            .await
            .map_err(util::status)
    })
    .await?;
    let capacity = ranges.volume_size as i64;
    let messages: Vec<T> = pages(&ranges, starting_offset, max_results)?
        .into_iter()
        .map(|extents| message(extents, capacity))
        .collect();
    Ok(Box::pin(tokio_stream::iter(messages.into_iter().map(Ok))))
}

#[tonic::async_trait]
impl SnapshotMetadata for Csi {
    type GetMetadataAllocatedStream = Messages<GetMetadataAllocatedResponse>;
    type GetMetadataDeltaStream = Messages<GetMetadataDeltaResponse>;

    async fn get_metadata_allocated(
        &self,
        request: Request<GetMetadataAllocatedRequest>,
    ) -> Result<Response<Self::GetMetadataAllocatedStream>, Status> {
        let r = request.into_inner();
        let id = util::required(&r.snapshot_id, "snapshot_id")?.to_string();
        let messages = ranges_stream(
            &self.manager,
            "GetMetadataAllocated",
            (id, None),
            (r.starting_offset, r.max_results),
            |block_metadata, volume_capacity_bytes| GetMetadataAllocatedResponse {
                block_metadata_type: BlockMetadataType::VariableLength as i32,
                volume_capacity_bytes,
                block_metadata,
            },
        )
        .await?;
        Ok(Response::new(messages))
    }

    async fn get_metadata_delta(
        &self,
        request: Request<GetMetadataDeltaRequest>,
    ) -> Result<Response<Self::GetMetadataDeltaStream>, Status> {
        let r = request.into_inner();
        let base = util::required(&r.base_snapshot_id, "base_snapshot_id")?.to_string();
        let target = util::required(&r.target_snapshot_id, "target_snapshot_id")?.to_string();
        let messages = ranges_stream(
            &self.manager,
            "GetMetadataDelta",
            (target, Some(base)),
            (r.starting_offset, r.max_results),
            |block_metadata, volume_capacity_bytes| GetMetadataDeltaResponse {
                block_metadata_type: BlockMetadataType::VariableLength as i32,
                volume_capacity_bytes,
                block_metadata,
            },
        )
        .await?;
        Ok(Response::new(messages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: Vec<Range<u64>>) -> convoy_core::BlockRanges {
        convoy_core::BlockRanges {
            volume_size: 1 << 20,
            block_size: 64 << 10,
            ranges: list,
        }
    }

    fn flat(pages: &[Vec<BlockMetadata>]) -> Vec<(i64, i64)> {
        pages
            .iter()
            .flatten()
            .map(|b| (b.byte_offset, b.size_bytes))
            .collect()
    }

    #[test]
    fn extents_page_and_resume_from_a_rounded_offset() {
        const K: u64 = 1024;
        let r = ranges(vec![0..128 * K, 256 * K..320 * K, 512 * K..1024 * K]);
        let all = pages(&r, 0, 0).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(
            flat(&all),
            vec![(0, 131_072), (262_144, 65_536), (524_288, 524_288)]
        );
        let two = pages(&r, 0, 2).unwrap();
        assert_eq!(two.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1]);
        // 100 KiB rounds down to the 64 KiB block: the first extent is cut there.
        assert_eq!(
            flat(&pages(&r, 100 * 1024, 0).unwrap()),
            vec![(65_536, 65_536), (262_144, 65_536), (524_288, 524_288)]
        );
        assert_eq!(
            flat(&pages(&r, 600 * 1024, 0).unwrap()),
            vec![(589_824, 458_752)]
        );
    }

    #[test]
    fn bad_offsets_and_limits_get_the_spec_codes() {
        let r = ranges(vec![]);
        assert_eq!(
            pages(&r, 1 << 20, 0).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        assert_eq!(
            pages(&r, -1, 0).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            pages(&r, 0, -5).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        // No data: one message, empty, so the client learns the volume's size.
        let empty = pages(&r, 0, 0).unwrap();
        assert_eq!(empty.len(), 1);
        assert!(empty[0].is_empty());
    }
}
