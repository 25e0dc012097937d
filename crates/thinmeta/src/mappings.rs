//! Mapped runs of one thin device.

use std::io::{Read, Seek};

use crate::block::BlockReader;
use crate::cursor::TreeCursor;
use crate::error::Result;

/// Bits of a mapping value that hold the time; the data block is above them.
pub const TIME_BITS: u32 = 24;

/// Splits a mapping value into `(data_block, time)`.
pub fn unpack_mapping(value: u64) -> (u64, u32) {
    (value >> TIME_BITS, (value & ((1 << TIME_BITS) - 1)) as u32)
}

/// Packs `(data_block, time)` into a mapping value.
pub fn pack_mapping(data_block: u64, time: u32) -> u64 {
    (data_block << TIME_BITS) | u64::from(time & ((1 << TIME_BITS) - 1))
}

/// A run of contiguous mappings with the same time: virtual blocks
/// `virtual_begin..virtual_begin+length` map to `data_begin..data_begin+length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedRun {
    /// First virtual block.
    pub virtual_begin: u64,
    /// First data block.
    pub data_begin: u64,
    /// Number of blocks.
    pub length: u64,
    /// Time the blocks were mapped at.
    pub time: u32,
}

/// Iterator over the mapped runs of one device, in virtual-block order.
/// After an error it yields nothing more.
pub struct MappedRuns<'a, R> {
    reader: &'a mut BlockReader<R>,
    cursor: TreeCursor,
    pending: Option<MappedRun>,
    done: bool,
}

impl<'a, R: Read + Seek> MappedRuns<'a, R> {
    pub(crate) fn new(reader: &'a mut BlockReader<R>, cursor: TreeCursor) -> Self {
        MappedRuns {
            reader,
            cursor,
            pending: None,
            done: false,
        }
    }

    /// Blocks read from the source so far (by this and earlier walks on the same reader).
    pub fn blocks_read(&self) -> u64 {
        self.reader.blocks_read()
    }

    fn step(&mut self) -> Result<Option<MappedRun>> {
        loop {
            let Some((key, value)) = self.cursor.next_entry(self.reader)? else {
                return Ok(self.pending.take());
            };
            let (data, time) = unpack_mapping(value);
            if let Some(run) = &mut self.pending {
                if run.time == time
                    && run.virtual_begin.checked_add(run.length) == Some(key)
                    && run.data_begin + run.length == data
                {
                    run.length += 1;
                    continue;
                }
            }
            let next = MappedRun {
                virtual_begin: key,
                data_begin: data,
                length: 1,
                time,
            };
            if let Some(done) = self.pending.replace(next) {
                return Ok(Some(done));
            }
        }
    }
}

impl<R: Read + Seek> Iterator for MappedRuns<'_, R> {
    type Item = Result<MappedRun>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // Fused: nothing more after the end or after the first error.
        let item = self.step().transpose();
        self.done = !matches!(item, Some(Ok(_)));
        item
    }
}
