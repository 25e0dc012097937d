//! Reading 4 KiB metadata blocks from any `Read + Seek` source, with a small bounded cache and a
//! counter of blocks actually read.

use std::io::{Read, Seek, SeekFrom};
use std::rc::Rc;

use crate::checksum::BLOCK_SIZE;
use crate::error::{Result, ThinMetaError};

/// One metadata block.
pub type Block = [u8; BLOCK_SIZE];

/// Number of blocks the cache keeps. Small and fixed: memory stays bounded.
const CACHE_CAPACITY: usize = 32;

/// Reads metadata blocks by number.
pub struct BlockReader<R> {
    source: R,
    nr_blocks: u64,
    /// Most recently used last.
    cache: Vec<(u64, Rc<Block>)>,
    reads: u64,
}

impl<R: Read + Seek> BlockReader<R> {
    /// Wraps a source. Until [`BlockReader::set_nr_blocks`] is called any block number is
    /// accepted (a short read is still an error).
    pub fn new(source: R) -> Self {
        BlockReader {
            source,
            nr_blocks: u64::MAX,
            cache: Vec::with_capacity(CACHE_CAPACITY),
            reads: 0,
        }
    }

    /// Bounds valid block numbers to `0..nr_blocks`.
    pub fn set_nr_blocks(&mut self, nr_blocks: u64) {
        self.nr_blocks = nr_blocks;
    }

    /// Number of valid blocks.
    pub fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }

    /// Number of blocks read from the source so far (cache hits not counted).
    pub fn blocks_read(&self) -> u64 {
        self.reads
    }

    /// Reads block `block`; `context` names who pointed at it, for error messages.
    pub fn read(&mut self, block: u64, context: &str) -> Result<Rc<Block>> {
        if block >= self.nr_blocks {
            return Err(ThinMetaError::OutOfRange {
                block,
                nr_blocks: self.nr_blocks,
                context: if context.is_empty() {
                    String::new()
                } else {
                    format!(" (pointed at by {context})")
                },
            });
        }
        if let Some(pos) = self.cache.iter().position(|(b, _)| *b == block) {
            let entry = self.cache.remove(pos);
            let data = entry.1.clone();
            self.cache.push(entry);
            return Ok(data);
        }
        let offset = block
            .checked_mul(BLOCK_SIZE as u64)
            .ok_or(ThinMetaError::OutOfRange {
                block,
                nr_blocks: self.nr_blocks,
                context: String::new(),
            })?;
        let mut buf = Box::new([0u8; BLOCK_SIZE]);
        let io = |source| ThinMetaError::Io { block, source };
        self.source.seek(SeekFrom::Start(offset)).map_err(io)?;
        self.source.read_exact(&mut buf[..]).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                ThinMetaError::Corrupt {
                    block,
                    what: "metadata",
                    problem: "the metadata source ends before this block (truncated)".into(),
                }
            } else {
                io(e)
            }
        })?;
        self.reads += 1;
        let data: Rc<Block> = Rc::from(buf);
        if self.cache.len() == CACHE_CAPACITY {
            self.cache.remove(0);
        }
        self.cache.push((block, data.clone()));
        Ok(data)
    }
}
