//! Reading 4 KiB metadata blocks from any `Read + Seek` source, with a small bounded cache,
//! read-ahead on forward sequential access and a counter of blocks actually used.

use std::io::{Read, Seek, SeekFrom};
use std::rc::Rc;

use crate::checksum::BLOCK_SIZE;
use crate::error::{Result, ThinMetaError};

/// One metadata block.
pub type Block = [u8; BLOCK_SIZE];

/// Number of blocks the cache keeps. Small and fixed: memory stays bounded.
const CACHE_CAPACITY: usize = 32;

/// Largest read-ahead, in blocks (256 KiB): a window buffer never grows beyond it.
const MAX_READ_AHEAD: u64 = 64;

/// A miss less than this many blocks after the end of the window counts as sequential access.
const SEQUENTIAL_GAP: u64 = 8;

/// Read-ahead streams followed at once (a delta walks two trees that may live in different
/// parts of the file).
const STREAMS: usize = 4;

/// One read-ahead stream: `blocks` blocks starting at block `start`, and the size the next
/// sequential read will have.
#[derive(Default)]
struct Window {
    data: Vec<u8>,
    start: u64,
    blocks: u64,
    read_ahead: u64,
    /// Last use, for replacing the least recently used stream.
    used: u64,
}

impl Window {
    fn holds(&self, block: u64) -> bool {
        block >= self.start && block - self.start < self.blocks
    }

    /// Whether a miss on `block` continues this stream.
    fn continued_by(&self, block: u64) -> bool {
        let end = self.start + self.blocks;
        self.blocks > 0 && block >= end && block - end < SEQUENTIAL_GAP
    }
}

/// Reads metadata blocks by number.
///
/// A cache miss that lands just after one of a few read-ahead windows (a forward walk over
/// nodes laid out in order, as a full listing of a tree usually is; one stream per tree in a
/// delta) reads ahead in growing chunks, up to 256 KiB per window; any other miss reads just
/// its block into the least recently used window. Read-ahead blocks are only copied out (and
/// counted) when asked for, and are validated by the caller like any other block. Memory:
/// the 32-block cache plus at most 4 windows of 256 KiB.
pub struct BlockReader<R> {
    source: R,
    nr_blocks: u64,
    /// Most recently used last.
    cache: Vec<(u64, Rc<Block>)>,
    reads: u64,
    /// Source position after the last read, when known (saves a seek per sequential read).
    position: Option<u64>,
    windows: [Window; STREAMS],
    /// Use counter for the windows.
    clock: u64,
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
            position: None,
            windows: Default::default(),
            clock: 0,
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

    /// Number of blocks delivered that were not in the cache so far (cache hits not counted;
    /// read-ahead blocks counted only once asked for).
    pub fn blocks_read(&self) -> u64 {
        self.reads
    }

    /// Reads block `block`; `context` names who pointed at it, for error messages.
    pub fn read(&mut self, block: u64, context: &str) -> Result<Rc<Block>> {
        self.read_with(block, || context.to_string())
    }

    /// Like [`BlockReader::read`], with the context built only if it is needed (an error).
    pub fn read_with(&mut self, block: u64, context: impl FnOnce() -> String) -> Result<Rc<Block>> {
        if block >= self.nr_blocks {
            let context = context();
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
        if let Some(pos) = self.cache.iter().rposition(|(b, _)| *b == block) {
            let entry = self.cache.remove(pos);
            let data = entry.1.clone();
            self.cache.push(entry);
            return Ok(data);
        }
        self.clock += 1;
        let w = match self.windows.iter().position(|w| w.holds(block)) {
            Some(w) => w,
            None => self.fill_window(block)?,
        };
        self.windows[w].used = self.clock;
        // Reuse the evicted block's buffer when nobody else holds it.
        let mut data = match self.cache.len() {
            CACHE_CAPACITY => self.cache.remove(0).1,
            _ => Rc::new([0u8; BLOCK_SIZE]),
        };
        if Rc::get_mut(&mut data).is_none() {
            data = Rc::new([0u8; BLOCK_SIZE]);
        }
        let window = &self.windows[w];
        let off = ((block - window.start) as usize) * BLOCK_SIZE;
        if let Some(buf) = Rc::get_mut(&mut data) {
            buf.copy_from_slice(&window.data[off..off + BLOCK_SIZE]);
        }
        self.reads += 1;
        self.cache.push((block, data.clone()));
        Ok(data)
    }

    /// Reads `block` (and, when it continues a stream, the blocks after it) into a window;
    /// returns the window's index.
    fn fill_window(&mut self, block: u64) -> Result<usize> {
        let (w, read_ahead) = match self.windows.iter().position(|w| w.continued_by(block)) {
            Some(w) => (w, (self.windows[w].read_ahead * 2).min(MAX_READ_AHEAD)),
            None => {
                let lru = (0..STREAMS)
                    .min_by_key(|&i| self.windows[i].used)
                    .unwrap_or(0);
                (lru, 1)
            }
        };
        let count = read_ahead.min(self.nr_blocks - block);
        let window = &mut self.windows[w];
        window.blocks = 0;
        window.start = block;
        window.read_ahead = read_ahead;
        let offset = block
            .checked_mul(BLOCK_SIZE as u64)
            .ok_or(ThinMetaError::OutOfRange {
                block,
                nr_blocks: self.nr_blocks,
                context: String::new(),
            })?;
        let io = |source| ThinMetaError::Io { block, source };
        let want = count as usize * BLOCK_SIZE;
        window.data.resize(want, 0);
        if self.position != Some(offset) {
            self.position = None;
            self.source.seek(SeekFrom::Start(offset)).map_err(io)?;
            self.position = Some(offset);
        }
        let mut got = 0;
        while got < want {
            match self.source.read(&mut window.data[got..want]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.position = None;
                    return Err(io(e));
                }
            }
        }
        self.position = Some(offset + got as u64);
        if got < BLOCK_SIZE {
            return Err(ThinMetaError::Corrupt {
                block,
                what: "metadata",
                problem: "the metadata source ends before this block (truncated)".into(),
            });
        }
        window.blocks = (got / BLOCK_SIZE) as u64;
        Ok(w)
    }
}
